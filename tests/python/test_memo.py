"""@memo: fleche's behaviours, on real LMDB caches and memory caches."""
import concurrent.futures
import os
import pickle
import socket
import threading
import warnings

import pytest

import quiver
from quiver import Cache, cache, memo, meta

import _memo_workers as workers


@pytest.fixture
def lmdb(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "cache"))
    with cache(c):
        yield c
    c.close()


def counted(**opts):
    calls = []

    def deco(fn):
        def body(*a, **k):
            calls.append((a, k))
            return fn(*a, **k)
        body.__name__ = fn.__name__
        body.__qualname__ = fn.__qualname__
        body.__module__ = fn.__module__
        import functools
        functools.update_wrapper(body, fn)
        m = memo(**opts)(body)
        m.calls = calls
        return m
    return deco


def test_defaults_keywords_and_ignored_share_one_entry(lmdb):
    @counted(name="t.add", ignore=("verbose",))
    def add(x, y=2, *, verbose=False):
        return x + y
    assert add(1) == 3
    assert add(1, 2) == 3
    assert add(x=1, y=2) == 3
    assert add(1, verbose=True) == 3
    assert len(add.calls) == 1
    assert add.digest(1) == add.digest(x=1, y=2, verbose=True)
    assert add(2) == 4 and len(add.calls) == 2


def test_keyword_only_and_var_keywords_go_to_kwargs():
    @memo(name="t.kw")
    def f(a, *rest, k=1, **extra):
        return a
    # [name, version, args, kwargs]: positional first, keyword-only and **extra in the map
    assert f.digest(1, 2, k=3, z=4) == quiver.call_digest("t.kw", None, [1, 2], {"k": 3, "z": 4})
    assert f.digest(1) == quiver.call_digest("t.kw", None, [1], {"k": 1})


def _module_level():
    return 1


def test_default_name_is_module_qualname():
    g = memo(_module_level)
    assert g.name == f"{__name__}._module_level"
    assert g.version is None and g.__wrapped__.__name__ == "_module_level"


def test_matches_the_shared_call_digest(lmdb):
    @memo(name="shared.add")
    def add(x, y):
        return x + y
    assert add.digest(1, 2) == "d2aec93101298c8daf75589ce9ce1f83"
    add(1, 2)
    assert lmdb.contains("d2aec93101298c8daf75589ce9ce1f83")


def test_none_results_are_cached(lmdb):
    @counted(name="t.nothing")
    def nothing(x):
        return None
    assert nothing(1) is None and nothing(1) is None
    assert len(nothing.calls) == 1
    assert nothing.load(1) is None


def test_version_change_reruns(lmdb):
    def body(x):
        return x
    v1 = memo(name="t.v", version="1")(body)
    v2 = memo(name="t.v", version="2")(body)
    v1(1)
    assert v1.contains(1) and not v2.contains(1)
    assert v1.digest(1) != v2.digest(1)


def test_require_runs_uncached_unless_passed(lmdb):
    @counted(name="t.draw", require=("seed",))
    def draw(n, seed=None):
        return n
    draw(1)
    draw(1)
    assert len(draw.calls) == 2
    draw(1, seed=5)
    draw(1, seed=5)
    assert len(draw.calls) == 3


def test_load_contains_and_keyerror(lmdb):
    @memo(name="t.h")
    def h(x):
        return [x]
    with pytest.raises(KeyError):
        h.load(3)
    assert not h.contains(3)
    assert h(3) == [3]
    assert h.contains(3) and h.load(3) == [3]
    rec = lmdb.load(h.digest(3))
    assert (rec.name, rec.args, rec.kwargs, rec.result, rec.lang) == (h.name, (3,), {}, [3], "python")
    assert rec.duration >= 0 and rec.start.year >= 2024


def test_query_and_metadata(lmdb):
    @memo(name="t.q", meta={"stage": "a"})
    def q(x, y=0):
        return x - y
    with meta(project="p1"):
        q(1)
        q(2)
    q(1, 1)
    recs = list(lmdb.query(name=q.name, x=1))
    assert sorted(r.args for r in recs) == [(1, 0), (1, 1)]
    p1 = list(q.query(metadata={"project": "p1"}))
    assert sorted(r.args for r in p1) == [(1, 0), (2, 0)]
    assert all(r.metadata["stage"] == "a" for r in p1)
    assert list(q.query(x=2, metadata={"project": "p1"}))[0].result == 2
    table = lmdb.table(name=q.name)
    assert len(table) == 3 and set(table["result"]) == {1, 2, 0}


def test_meta_is_sticky_without_with(lmdb):
    import contextvars

    def inner():
        meta(run="r9")

        @memo(name="t.sticky")
        def s(x):
            return x
        s(1)
        return quiver.current_meta()
    ctx = contextvars.copy_context()
    assert ctx.run(inner) == {"run": "r9"}
    assert quiver.current_meta() == {}
    assert lmdb.load(quiver.call_digest("t.sticky", None, [1], {})).metadata == {"run": "r9"}


def test_rerun_overwrites(lmdb):
    box = [1]

    @memo(name="t.rerun")
    def r(x):
        return box[0]
    assert r(0) == 1
    box[0] = 2
    assert r(0) == 1
    assert r.rerun(0) == 2
    assert r(0) == 2


def test_cache_context_is_per_thread_and_sticky(tmpdir_path):
    a = Cache.memory()
    b = Cache.open(os.path.join(tmpdir_path, "b"))
    seen = {}

    @memo(name="t.where")
    def where(x):
        return x
    with cache(a):
        where(1)

        def other():
            seen["thread"] = quiver.current_cache()
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert quiver.current_cache() is a
    assert seen["thread"] is not a
    assert a.contains(where.digest(1)) and not b.contains(where.digest(1))
    import contextvars

    def sticky():
        cache(b)
        where(2)
        return quiver.current_cache()
    assert contextvars.copy_context().run(sticky) is b
    assert b.contains(where.digest(2))
    b.close()


def test_unencodable_arguments_run_uncached_with_a_warning(lmdb):
    @counted(name="t.uses")
    def uses(sock):
        return 1
    s = socket.socket()
    try:
        with pytest.warns(quiver.QuiverWarning, match="cannot be cached"):
            assert uses(s) == 1
        with pytest.warns(quiver.QuiverWarning):
            assert uses(s) == 1
        assert len(uses.calls) == 2
        assert uses._probe(s) == (False, None)
    finally:
        s.close()


def test_unencodable_result_is_returned_with_a_warning(lmdb):
    lock = threading.Lock()

    @memo(name="t.lockret")
    def give():
        return lock
    with pytest.warns(quiver.QuiverWarning, match=r"not stored.*register an encoder"):
        assert give() is lock
    assert not give.contains()


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, o):
        return isinstance(o, Point) and o.x == self.x


def test_pickled_and_registered_values(lmdb):
    @counted(name="t.ident")
    def ident(p):
        return p
    assert ident(Point(1)) == Point(1)
    assert ident(Point(1)) == Point(1)
    assert len(ident.calls) == 1
    assert quiver.encode(Point(1))[:5] == bytes.fromhex("da51560002")

    class Meters(float):
        pass
    quiver.register(Meters, float, Meters)
    enc = quiver.encode(Meters(2.5))
    assert enc[:5] == bytes.fromhex("da51560004")
    back = quiver.decode(enc)
    assert type(back) is Meters and back == 2.5


def test_untrusted_cache_refuses_pickles_but_not_native_values(tmpdir_path):
    path = os.path.join(tmpdir_path, "shared")
    with Cache.open(path) as c, cache(c):
        workers.square(3)
        pickled = memo(name="t.pickled")(lambda: Point(7))
        pickled()
    os.chmod(path, 0o777)
    try:
        with Cache.open(path) as c, cache(c):
            assert workers.square(3) == 9
            # read as a miss, saying why: the call runs again
            with pytest.warns(quiver.QuiverWarning, match="trust_pickle=True"):
                assert pickled() == Point(7)
            with pytest.raises(quiver.UntrustedPickleError, match="trust_pickle=True"):
                c.load(pickled.digest())
        with Cache.open(path, trust_pickle=True) as c, cache(c):
            assert pickled() == Point(7)
    finally:
        os.chmod(path, 0o700)


def test_future_pass_through(lmdb):
    ex = concurrent.futures.ThreadPoolExecutor(1)
    calls = []

    @memo(name="t.future")
    def later(x):
        calls.append(x)
        return ex.submit(lambda: x * 10)
    f = later(4)
    assert isinstance(f, concurrent.futures.Future) and f.result() == 40
    ex.shutdown(wait=True)
    assert later(4) == 40 and calls == [4]


def test_isolate_runs_in_a_fresh_directory(lmdb, tmpdir_path):
    here = os.getcwd()
    os.chdir(tmpdir_path)
    try:
        where = workers.writes_file("out.txt")
        assert where != tmpdir_path and not os.path.exists(where)
        assert not os.path.exists(os.path.join(tmpdir_path, "out.txt"))
        assert os.getcwd() == tmpdir_path
    finally:
        os.chdir(here)
    errors = []

    def in_thread():
        try:
            workers.writes_file.rerun("t.txt")
        except quiver.MisuseError as e:
            errors.append(e)
    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0])


def test_stacks_write_first_read_all_promote(tmpdir_path):
    fast = Cache.memory()
    shared = Cache.open(os.path.join(tmpdir_path, "shared"))
    with cache(shared):
        workers.square(5)
    st = Cache.stack(fast, shared)
    with cache(st):
        assert workers.square(5) == 25
        assert fast.contains(workers.square.digest(5))  # promoted
        assert workers.square(6) == 36
    assert fast.contains(workers.square.digest(6)) and not shared.contains(workers.square.digest(6))
    assert st.contains(workers.square.digest(5))
    shared.close()


def test_readonly_computes_unstored_and_warns_once(tmpdir_path):
    # DESIGN section 12: a miss on a read-only cache runs and returns its
    # result, unstored, with one warning per cache; writes asked for refuse.
    path = os.path.join(tmpdir_path, "ro")
    with Cache.open(path) as c, cache(c):
        workers.square(2)
    with Cache.open(path, readonly=True) as ro, cache(ro):
        assert workers.square(2) == 4
        with pytest.warns(quiver.QuiverWarning, match=r"read-only.*open it without readonly=True"):
            assert workers.square(3) == 9
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert workers.square(4) == 16  # said once for this cache
        assert not ro.contains(workers.square.digest(3))
        with pytest.raises(quiver.ReadOnlyError):
            ro.evict(workers.square.digest(2))


def test_size_limit_evict_gc_and_stats(tmpdir_path):
    with Cache.open(os.path.join(tmpdir_path, "small"), max_bytes=200_000) as c, cache(c):
        big = memo(name="t.big")(lambda i: bytes(10_000) + bytes([i % 256]))
        for i in range(100):
            big(i)
        s = c.stats()
        assert s["evictions"] > 0 and s["bytes"] <= 200_000
        workers.square(9)
        assert c.evict(workers.square.digest(9)) == 1 and not workers.square.contains(9)
        assert c.gc() >= 0


def test_memo_and_caches_pickle(tmpdir_path):
    assert pickle.loads(pickle.dumps(workers.square)) is workers.square
    c = Cache.open(os.path.join(tmpdir_path, "p"))
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.path == c.path and c2 is not c
    m = Cache.memory()
    with pytest.warns(quiver.QuiverWarning, match="nothing is shared"):
        m2 = pickle.loads(pickle.dumps(m))
    assert m2.path == ":memory:"
    c.close()
    c2.close()


def test_process_pool_with_a_module_level_function(tmpdir_path):
    path = os.path.join(tmpdir_path, "pp")
    with Cache.open(path) as c, cache(c):
        first = workers.pid_of(1)
        os.environ["QUIVER_CACHE"] = path
        try:
            with concurrent.futures.ProcessPoolExecutor(2) as ex:
                got = list(ex.map(workers.pid_of, [1, 2]))
        finally:
            del os.environ["QUIVER_CACHE"]
        assert got[0] == first  # a hit in the child: the parent's pid
        assert got[1][0] == 2 and got[1][1] != os.getpid()
        assert workers.pid_of(2) == got[1]  # stored by the child


def test_probe_contract(lmdb):
    assert workers.square._probe(11) == (False, None)
    workers.square(11)
    assert workers.square._probe(11) == (True, 121)
    assert workers.square._probe(x=11) == (True, 121)


def test_methods_bind_like_functions(lmdb):
    class A:
        @memo(name="t.method")
        def twice(self, x):
            return 2 * x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert A().twice(3) == 6


def test_bad_calls_raise_the_functions_type_error(lmdb):
    @memo(name="t.one")
    def one(x):
        return x
    with pytest.raises(TypeError):
        one()
    with pytest.raises(TypeError):
        one(1, 2)
    with pytest.raises(TypeError):
        one(1, x=1)
