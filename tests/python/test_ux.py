"""A new user's first minutes (issue 16): one default cache for every
language and process, warnings only when they are true and with advice,
objects that describe themselves, and errors that name the argument.

Every process started here gets its own QUIVER_CACHE (a temporary directory
or ":memory:"), so nothing touches the user's default cache."""
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import quiver
from quiver import Cache


def _run(code, cache, **env):
    """Run code in a new Python with QUIVER_CACHE=cache; (stdout, stderr).
    PYTHONWARNINGS=always: every warning shows, so the test counts them
    rather than the default filter's once-per-place."""
    e = dict(os.environ, QUIVER_CACHE=cache, PYTHONWARNINGS="always", **env)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, capture_output=True, text=True,
                       timeout=240)
    assert p.returncode == 0, p.stderr
    return p.stdout, p.stderr


# ---------------------------------------------------------------- the default

def test_the_default_is_the_c_librarys(tmpdir_path):
    out, err = _run("""
        import quiver, _workers
        c = quiver.current_cache()
        print(c.path)
        print(_workers.square(7))
        """, os.path.join(tmpdir_path, "shared"))
    assert out.split() == [os.path.join(tmpdir_path, "shared"), "49"]
    # Another process (as C or Lua would) finds the call in the same directory.
    with Cache.open(os.path.join(tmpdir_path, "shared")) as c, quiver.cache(c):
        assert _workers_square().contains(7)


def _workers_square():
    import _workers
    return _workers.square


def test_the_default_is_one_object_in_a_process(tmpdir_path):
    out, _ = _run("""
        import quiver
        from quiver import _quiver
        print(quiver.current_cache() is quiver.current_cache(), _quiver.cache_default().path)
        """, os.path.join(tmpdir_path, "one"))
    assert out.split() == ["True", os.path.join(tmpdir_path, "one")]


# ----------------------------------------------------------------- warnings

def test_plain_tasks_on_a_process_pool_never_warn(tmpdir_path):
    # Under a private memory cache, the default's worst case.
    out, err = _run("""
        import quiver.parallel as p
        print(p.get_executor("processes").submit(abs, -3).result())
        print(p.get_executor(2).submit(abs, -4).result())
        r = p.Runner(parallel=2, progress=False)
        for i in range(4):
            r.add(i, abs, -i)
        print(sorted(r.run().values()))
        """, ":memory:")
    assert out.split("\n")[:2] == ["3", "4"]
    assert "Warning" not in err, err


def test_a_memoized_call_in_a_worker_under_a_memory_cache_warns_once_per_worker(tmpdir_path):
    out, err = _run("""
        import quiver.parallel as p, _workers
        ex = p.get_executor(1)
        print([ex.submit(_workers.square, x).result() for x in (2, 3, 4)])
        print([ex.submit(_workers.inner, x).result()["x"] for x in (5, 6)])
        """, ":memory:")
    assert out.split("\n")[:2] == ["[4, 9, 16]", "[5, 6]"]
    warned = [line for line in err.splitlines() if "QuiverWarning" in line]
    assert len(warned) == 1, err
    assert "memory" in warned[0] and "QUIVER_CACHE" in warned[0] and "Cache.open(" in warned[0]


def test_a_stack_over_a_memory_cache_warns_only_when_a_memoized_call_runs(tmpdir_path):
    # The stack's memory layer cannot travel either: a plain task says
    # nothing, in this process or the worker; a memoized one warns, once.
    out, err = _run(f"""
        import quiver, quiver.parallel as p, _workers
        s = quiver.Cache.stack(quiver.Cache.memory(), quiver.Cache.open({os.path.join(tmpdir_path, "s")!r}))
        ex = p.get_executor(1)
        with quiver.cache(s):
            print(ex.submit(abs, -3).result())
            import sys; print("PLAIN DONE", file=sys.stderr, flush=True)
            print([ex.submit(_workers.square, x).result() for x in (2, 3)])
        """, ":memory:")
    assert out.split("\n")[:2] == ["3", "[4, 9]"]
    plain, memoized = err.split("PLAIN DONE")
    assert "Warning" not in plain, err
    assert len([line for line in memoized.splitlines() if "QuiverWarning" in line]) == 1, err


def test_no_warning_in_a_worker_when_the_cache_is_shared(tmpdir_path):
    out, err = _run("""
        import quiver.parallel as p, _workers
        print(p.get_executor(1).submit(_workers.square, 5).result())
        """, os.path.join(tmpdir_path, "c"))
    assert out.split() == ["25"]
    assert "Warning" not in err, err


def test_every_quiver_warning_says_what_to_do():
    m = Cache.memory()
    import pickle
    with pytest.warns(quiver.QuiverWarning) as w:
        pickle.loads(pickle.dumps(m))
    assert "QUIVER_CACHE" in str(w[0].message) and "Cache.open(" in str(w[0].message)


# ---------------------------------------------------------- self-description

def test_repr_of_an_lmdb_cache_shows_kind_path_entries_and_bytes(tmpdir_path):
    path = os.path.join(tmpdir_path, "r")
    with Cache.open(path) as c, quiver.cache(c):
        _workers_square()(3)
        s = c.stats()
        r = repr(c)
        assert r.startswith("<quiver.Cache lmdb ") and repr(path) in r, r
        assert f"{s['entries']} entries" in r and f"{s['bytes']} bytes" in r, r
        assert s["entries"] >= 1
    assert repr(c) == f"<quiver.Cache lmdb {path!r} closed>"


def test_repr_of_memory_and_stack_caches():
    m = Cache.memory()
    assert repr(m) == "<quiver.Cache memory, 0 entries, 0 bytes>"
    with quiver.cache(m):
        _workers_square()(4)
    assert repr(m).startswith("<quiver.Cache memory, 1 entries, ")
    s = Cache.stack(Cache.memory(), m)
    assert repr(s) == f"<quiver.Cache stack of {s._layers[0]!r}, {m!r}>"
    m.close()
    assert repr(m) == "<quiver.Cache memory closed>"


def test_repr_of_a_memo_shows_name_version_and_the_cache_it_would_use_now(tmpdir_path):
    @quiver.memo(name="ux.add", version=2)
    def add(x, y):
        return x + y
    m = Cache.memory()
    with quiver.cache(m):
        assert repr(add) == f"<quiver.memo 'ux.add' version '2' cache={m!r}>"
    assert repr(add) == f"<quiver.memo 'ux.add' version '2' cache={quiver.current_cache()!r}>"


def test_repr_of_a_memo_says_why_the_default_cannot_be_opened():
    out, err = _run("""
        import _workers
        print(repr(_workers.square))
        """, "/proc/self/no/such/dir")
    assert out.startswith("<quiver.memo '_workers.square' cache=<unavailable: "), out


# -------------------------------------------------------- the bad argument

def test_an_unencodable_argument_is_named_with_its_type_and_the_advice():
    @quiver.memo(name="ux.send")
    def send(x, n=1):
        return n
    s = socket.socket()
    try:
        with quiver.cache(Cache.memory()):
            with pytest.warns(quiver.QuiverWarning) as w:
                assert send(1, n=s) is s
            msg = str(w[0].message)
            assert msg.startswith("ux.send(n=<socket>): sockets cannot be cached; pass ignore=[\"n\"] "
                                  "or register an encoder"), msg
            with pytest.warns(quiver.QuiverWarning) as w:
                send(threading.Lock())
            assert str(w[0].message).startswith("ux.send(x=<lock>): locks cannot be cached; "
                                                "pass ignore=[\"x\"]"), str(w[0].message)
    finally:
        s.close()


def test_an_unencodable_value_inside_a_container_is_named_by_its_type():
    @quiver.memo(name="ux.many")
    def many(xs):
        return len(xs)
    with quiver.cache(Cache.memory()), pytest.warns(quiver.QuiverWarning) as w:
        assert many([1, {"k": threading.Lock()}]) == 2
    msg = str(w[0].message)
    assert msg.startswith("ux.many(xs=<list holding a lock>): locks cannot be cached; pass ignore=[\"xs\"]"), msg


def test_an_unencodable_item_of_star_args_is_named_by_position():
    @quiver.memo(name="ux.star")
    def star(*args):
        return len(args)
    with quiver.cache(Cache.memory()), pytest.warns(quiver.QuiverWarning) as w:
        assert star(1, threading.Lock()) == 2
    msg = str(w[0].message)
    assert msg.startswith("ux.star(args[1]=<lock>): locks cannot be cached; register an encoder"), msg


def test_digest_and_contains_name_the_unencodable_argument():
    @quiver.memo(name="ux.key")
    def key(x, *, tag):
        return x
    with quiver.cache(Cache.memory()):
        for ask in (key.digest, key.contains):
            with pytest.raises(quiver.EncodeError, match=r'^ux\.key\(tag=<lock>\): locks cannot be cached; '
                                                          r'pass ignore=\["tag"\]'):
                ask(1, tag=threading.Lock())
