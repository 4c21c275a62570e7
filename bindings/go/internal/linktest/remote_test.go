package linktest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"quiver"
)

// startRedis runs a private redis-server on a free loopback port (no
// persistence) until the test ends, and returns its redis:// URL with a
// prefix of the test's own.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed (scripts/setup.sh installs it): %v", err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", tempDir(t), "--loglevel", "warning")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			select {
			case <-exited: // the port was taken meanwhile: another one
				deadline = time.Now()
				continue
			default:
			}
			if ping(addr) {
				t.Cleanup(stop)
				return fmt.Sprintf("redis://%s/0?prefix=go-%s:", addr, t.Name())
			}
			time.Sleep(20 * time.Millisecond)
		}
		stop()
	}
	t.Fatal("redis-server did not start")
	return ""
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func openURL(t *testing.T, url string) *quiver.Cache {
	t.Helper()
	c, err := quiver.Open(url)
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

func stack(t *testing.T, local, remote *quiver.Cache) *quiver.Cache {
	t.Helper()
	s, err := quiver.Stack(local, remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Two "machines" (two local directories) share one Redis: a Go function
// stored through the first runs not at all on the second, which reads it
// through Redis and keeps a copy; the bare remote tier holds it too.
func TestRemoteTierSharesAcrossMachines(t *testing.T) {
	url := startRedis(t)
	runs := 0
	f, err := quiver.New("link.go.remote.square", "1", func(args, kwargs *quiver.Value) (*quiver.Value, error) {
		runs++
		n, err := args.Index(0).Int()
		if err != nil {
			return nil, err
		}
		return quiver.Int(n * n), nil
	})
	must(t, err)
	defer f.Free()
	square := func(c *quiver.Cache, n int64) int64 {
		t.Helper()
		var got int64
		must(t, quiver.WithCache(c, func() error {
			args := quiver.List(quiver.Int(n))
			defer args.Free()
			r, err := f.Call(args)
			if err != nil {
				return err
			}
			defer r.Free()
			got, err = r.Int()
			return err
		}))
		return got
	}

	remoteA := openURL(t, url)
	if p := remoteA.Path(); !strings.HasPrefix(p, "redis://127.0.0.1:") {
		t.Errorf("the remote tier's path is %q", p)
	}
	localA, localB := openCache(t, tempDir(t)), openCache(t, tempDir(t))
	a := stack(t, localA, remoteA)
	if got := square(a, 12); got != 144 || runs != 1 {
		t.Fatalf("machine A: square(12) = %d after %d runs", got, runs)
	}
	if got := square(a, 12); got != 144 || runs != 1 {
		t.Fatalf("machine A again: square(12) = %d after %d runs", got, runs)
	}

	args := quiver.List(quiver.Int(12))
	defer args.Free()
	d, err := f.Digest(args)
	must(t, err)
	remoteB := openURL(t, url) // machine B's own connection
	if ok, err := remoteB.Contains(d); !ok || err != nil {
		t.Fatalf("Redis lacks %v (%v)", d, err)
	}
	if ok, _ := localB.Contains(d); ok {
		t.Fatal("machine B's local tier has the call before asking")
	}
	b := stack(t, localB, remoteB)
	if got := square(b, 12); got != 144 || runs != 1 {
		t.Fatalf("machine B: square(12) = %d after %d runs, want a hit through Redis", got, runs)
	}
	if n, err := b.RemoteHits(); n != 1 || err != nil {
		t.Errorf("machine B: %d remote hits (%v), want 1", n, err)
	}
	// The stack copies a remote hit into local on a thread of its own.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ok, _ := localB.Contains(d); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("machine B's local tier kept no copy of the remote hit")
		}
	}
	rec, err := remoteB.Load(d)
	must(t, err)
	defer rec.Free()
	if name, _ := rec.Find("name").Text(); name != "link.go.remote.square" {
		t.Errorf("the record in Redis names %q", name)
	}
	if r, _ := rec.Find("result").Int(); r != 144 {
		t.Errorf("the record in Redis has result %d", r)
	}
}

// A URL is never a directory: one nobody listens on is an error at open.
func TestRemoteTierDownIsAnError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c, err := quiver.Open(fmt.Sprintf("redis://127.0.0.1:%d/0?timeout_ms=200", port))
	if err == nil {
		c.Close()
		t.Fatal("opening a Redis nobody runs succeeded")
	}
	if e, ok := err.(*quiver.Error); !ok || e.Name != "QV_EIO" {
		t.Errorf("opening a Redis nobody runs: %v, want QV_EIO", err)
	}
}
