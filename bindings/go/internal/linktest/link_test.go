// Go links quiver's C ABI: Go functions exported to C memoized through
// libffi into a real LMDB cache, a second process that only gets hits, a
// value a C program stored found by a digest computed here, and the shared
// vectors.
package linktest

import (
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"quiver"
)

// tempDir is fresh for every test (under QV_TEST_TMP when ctest sets it), so
// entries left by an earlier run can never answer this run's calls.
func tempDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("QV_TEST_TMP")
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, "go-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openCache(t *testing.T, dir string) *quiver.Cache {
	t.Helper()
	c, err := quiver.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newC(t *testing.T, name, version string, fn func() unsafe.Pointer, sig string) *quiver.Func {
	t.Helper()
	f, err := quiver.NewC(name, version, fn(), sig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Free)
	return f
}

func pointer(t *testing.T, f *quiver.Func) unsafe.Pointer {
	t.Helper()
	p, err := f.Pointer()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func text(t *testing.T, s string) *quiver.Value {
	t.Helper()
	v, err := quiver.Text(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var powCalls = []struct {
	x float64
	n int64
}{{1.5, 3}, {2, 10}, {1.5, 3}, {0.5, 2}, {2, 10}, {1.5, 3}}

func TestPointerRunsOncePerDistinctCall(t *testing.T) {
	c := openCache(t, tempDir(t))
	f := newC(t, "link.go.pow", "1", PowPointer, "f64(f64,i64)")
	memo := pointer(t, f) // swapped in for PowPointer()
	must(t, quiver.WithCache(c, func() error {
		for _, call := range powCalls {
			if got, want := CallF64F64I64(memo, call.x, call.n), math.Pow(call.x, float64(call.n)); got != want {
				return fmt.Errorf("pow(%v, %d) = %v, want %v", call.x, call.n, got, want)
			}
		}
		// The tree path digests the call the same way: a hit, no run.
		args := quiver.List(quiver.Float(1.5), quiver.Int(3))
		defer args.Free()
		r, err := f.Call(args)
		if err != nil {
			return err
		}
		defer r.Free()
		if got, _ := r.Float(); got != 3.375 {
			return fmt.Errorf("Call(1.5, 3) = %v", got)
		}
		d, err := f.Digest(args)
		if err != nil {
			return err
		}
		want, err := quiver.CallDigest("link.go.pow", "1", args, nil)
		if err != nil || d != want {
			return fmt.Errorf("fn digest %v, call digest %v (%v)", d, want, err)
		}
		if ok, err := c.Contains(d); !ok || err != nil {
			return fmt.Errorf("the cache lacks %v (%v)", d, err)
		}
		rec, err := c.Load(d)
		if err != nil {
			return err
		}
		defer rec.Free()
		if name, _ := rec.Find("name").Text(); name != "link.go.pow" {
			return fmt.Errorf("record name %q", name)
		}
		if n, _ := rec.Find("args").Index(1).Int(); n != 3 {
			return fmt.Errorf("record args[1] = %d", n)
		}
		return nil
	}))
	if runs := Runs.Pow.Load(); runs != 3 {
		t.Errorf("the body ran %d times for 3 distinct calls", runs)
	}
	if f.Hits() != 4 || f.Misses() != 3 {
		t.Errorf("hits %d misses %d, want 4 and 3", f.Hits(), f.Misses())
	}
	if n, err := c.Entries(); n != 3 || err != nil {
		t.Errorf("%d entries (%v), want 3", n, err)
	}
}

func TestStrResultsAreCopied(t *testing.T) {
	c := openCache(t, tempDir(t))
	f := newC(t, "link.go.greet", "", GreetPointer, "str(str)")
	memo := pointer(t, f)
	must(t, quiver.WithCache(c, func() error {
		for _, want := range []string{"ada", "bob", "ada", "bob"} {
			if got := CallStrStr(memo, want); got != "hello, "+want {
				return fmt.Errorf("greet(%q) = %q", want, got)
			}
		}
		return nil
	}))
	if runs := Runs.Greet.Load(); runs != 2 {
		t.Errorf("the body ran %d times for 2 distinct calls", runs)
	}
}

func TestGoBodyThroughCall(t *testing.T) {
	c := openCache(t, tempDir(t))
	runs := 0
	f, err := quiver.New("link.go.repeat", "2", func(args, kwargs *quiver.Value) (*quiver.Value, error) {
		runs++
		if kwargs.Len() != 0 {
			return nil, fmt.Errorf("unexpected kwargs")
		}
		word, err := args.Index(0).Text()
		if err != nil {
			return nil, err
		}
		n, err := args.Index(1).Int()
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, fmt.Errorf("cannot repeat %d times", n)
		}
		if word == "boom" {
			panic("the body was asked to panic")
		}
		return quiver.Text(strings.Repeat(word, int(n)))
	})
	must(t, err)
	defer f.Free()

	call := func(word string, n int64) (string, error) {
		args := quiver.List(text(t, word), quiver.Int(n))
		defer args.Free()
		r, err := f.Call(args)
		if err != nil {
			return "", err
		}
		defer r.Free()
		return r.Text()
	}
	must(t, quiver.WithCache(c, func() error {
		for _, tc := range []struct {
			word string
			n    int64
			want string
		}{{"ab", 3, "ababab"}, {"ab", 3, "ababab"}, {"z", 2, "zz"}} {
			if got, err := call(tc.word, tc.n); got != tc.want || err != nil {
				return fmt.Errorf("repeat(%q, %d) = %q, %v", tc.word, tc.n, got, err)
			}
		}
		if runs != 2 {
			return fmt.Errorf("the body ran %d times for 2 distinct calls", runs)
		}
		// A failing body reaches the caller with its message and stores
		// nothing: it runs again.
		for i := 0; i < 2; i++ {
			_, err := call("ab", -1)
			if e, ok := err.(*quiver.Error); !ok || e.Name != "QV_EFAILED" || e.Message != "cannot repeat -1 times" {
				return fmt.Errorf("repeat(ab, -1): %v", err)
			}
		}
		if _, err := call("boom", 1); err == nil || !strings.Contains(err.Error(), "asked to panic") {
			return fmt.Errorf("a panicking body: %v", err)
		}
		if runs != 5 {
			return fmt.Errorf("failed calls ran %d times, want 3", runs-2)
		}
		// quiver's own type error comes back from inside the body.
		args := quiver.List(quiver.Int(1), quiver.Int(2))
		defer args.Free()
		if _, err := f.Call(args); err == nil || err.(*quiver.Error).Name != "QV_ETYPE" {
			return fmt.Errorf("repeat(1, 2): %v", err)
		}
		return nil
	}))
}

func TestPointerFromManyGoroutines(t *testing.T) {
	c := openCache(t, tempDir(t))
	f := newC(t, "link.go.collatz", "1", CollatzPointer, "u32(u64)")
	memo := pointer(t, f)
	const keys, workers = 50, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- quiver.WithCache(c, func() error { // contexts are per thread
				for n := uint64(1); n <= keys; n++ {
					if got := CallU32U64(memo, n); got != Steps(n) {
						return fmt.Errorf("collatz(%d) = %d, want %d", n, got, Steps(n))
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	// Goroutines racing on one key may each run it; every key ran at least once.
	runs := Runs.Collatz.Load()
	if runs < keys || runs > keys*workers {
		t.Errorf("%d runs for %d keys", runs, keys)
	}
	if f.Hits()+f.Misses() != keys*workers {
		t.Errorf("hits %d + misses %d != %d calls", f.Hits(), f.Misses(), keys*workers)
	}
	must(t, quiver.WithCache(c, func() error {
		for n := uint64(1); n <= keys; n++ {
			CallU32U64(memo, n)
		}
		return nil
	}))
	if Runs.Collatz.Load() != runs {
		t.Errorf("a pass over stored keys ran the body %d times", Runs.Collatz.Load()-runs)
	}
}

// TestSecondProcess fills a cache, then runs itself again in a new process
// (QV_LINK_CHILD set), which must answer every call from the cache.
func TestSecondProcess(t *testing.T) {
	if os.Getenv("QV_LINK_CHILD") != "" {
		// The child: no cache made active, so QUIVER_CACHE names it.
		f := newC(t, "link.go.scale", "1", ScalePointer, "f64(f64,i64)")
		memo := pointer(t, f)
		for _, call := range powCalls {
			if got := CallF64F64I64(memo, call.x, call.n); got != call.x*float64(call.n) {
				t.Errorf("scale(%v, %d) = %v", call.x, call.n, got)
			}
		}
		fmt.Printf("child: hits=%d misses=%d runs=%d\n", f.Hits(), f.Misses(), Runs.Scale.Load())
		return
	}

	dir := tempDir(t)
	c := openCache(t, dir)
	f := newC(t, "link.go.scale", "1", ScalePointer, "f64(f64,i64)")
	memo := pointer(t, f)
	must(t, quiver.WithCache(c, func() error {
		for _, call := range powCalls {
			CallF64F64I64(memo, call.x, call.n)
		}
		return nil
	}))
	if Runs.Scale.Load() != 3 {
		t.Fatalf("the parent ran the body %d times, want 3", Runs.Scale.Load())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "QV_LINK_CHILD=1", "QUIVER_CACHE="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "child: hits=6 misses=0 runs=0") {
		t.Fatalf("the child did not get only hits:\n%s", out)
	}
}

func TestReadsWhatCStored(t *testing.T) {
	// The cache the C fixture stored into (ctest sets QV_SHARED_CACHE), else
	// one filled here by the build tree's store_shared.
	dir := os.Getenv("QV_SHARED_CACHE")
	if dir == "" {
		build := os.Getenv("QUIVER_BUILD")
		if build == "" {
			t.Skip("neither QV_SHARED_CACHE nor QUIVER_BUILD (. build/env.sh) names the C fixture")
		}
		dir = tempDir(t)
		if out, err := exec.Command(filepath.Join(build, "tests/link/store_shared"), dir).CombinedOutput(); err != nil {
			t.Fatalf("store_shared: %v\n%s", err, out)
		}
	}
	c, err := quiver.OpenReadOnly(dir)
	must(t, err)
	defer c.Close()
	args := quiver.List(quiver.Int(7), text(t, "alpha"))
	defer args.Free()
	key, err := quiver.CallDigest("link.shared", "1", args, nil)
	must(t, err)
	if ok, err := c.Contains(key); !ok || err != nil {
		t.Fatalf("no %v in %s (%v)", key, c.Path(), err)
	}
	r, err := c.Get(key)
	must(t, err)
	defer r.Free()
	if got, err := r.Float(); got != 42.5 || err != nil {
		t.Errorf("stored result %v (%v), want 42.5", got, err)
	}
	rec, err := c.Load(key)
	must(t, err)
	defer rec.Free()
	if lang, _ := rec.Find("lang").Text(); lang != "c" {
		t.Errorf("stored by %q, want c", lang)
	}

	// The same call through a memoized Go function is a hit: its body never runs.
	f := newC(t, "link.shared", "1", SharedPointer, "f64(i64,str)")
	memo := pointer(t, f)
	must(t, quiver.WithCache(c, func() error {
		if got := CallF64I64Str(memo, 7, "alpha"); got != 42.5 {
			return fmt.Errorf("link.shared(7, alpha) = %v through the pointer", got)
		}
		return nil
	}))
	if Runs.Shared.Load() != 0 || f.Hits() != 1 {
		t.Errorf("runs %d hits %d, want 0 and 1", Runs.Shared.Load(), f.Hits())
	}
}

func TestDigestsMatchSharedVectors(t *testing.T) {
	vectors := os.Getenv("QV_VECTORS")
	if vectors == "" {
		_, file, _, _ := runtime.Caller(0)
		vectors = filepath.Join(filepath.Dir(file), "../../../../../shared/vectors")
	}
	tsv, err := os.ReadFile(filepath.Join(vectors, "calls.tsv"))
	must(t, err)
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(tsv)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			t.Fatalf("bad line %q", line)
		}
		version := f[1]
		if version == `\N` {
			version = ""
		}
		decode := func(h string) *quiver.Value {
			b, err := hex.DecodeString(h)
			must(t, err)
			v, err := quiver.Decode(b)
			must(t, err)
			if again, err := v.Encode(); err != nil || hex.EncodeToString(again) != h {
				t.Errorf("%q re-encodes as %x (%v)", h, again, err)
			}
			return v
		}
		args, kwargs := decode(f[2]), decode(f[3])
		d, err := quiver.CallDigest(f[0], version, args, kwargs)
		must(t, err)
		if d.String() != f[4] {
			t.Errorf("%q: digest %v, want %s", line, d, f[4])
		}
		if parsed, err := quiver.ParseDigest(f[4]); parsed != d || err != nil {
			t.Errorf("ParseDigest(%s) = %v, %v", f[4], parsed, err)
		}
		args.Free()
		kwargs.Free()
		seen++
	}
	if seen < 7 {
		t.Errorf("only %d vectors", seen)
	}

	// The same digests from Go values rather than decoded bytes.
	kwK := quiver.NewMap()
	must(t, kwK.Set(text(t, "k"), quiver.List(quiver.Int(1), quiver.Int(2))))
	kwAB := quiver.NewMap()
	must(t, kwAB.Set(text(t, "b"), quiver.Int(2)))
	must(t, kwAB.Set(text(t, "a"), quiver.Int(1)))
	for _, tc := range []struct {
		name, version string
		args, kwargs  *quiver.Value
		want          string
	}{
		{"shared.add", "", quiver.List(quiver.Int(1), quiver.Int(2)), nil, "d2aec93101298c8daf75589ce9ce1f83"},
		{"shared.add", "1", quiver.List(quiver.Int(1), quiver.Int(2)), nil, "dff12a2d48c1bcdf495cb3ea7e70ba6f"},
		{"demo.feature", "1", quiver.List(quiver.Int(7), text(t, "alpha")), nil, "55c8615235dec7e94da4339e6c8a4cef"},
		{"m.f", "", quiver.List(text(t, "x"), quiver.Float(1.5), quiver.Null(), quiver.Bool(true)), kwK,
			"143f1cd0317219175c4123f8b9eaa647"},
		{"模块.函数", "v2", quiver.List(quiver.Bytes([]byte{0x00, 0xff})), kwAB, "8c6beb2eba085d8e05ad95246e6bc849"},
	} {
		d, err := quiver.CallDigest(tc.name, tc.version, tc.args, tc.kwargs)
		if err != nil || d.String() != tc.want {
			t.Errorf("%s%s: %v (%v), want %s", tc.name, tc.version, d, err, tc.want)
		}
		tc.args.Free()
		tc.kwargs.Free()
	}

	// A Go function memoized through its pointer stores under the digest
	// every other language computes for shared.add(1, 2).
	c := openCache(t, tempDir(t))
	f := newC(t, "shared.add", "", AddPointer, "i64(i64,i64)")
	memo := pointer(t, f)
	must(t, quiver.WithCache(c, func() error {
		if got := CallI64I64I64(memo, 1, 2); got != 3 {
			return fmt.Errorf("shared.add(1, 2) = %d", got)
		}
		return nil
	}))
	want, err := quiver.ParseDigest("d2aec93101298c8daf75589ce9ce1f83")
	must(t, err)
	if ok, err := c.Contains(want); !ok || err != nil {
		t.Errorf("the pointer did not store shared.add(1, 2) under %v (%v)", want, err)
	}
	if Runs.Add.Load() != 1 {
		t.Errorf("shared.add ran %d times", Runs.Add.Load())
	}
	rec, err := c.Load(want)
	must(t, err)
	defer rec.Free()
	if !rec.Find("version").IsNull() {
		t.Error("no version was stored as something other than null")
	}

	absent, err := quiver.ParseDigest("dff12a2d48c1bcdf495cb3ea7e70ba6f") // version "1"
	must(t, err)
	if ok, err := c.Contains(absent); ok || err != nil {
		t.Errorf("Contains(absent) = %v, %v", ok, err)
	}
	if v, err := c.Get(absent); v != nil || err != nil {
		t.Errorf("Get(absent) = %v, %v", v, err)
	}
	if _, err := c.Load(absent); !quiver.IsNotFound(err) {
		t.Errorf("Load(absent): %v", err)
	}
}

func TestBadInputGivesClearErrors(t *testing.T) {
	_, err := quiver.NewC("link.go.bad", "", PowPointer(), "f64(f64,,i64)")
	if e, ok := err.(*quiver.Error); !ok || e.Name != "QV_EINVAL" || !strings.Contains(e.Message, "position") {
		t.Errorf("a bad signature: %v", err)
	}

	file := filepath.Join(tempDir(t), "not-a-directory")
	must(t, os.WriteFile(file, []byte("plain file"), 0o644))
	if _, err := quiver.Open(file); err == nil || !strings.Contains(err.Error(), "not-a-directory") {
		t.Errorf("opening a plain file: %v", err)
	}

	f := newC(t, "link.go.pow", "1", PowPointer, "f64(f64,i64)")
	args := quiver.List(text(t, "1.5"), quiver.Int(3))
	defer args.Free()
	if _, err := f.Call(args); err == nil || !strings.Contains(err.Error(), "argument 1 must be") {
		t.Errorf("a text for an f64: %v", err)
	}
	one := quiver.List(quiver.Float(1.5))
	defer one.Free()
	if _, err := f.Call(one); err == nil || !strings.Contains(err.Error(), "takes 2 arguments") {
		t.Errorf("one argument for two: %v", err)
	}

	host, err := quiver.New("link.go.host", "", func(args, kwargs *quiver.Value) (*quiver.Value, error) {
		return quiver.Null(), nil
	})
	must(t, err)
	defer host.Free()
	if _, err := host.Pointer(); err == nil {
		t.Error("a Go body has no C function pointer")
	}

	i := quiver.Int(1)
	defer i.Free()
	if _, err := i.Text(); err == nil || err.(*quiver.Error).Name != "QV_ETYPE" {
		t.Errorf("an int as text: %v", err)
	}
	if _, err := quiver.Text("\xff"); err == nil {
		t.Error("invalid UTF-8 became text")
	}
	if _, err := quiver.Decode([]byte{0x18, 0x01}); err == nil {
		t.Error("a non-shortest integer was decoded")
	}
	if _, err := quiver.ParseDigest("not hex"); err == nil {
		t.Error("not hex parsed")
	}
	if quiver.Version() == "" {
		t.Error("no version")
	}
}
