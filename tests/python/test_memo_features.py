"""@memo features fleche users rely on: a recursive rerun, metadata computed
per call, async def functions, version="code", and pathlib.Path arguments
keyed by what they hold."""
import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import quiver
from quiver import Cache, cache, memo, meta


@pytest.fixture
def lmdb(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "cache"))
    with cache(c):
        yield c
    c.close()


# ------------------------------------------------------------- rerun

def _nested(prefix):
    """outer(x) calls inner(x); both count their runs and return the
    generation they ran in, so a rerun's new results can be told apart."""
    state = {"gen": 0, "outer": 0, "inner": 0}

    @memo(name=f"{prefix}.inner")
    def inner(x):
        state["inner"] += 1
        return (x, state["gen"])

    @memo(name=f"{prefix}.outer")
    def outer(x):
        state["outer"] += 1
        return [inner(x), inner(x + 100)]
    return state, outer, inner


def test_rerun_reruns_the_calls_inside_and_stores_them(lmdb):
    state, outer, inner = _nested("t.rerun")
    assert outer(1) == [(1, 0), (101, 0)]
    assert outer(1) == [(1, 0), (101, 0)] and state["outer"] == 1 and state["inner"] == 2
    state["gen"] = 1
    assert outer.rerun(1) == [(1, 1), (101, 1)]
    assert state["outer"] == 2 and state["inner"] == 4
    # the new results are stored, the inner ones too, and calls hit again
    assert inner(1) == (1, 1) and inner.load(101) == (101, 1) and outer(1) == [(1, 1), (101, 1)]
    assert state["outer"] == 2 and state["inner"] == 4
    assert inner.record(1).result == (1, 1)


def test_rerun_runs_each_call_inside_once_as_lua_does(lmdb):
    runs = []

    @memo(name="t.rerun_fib")
    def fib(n):
        runs.append(n)
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    @memo(name="t.rerun_afib")
    async def afib(n):
        runs.append(n)
        return n if n < 2 else await afib(n - 1) + await afib(n - 2)
    assert fib(25) == 75025 and len(runs) == 26
    runs.clear()
    assert fib.rerun(25) == 75025 and sorted(runs) == list(range(26))  # linear, not exponential
    assert asyncio.run(afib(15)) == 610
    runs.clear()
    assert asyncio.run(afib.rerun(15)) == 610 and sorted(runs) == list(range(16))


def test_rerun_ends_with_the_call_and_stays_in_its_thread(lmdb):
    state, outer, inner = _nested("t.rerun_scope")
    inner(7)
    seen = []

    @memo(name="t.rerun_scope.spawns")
    def spawns(x):
        t = threading.Thread(target=lambda: seen.append(inner(7)))  # another thread: not rerun
        t.start()
        t.join()
        return inner(x)
    state["gen"] = 1
    assert spawns.rerun(7) == (7, 1)
    assert seen == [(7, 0)] or seen == [(7, 1)]  # a hit, or the rerun's store if it came first
    runs = state["inner"]
    assert inner(7) == (7, 1) and state["inner"] == runs  # after the rerun: hits again


def test_rerun_on_a_stack_stores_in_its_first_cache(tmpdir_path):
    fast = Cache.memory()
    with Cache.open(os.path.join(tmpdir_path, "slow")) as slow:
        st = Cache.stack(fast, slow)
        state, outer, inner = _nested("t.rerun_stack")
        with cache(st):
            outer(2)
            state["gen"] = 5
            assert outer.rerun(2) == [(2, 5), (102, 5)]
        with cache(fast):
            assert inner.load(2) == (2, 5) and outer.load(2) == [(2, 5), (102, 5)]


# --------------------------------------------------- metadata per call

def test_meta_callable_gets_the_bound_arguments(lmdb):
    got = []

    def describe(arguments):
        got.append(arguments)
        return {"size": arguments["n"] * 10, "mode": arguments["mode"], "who": "memo"}

    @memo(name="t.meta_fn", meta=describe)
    def work(n, mode="fast", *rest, flag=False):
        return n
    work(3)
    assert got == [{"n": 3, "mode": "fast", "rest": (), "flag": False}]
    with meta(who="caller", run=7):
        work(4, "slow", flag=True)
    assert work.record(3).metadata == {"size": 30, "mode": "fast", "who": "memo"}
    # quiver.meta(...) wins on a key both give
    assert work.record(4, "slow", flag=True).metadata == {"size": 40, "mode": "slow", "who": "caller", "run": 7}
    work(3)
    assert len(got) == 2  # a hit computes no metadata
    assert [r.metadata["size"] for r in work.query()] and lmdb.query("t.meta_fn", {"size": 40})


def test_meta_callable_must_return_a_dict(lmdb):
    @memo(name="t.meta_bad", meta=lambda a: ["not", "a", "dict"])
    def f(x):
        return x
    with pytest.raises(TypeError, match="meta= returned a list"):
        f(1)

    @memo(name="t.meta_none", meta=lambda a: None)
    def g(x):
        return x
    assert g(1) == 1 and "size" not in g.record(1).metadata


# ------------------------------------------------------------- async

def _async_counted(name, delay=0.05, **opts):
    runs = []

    @memo(name=name, **opts)
    async def f(x):
        runs.append(x)
        await asyncio.sleep(delay)
        if x < 0:
            raise ValueError("negative")
        return x * 3
    return f, runs


def test_async_result_is_cached(lmdb):
    f, runs = _async_counted("t.async_cached")
    assert isinstance(f, quiver.Memo) and asyncio.iscoroutine(c := f(2))
    c.close()
    assert asyncio.run(f(2)) == 6 and asyncio.run(f(2)) == 6 and runs == [2]
    assert f.load(2) == 6 and f.contains(2) and f.record(2).duration >= 0.04  # the awaited time, in seconds


def test_async_concurrent_awaiters_share_one_run(lmdb):
    f, runs = _async_counted("t.async_shared")

    async def main():
        return await asyncio.gather(*[f(i % 2) for i in range(10)])
    assert asyncio.run(main()) == [0, 3] * 5
    assert sorted(runs) == [0, 1]


def test_async_failure_reaches_every_awaiter_and_is_not_stored(lmdb):
    f, runs = _async_counted("t.async_fails")

    async def main():
        return await asyncio.gather(*[f(-1) for _ in range(3)], return_exceptions=True)
    out = asyncio.run(main())
    assert all(isinstance(e, ValueError) for e in out) and runs == [-1]
    assert not f.contains(-1)


def test_async_cancelling_one_awaiter_keeps_the_run(lmdb):
    f, runs = _async_counted("t.async_cancel", delay=0.1)

    async def main():
        a = asyncio.ensure_future(f(5))
        b = asyncio.ensure_future(f(5))
        await asyncio.sleep(0.02)
        a.cancel()
        return await b, a.cancelled()
    assert asyncio.run(main()) == (15, True)
    assert runs == [5] and f.load(5) == 15


def test_async_rerun_is_recursive(lmdb):
    gen = [0]

    @memo(name="t.async_inner")
    async def inner(x):
        return (x, gen[0])

    @memo(name="t.async_sync_inner")
    def sync_inner(x):
        return (x, gen[0])

    @memo(name="t.async_outer")
    async def outer(x):
        return [await inner(x), sync_inner(x)]
    assert asyncio.run(outer(1)) == [(1, 0), (1, 0)]
    gen[0] = 1
    assert asyncio.run(outer(1)) == [(1, 0), (1, 0)]
    assert asyncio.run(outer.rerun(1)) == [(1, 1), (1, 1)]
    assert asyncio.run(inner(1)) == (1, 1) and sync_inner(1) == (1, 1)


def test_async_read_only_cache_computes_and_warns(tmpdir_path):
    path = os.path.join(tmpdir_path, "ro")
    Cache.open(path).close()
    f, runs = _async_counted("t.async_ro", delay=0)
    with Cache.open(path, readonly=True) as ro, cache(ro):
        with pytest.warns(quiver.QuiverWarning, match="read-only"):
            assert asyncio.run(f(4)) == 12
        assert not ro.contains(f.digest(4))


def test_async_refuses_isolate():
    with pytest.raises(ValueError, match="isolate"):
        @memo(name="t.async_isolate", isolate=True)
        async def f(x):
            return x


# ------------------------------------------------------ version="code"

_SOURCE = '''
import quiver

@quiver.memo(name="t.code", version="code")
def f(x):
    {comment}
    y = x + {k}
    g = lambda z: z * {inner}
    return g(y) if x in {{1, "a", 2.5}} else y
'''


def _code_version(tmpdir_path, comment="# a note", k=1, inner=2, seed="0", blank=0):
    src = textwrap.dedent(_SOURCE.format(comment=comment, k=k, inner=inner))
    if blank:
        src = "\n" * blank + src  # every line moves
    d = os.path.join(tmpdir_path, f"m{time.perf_counter_ns()}")
    os.makedirs(d)
    with open(os.path.join(d, "code_mod.py"), "w") as fh:
        fh.write(src)
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=d + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", "import code_mod; print(code_mod.f.version)"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_version_code_notices_edits_not_comments(tmpdir_path):
    v = _code_version(tmpdir_path)
    assert v.startswith("code:") and len(v) == 5 + 32
    assert _code_version(tmpdir_path, seed="12345") == v  # PYTHONHASHSEED, a frozenset constant
    assert _code_version(tmpdir_path, comment="# another comment, longer") == v
    assert _code_version(tmpdir_path, blank=7) == v  # lines moved
    assert _code_version(tmpdir_path, k=2) != v  # the body
    assert _code_version(tmpdir_path, inner=3) != v  # a nested code object (the lambda)
    assert _code_version(tmpdir_path, comment="x = 0") != v  # a statement added


def test_version_code_separates_results(lmdb):
    def make(k):
        ns = {}
        exec(f"def f(x):\n    return x + {k}\n", ns)
        return memo(name="t.code_results", version="code")(ns["f"])
    a, a_again, b = make(1), make(1), make(2)
    assert a.version == a_again.version != b.version
    assert a(1) == 2 and b(1) == 3 and a_again.load(1) == 2
    with pytest.raises(TypeError, match="version=\"code\""):
        memo(name="t.code_builtin", version="code")(len)


# ------------------------------------------------- Path arguments

def _reader(name, **opts):
    runs = []

    @memo(name=name, **opts)
    def read(p):
        runs.append(str(p))
        if p.is_dir():
            return sorted(str(q.relative_to(p)) for q in p.rglob("*"))
        return p.read_bytes() if p.exists() else None
    return read, runs


def test_path_file_is_keyed_by_its_bytes(lmdb, tmpdir_path):
    read, runs = _reader("t.path_file")
    p = pathlib.Path(tmpdir_path, "data.txt")
    p.write_bytes(b"one")
    assert read(p) == b"one" and read(p) == b"one" and len(runs) == 1
    p.write_bytes(b"two")
    assert read(p) == b"two" and len(runs) == 2
    p.write_bytes(b"one")  # the same bytes again, a newer mtime: a hit
    assert read(p) == b"one" and len(runs) == 2
    q = pathlib.Path(tmpdir_path, "copy.txt")
    q.write_bytes(b"one")
    read(q)
    assert len(runs) == 3  # another path, the same bytes: its name is in the key too
    assert read.record(p).args == (p,)  # the record reads back as the path
    assert list(read.query(p=p)) and read.digest(p) != read.digest(q)


def test_path_directory_is_keyed_by_its_tree(lmdb, tmpdir_path):
    read, runs = _reader("t.path_dir")
    d = pathlib.Path(tmpdir_path, "tree")
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    first = read.digest(d)
    read(d)
    read(d)
    assert len(runs) == 1
    (d / "sub" / "b.txt").write_text("B")  # a nested file edited
    second = read.digest(d)
    assert second != first
    (d / "sub" / "b.txt").write_text("b")
    assert read.digest(d) == first
    (d / "sub" / "c.txt").write_text("")  # a file added
    assert read.digest(d) not in (first, second)
    (d / "sub" / "c.txt").unlink()
    (d / "empty").mkdir()  # an empty directory added
    assert read.digest(d) != first
    (d / "empty").rmdir()
    (d / "a.txt").rename(d / "z.txt")  # a file renamed
    assert read.digest(d) != first


def test_path_that_does_not_exist_and_the_opt_out(lmdb, tmpdir_path):
    read, runs = _reader("t.path_missing")
    p = pathlib.Path(tmpdir_path, "later.txt")
    assert read(p) is None and read(p) is None and len(runs) == 1
    p.write_bytes(b"now")
    assert read(p) == b"now"
    by_name, name_runs = _reader("t.path_by_name", paths="name")
    by_name(p)
    p.write_bytes(b"edited")
    assert by_name(p) == b"now" and len(name_runs) == 1  # keyed by the text alone
    assert by_name.digest(p) == quiver.call_digest("t.path_by_name", None, [p], {})
    with pytest.raises(ValueError, match="paths must be"):
        memo(name="t.path_bad", paths="mtime")(lambda p: p)


def test_path_value_encoding_is_unchanged(lmdb, tmpdir_path):
    # Only a memo's key changes: a Path value encodes as before (tag
    # 0x51560008), a PurePath argument is keyed by its text, and a result
    # that is a Path is stored as a path.
    p = pathlib.Path(tmpdir_path, "v.txt")
    p.write_text("x")
    assert quiver.encode(p)[:5] == bytes.fromhex("da51560008")
    assert quiver.decode(quiver.encode(p)) == p

    @memo(name="t.path_pure")
    def pure(p):
        return p
    pp = pathlib.PurePosixPath(tmpdir_path, "v.txt")
    assert pure.digest(pp) == quiver.call_digest("t.path_pure", None, [pp], {})
    assert pure(p) == p and pure.load(p) == p
    # nested inside a container argument, a Path is keyed by content as well
    @memo(name="t.path_nested")
    def many(paths):
        return [q.read_text() for q in paths]
    assert many([p]) == ["x"]
    p.write_text("y")
    assert many([p]) == ["y"]


def test_digest_file_is_xxh3_of_the_bytes_and_fast(tmpdir_path):
    from quiver import _quiver
    p = os.path.join(tmpdir_path, "big.bin")
    data = os.urandom(1 << 20) * 64  # 64 MiB
    with open(p, "wb") as fh:
        fh.write(data)
    assert _quiver.qv_digest_file(p) == _quiver.qv_digest_bytes(data)
    open(os.path.join(tmpdir_path, "empty"), "wb").close()
    assert _quiver.qv_digest_file(os.path.join(tmpdir_path, "empty")) == _quiver.qv_digest_bytes(b"")
    with pytest.raises(quiver.NotFoundError):
        _quiver.qv_digest_file(os.path.join(tmpdir_path, "absent"))
    with pytest.raises(quiver.InvalidArgumentError):
        _quiver.qv_digest_file(tmpdir_path)
    # The GIL is released while it hashes: another thread runs meanwhile.
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.0005)
    t = threading.Thread(target=tick)
    t.start()
    t0 = time.perf_counter()
    for _ in range(5):
        _quiver.qv_digest_file(p)
    elapsed = time.perf_counter() - t0
    done.set()
    t.join()
    assert ticks
    # XXH3 from the page cache runs at several GB/s; a generous floor so a
    # loaded machine does not fail it, far above a hash through Python.
    assert 5 * 64 / 1024 / elapsed > 0.3, f"{5 * 64 / 1024 / elapsed:.2f} GB/s"


def test_special_files_are_keyed_by_name(lmdb, tmpdir_path):
    # A FIFO or a device may never end (or wait for a writer): by its name.
    fifo = pathlib.Path(tmpdir_path, "pipe")
    os.mkfifo(fifo)
    runs = []

    @memo(name="t.path_special")
    def name_of(p):
        runs.append(p)
        return p.name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert name_of(fifo) == "pipe" and name_of(fifo) == "pipe" and len(runs) == 1
        assert name_of(pathlib.Path("/dev/zero")) == "zero"
        d = pathlib.Path(tmpdir_path, "withpipe")
        d.mkdir()
        os.mkfifo(d / "p")
        assert name_of(d) == "withpipe"


# ------------------------------------------------ read-only caches compute

def test_read_only_cache_computes_unstored(tmpdir_path):
    # The sync case is also in test_memo.py; here a rerun and a Path too.
    path = os.path.join(tmpdir_path, "ro")
    Cache.open(path).close()
    read, runs = _reader("t.ro_path")
    p = pathlib.Path(tmpdir_path, "f")
    p.write_text("1")
    with Cache.open(path, readonly=True) as ro, cache(ro):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert read(p) == b"1" and read.rerun(p) == b"1"
        assert len(runs) == 2 and not ro.contains(read.digest(p))
        assert sum("read-only" in str(x.message) for x in w) == 1  # once per cache
