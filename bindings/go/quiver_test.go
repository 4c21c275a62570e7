package quiver_test

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"quiver"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// vectors is QV_VECTORS (ctest sets it), else ../shared/vectors beside the
// source tree.
func vectors() string {
	if v := os.Getenv("QV_VECTORS"); v != "" {
		return v
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "../../../shared/vectors")
}

func tsv(t *testing.T, path string, fields int) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != fields {
			t.Fatalf("%s: bad line %q", path, line)
		}
		rows = append(rows, f)
	}
	return rows
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	must(t, err)
	return b
}

// Every value decodes into Go values, and those encode back byte for byte and
// digest as recorded: a Go program carries everything quiver stores.
func valuesRoundtrip(t *testing.T, dir string, atLeast int) {
	rows := tsv(t, filepath.Join(dir, "values.tsv"), 3)
	for _, f := range rows {
		v, err := quiver.Decode(unhex(t, f[0]))
		if err != nil {
			t.Fatalf("vector %q refused: %v", f[2], err)
		}
		g, err := v.Go()
		v.Free()
		must(t, err)
		back, err := quiver.ToValue(g)
		if err != nil {
			t.Fatalf("vector %q: %#v: %v", f[2], g, err)
		}
		enc, err := back.Encode()
		must(t, err)
		if hex.EncodeToString(enc) != f[0] {
			t.Errorf("vector %q: %#v encodes as %x", f[2], g, enc)
		}
		if d, err := back.Digest(); err != nil || d.String() != f[1] {
			t.Errorf("vector %q: digest %v (%v)", f[2], d, err)
		}
		back.Free()
	}
	if len(rows) < atLeast {
		t.Errorf("only %d vectors in %s", len(rows), dir)
	}
}

func TestSharedValuesRoundtripThroughGo(t *testing.T) { valuesRoundtrip(t, vectors(), 60) }

func TestProjectValuesRoundtripThroughGo(t *testing.T) {
	// The tags quiver gives meaning to for Python types (docs/FORMAT.md 3.3).
	_, file, _, _ := runtime.Caller(0)
	valuesRoundtrip(t, filepath.Join(filepath.Dir(file), "../../tests/vectors"), 30)
}

func TestInvalidInputsAreRefused(t *testing.T) {
	for _, f := range tsv(t, filepath.Join(vectors(), "invalid.tsv"), 2) {
		_, err := quiver.Decode(unhex(t, f[0]))
		var e *quiver.Error
		if !errors.As(err, &e) || e.Message == "" {
			t.Errorf("%s: %v", f[1], err)
		}
	}
}

// A Memo keys every call of the vectors as every other language does.
func TestMemoKeysCallsAsOtherLanguages(t *testing.T) {
	c, err := quiver.Open(t.TempDir())
	must(t, err)
	defer c.Close()
	ctx := quiver.NewContext(context.Background(), c)
	positional := 0
	for _, f := range tsv(t, filepath.Join(vectors(), "calls.tsv"), 5) {
		version := f[1]
		if version == `\N` {
			version = ""
		}
		if f[3] != "a0" {
			continue // memo calls are positional, as Python's are once bound
		}
		args, err := quiver.Decode(unhex(t, f[2]))
		must(t, err)
		g, err := args.Go()
		args.Free()
		must(t, err)
		items := g.([]any)
		echo, err := quiver.NewMemo(f[0], version, func(a ...any) []any { return a })
		must(t, err)
		if d, err := echo.Digest(items...); err != nil || d.String() != f[4] {
			t.Errorf("%s%v: key %v (%v), want %s", f[0], items, d, err, f[4])
		}
		for i := 0; i < 2; i++ {
			if _, err := echo.Call(ctx, items...); err != nil {
				t.Fatalf("%s%v: %v", f[0], items, err)
			}
		}
		key, _ := quiver.ParseDigest(f[4])
		if ok, err := c.Contains(key); !ok || err != nil {
			t.Errorf("%s%v not stored under %s (%v)", f[0], items, f[4], err)
		}
		if echo.Hits() != 1 || echo.Misses() != 1 {
			t.Errorf("%s%v: hits %d misses %d", f[0], items, echo.Hits(), echo.Misses())
		}
		echo.Free()
		positional++
	}
	if positional < 3 {
		t.Errorf("only %d positional calls", positional)
	}

	add, err := quiver.NewMemo("shared.add", "", func(x, y int64) int64 { return x + y })
	must(t, err)
	defer add.Free()
	if d, _ := add.Digest(1, 2); d.String() != "d2aec93101298c8daf75589ce9ce1f83" {
		t.Errorf("shared.add(1, 2): %v", d)
	}
	feature, err := quiver.NewMemo("demo.feature", "1", func(n int, s string) float64 { return 0 })
	must(t, err)
	defer feature.Free()
	if d, _ := feature.Digest(7, "alpha"); d.String() != "55c8615235dec7e94da4339e6c8a4cef" {
		t.Errorf("demo.feature(7, alpha): %v", d)
	}
}

func TestMemoryCacheContextAndQuery(t *testing.T) {
	c, err := quiver.Memory()
	must(t, err)
	defer c.Close()
	if c.Path() != ":memory:" {
		t.Errorf("path %q", c.Path())
	}
	ctx := quiver.NewContext(context.Background(), c)
	if got, ok := quiver.FromContext(ctx); !ok || got != c {
		t.Fatal("the context does not carry the cache")
	}
	var runs atomic.Int64
	words, err := quiver.NewMemo("go.words", "2", func(ctx context.Context, s string, upper bool) ([]string, error) {
		runs.Add(1)
		if _, ok := quiver.FromContext(ctx); !ok {
			t.Error("the body did not get the call's context")
		}
		if s == "" {
			return nil, errors.New("nothing to split")
		}
		if upper {
			s = strings.ToUpper(s)
		}
		return strings.Fields(s), nil
	})
	must(t, err)
	defer words.Free()
	for i := 0; i < 3; i++ {
		got, err := quiver.Call[[]string](ctx, words, "a b", true)
		if err != nil || !reflect.DeepEqual(got, []string{"A", "B"}) {
			t.Fatalf("words: %v, %v", got, err)
		}
	}
	if runs.Load() != 1 || words.Hits() != 2 {
		t.Errorf("runs %d hits %d", runs.Load(), words.Hits())
	}
	_, err = words.Call(ctx, "", false)
	if !errors.Is(err, quiver.ErrFailed) || !strings.Contains(err.Error(), "nothing to split") {
		t.Errorf("a failing body: %v", err)
	}
	keys, err := c.Query("go.words")
	must(t, err)
	if len(keys) != 1 {
		t.Fatalf("%d calls stored, want 1 (a failed call is not stored)", len(keys))
	}
	rec, err := c.Load(keys[0])
	must(t, err)
	defer rec.Free()
	g, err := rec.Go()
	must(t, err)
	r := g.(map[string]any)
	if r["name"] != "go.words" || r["version"] != "2" || !reflect.DeepEqual(r["args"], []any{"a b", true}) {
		t.Errorf("record %v", r)
	}
	if all, _ := c.Query(""); len(all) != 1 {
		t.Errorf("Query(\"\") = %v", all)
	}

	_, err = c.Load(quiver.Digest{})
	if !errors.Is(err, quiver.ErrNotFound) || !quiver.IsNotFound(err) {
		t.Errorf("Load(absent): %v", err)
	}
	if _, err := words.Call(ctx, 1, true); !strings.Contains(err.Error(), "argument 1") {
		t.Errorf("an int for a string: %v", err)
	}
	if _, err := quiver.ToValue(struct{}{}); err == nil {
		t.Error("a struct became a value")
	}
	if _, err := quiver.ToValue(math.NaN()); err != nil {
		t.Error(err)
	}
	_, err = quiver.Open("ftp://nowhere")
	if !errors.Is(err, quiver.ErrInvalid) || !strings.Contains(err.Error(), "ftp://") {
		t.Errorf("a URL that is no cache: %v", err)
	}
}

func TestStackReadsThroughItsRemoteTier(t *testing.T) {
	remote, err := quiver.Open(t.TempDir())
	must(t, err)
	defer remote.Close()
	square, err := quiver.NewMemo("go.square", "", func(x int64) int64 { return x * x })
	must(t, err)
	defer square.Free()
	for machine := 0; machine < 2; machine++ {
		local, err := quiver.Memory()
		must(t, err)
		s, err := quiver.Stack(local, remote)
		must(t, err)
		if got, err := quiver.Call[int64](quiver.NewContext(context.Background(), s), square, 12); got != 144 || err != nil {
			t.Errorf("machine %d: %v, %v", machine, got, err)
		}
		s.Close()
		local.Close()
	}
	if square.Misses() != 1 {
		t.Errorf("the second machine ran the call (%d misses)", square.Misses())
	}
}

// One cache, two languages: Go stores a call that Python gets as a hit, and
// Python stores one that Go gets as a hit.
func TestPythonAndGoReadEachOthersCalls(t *testing.T) {
	py, pythonpath := os.Getenv("QV_PYTHON"), ""
	if py == "" {
		build := os.Getenv("QUIVER_BUILD")
		if build == "" {
			t.Skip("no Python: set QV_PYTHON, or QUIVER_BUILD to a build tree with a venv (. build/env.sh)")
		}
		py = filepath.Join(build, "venv/bin/python")
		_, file, _, _ := runtime.Caller(0)
		pythonpath = filepath.Join(build, "python") + ":" + filepath.Join(filepath.Dir(file), "../../python")
	}
	if _, err := os.Stat(py); err != nil {
		t.Skipf("no Python at %s", py)
	}
	dir := t.TempDir()
	c, err := quiver.Open(dir)
	must(t, err)
	defer c.Close()
	ctx := quiver.NewContext(context.Background(), c)
	add, err := quiver.NewMemo("xlang.go_add", "", func(x, y int) int { return x + y })
	must(t, err)
	defer add.Free()
	if got, err := quiver.Call[int](ctx, add, 2, 3); got != 5 || err != nil {
		t.Fatalf("go_add: %v %v", got, err)
	}

	cmd := exec.Command(py, "-c", `
import sys, quiver

@quiver.memo(name="xlang.go_add")
def go_add(x, y):
    raise AssertionError("Go stored this call: Python must not run it")

@quiver.memo(name="xlang.scale", version="1")
def scale(x, n, label="x"):
    return {"label": label, "value": x * n, "parts": [x, n, None, b"\x00\xff"]}

with quiver.cache(quiver.Cache.open(sys.argv[1])):
    assert go_add(2, 3) == 5
    scale(1.5, 4)
print(quiver.call_digest("xlang.scale", "1", [1.5, 4, "x"], {}))
`, dir)
	if pythonpath != "" {
		cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonpath)
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if e, ok := err.(*exec.ExitError); ok {
			stderr = e.Stderr
		}
		t.Fatalf("python: %v\n%s", err, stderr)
	}

	scale, err := quiver.NewMemo("xlang.scale", "1", func(x float64, n int64, label string) map[string]any {
		panic("Python stored this call: Go must not run it")
	})
	must(t, err)
	defer scale.Free()
	if d, _ := scale.Digest(1.5, 4, "x"); d.String() != strings.TrimSpace(string(out)) {
		t.Errorf("Go keys scale(1.5, 4, x) as %v, Python as %s", d, out)
	}
	got, err := quiver.Call[map[string]any](ctx, scale, 1.5, 4, "x")
	must(t, err)
	want := map[string]any{"label": "x", "value": 6.0, "parts": []any{1.5, int64(4), nil, []byte{0, 255}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	if scale.Hits() != 1 || scale.Misses() != 0 {
		t.Errorf("hits %d misses %d", scale.Hits(), scale.Misses())
	}
	keys, err := c.Query("xlang.scale")
	must(t, err)
	rec, err := c.Load(keys[0])
	must(t, err)
	defer rec.Free()
	if lang, _ := rec.Find("lang").Text(); lang != "python" {
		t.Errorf("stored by %q", lang)
	}
}
