"""SafeCounter and SafeDict (DESIGN section 11): lock-guarded objects for
threads, the cache's shared store for processes. Totals must be exact: a
lost increment is the bug these look for."""
import concurrent.futures
import multiprocessing
import os
import pickle
import subprocess
import sys

import pytest

import quiver
from quiver import _quiver
from quiver._shared import _StoreCounter, _StoreDict, _ThreadCounter, _ThreadDict
from quiver.parallel import SafeCounter, SafeDict

N = 500


def _bump(counter, n):
    for i in range(n):
        counter.increment("all")
        counter.increment(("pid", i % 2), 2)
    return os.getpid()


def _fill(d, k):
    d.set(k, {"from": k, "pid": os.getpid(), "list": [k, k * 2]})
    d[("tuple", k)] = k
    return k


@pytest.fixture
def cache(tmpdir_path):
    c = quiver.Cache.open(os.path.join(tmpdir_path, "c"))
    yield c
    c.close()


def test_make_picks_the_kind():
    assert isinstance(SafeCounter.make(concurrent.futures.ThreadPoolExecutor), _ThreadCounter)
    assert isinstance(SafeCounter.make("threads"), _ThreadCounter)
    assert isinstance(SafeCounter.make(None), _ThreadCounter)
    assert isinstance(SafeDict.make(concurrent.futures.ThreadPoolExecutor(1)), _ThreadDict)
    assert isinstance(SafeCounter.make(concurrent.futures.ProcessPoolExecutor), _StoreCounter)
    assert isinstance(SafeCounter.make("processes"), _StoreCounter)
    assert isinstance(SafeDict.make(concurrent.futures.ProcessPoolExecutor), _StoreDict)
    assert quiver.SafeCounter is SafeCounter and quiver.SafeDict is SafeDict


def test_thread_counter_exact():
    counter = SafeCounter.make(concurrent.futures.ThreadPoolExecutor)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(_bump, [counter] * 4, [N] * 4))
    assert counter.get("all") == 4 * N
    assert counter[("pid", 0)] == counter.get(("pid", 1)) == 4 * N
    assert sorted(counter.items(), key=repr) == [("all", 4 * N), (("pid", 0), 4 * N), (("pid", 1), 4 * N)]
    assert counter.get("never") == 0
    with pytest.raises(TypeError, match="threads"):
        pickle.dumps(counter)


def test_thread_dict():
    d = SafeDict.make("threads")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(_fill, [d] * 8, range(8))) == list(range(8))
    assert d.get(3)["list"] == [3, 6]
    assert d[("tuple", 7)] == 7 and ("tuple", 7) in d
    assert d.get("missing") is None and d.get("missing", 5) == 5
    del d[3]
    assert 3 not in d
    with pytest.raises(KeyError):
        d.delete(3)


def test_store_counter_in_4_spawned_processes(cache):
    counter = SafeCounter.make(concurrent.futures.ProcessPoolExecutor, cache=cache)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        pids = set(pool.map(_bump, [counter] * 8, [N] * 8))
    assert len(pids) >= 2
    assert counter.get("all") == 8 * N
    assert counter.get(("pid", 0)) == counter.get(("pid", 1)) == 8 * N
    assert sorted(counter.items(), key=repr) == [("all", 8 * N), (("pid", 0), 8 * N), (("pid", 1), 8 * N)]
    assert counter.increment("all", -8 * N) == 0


def test_store_counter_uses_the_active_cache(cache):
    with quiver.cache(cache):
        counter = SafeCounter.make(concurrent.futures.ProcessPoolExecutor)
    assert counter.cache is cache
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_bump, [counter] * 4, [50] * 4))
    assert counter.get("all") == 200


def test_store_dict_across_processes(cache):
    d = SafeDict.make(concurrent.futures.ProcessPoolExecutor, cache=cache)
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert sorted(pool.map(_fill, [d] * 8, range(8))) == list(range(8))
    for k in range(8):
        v = d[k]
        assert v["from"] == k and v["list"] == [k, 2 * k] and v["pid"] != os.getpid()
        assert d.get(("tuple", k)) == k
    assert len(d.items()) == 16 and dict(d.items())[("tuple", 3)] == 3
    assert d.get("missing", "dflt") == "dflt"
    assert "missing" not in d
    d.delete(0)
    with pytest.raises(KeyError):
        del d[0]
    assert d.clear() == 15


def test_pickles_as_cache_and_name(cache):
    counter = SafeCounter.make("processes", cache=cache, name="jobs")
    counter.increment("a", 3)
    copy = pickle.loads(pickle.dumps(counter))
    assert copy.name == "jobs" and copy.cache.path == cache.path
    assert copy.increment("a") == 4
    assert counter.get("a") == 4
    d = SafeDict.make("processes", cache=cache, name="jobs")  # a dict and a counter may share a name
    d["a"] = "x"
    assert pickle.loads(pickle.dumps(d))["a"] == "x"
    assert counter.get("a") == 4
    assert repr(counter) == f"_StoreCounter(name='jobs', cache={cache.path!r})"


def test_unnamed_ones_are_cleared_when_collected(cache):
    counter = SafeCounter.make("processes", cache=cache)
    name = counter.name
    counter.increment("k", 5)
    assert _quiver.qv_counter_get(cache, name, quiver.encode("k")) == 5
    copy = pickle.loads(pickle.dumps(counter))
    del copy  # a copy is no owner
    assert _quiver.qv_counter_get(cache, name, quiver.encode("k")) == 5
    del counter
    import gc
    gc.collect()
    assert _quiver.qv_counter_get(cache, name, quiver.encode("k")) == 0
    named = SafeCounter.make("processes", cache=cache, name="kept")
    named.increment("k")
    del named
    gc.collect()
    assert SafeCounter.make("processes", cache=cache, name="kept").get("k") == 1


def test_refusals(cache, tmpdir_path):
    counter = SafeCounter.make("processes", cache=cache, name="r")
    with pytest.raises(TypeError):
        counter.increment("a", 1.5)
    with pytest.raises(quiver.RangeError):
        counter.increment("big", 2**63 - 1)
        counter.increment("big", 1)
    assert counter.get("big") == 2**63 - 1
    with pytest.raises(quiver.InvalidArgumentError, match="509"):
        counter.increment("x" * 600)
    with pytest.raises(ValueError):
        SafeCounter.make("processes", cache=cache, name="")
    other = quiver.Cache.open(os.path.join(tmpdir_path, "other"))
    with pytest.raises(ValueError, match="stack"):
        SafeCounter.make("processes", cache=quiver.Cache.stack(cache, other))
    other.close()
    memory = quiver.Cache.memory()  # a memory cache shares within its process only
    m = SafeCounter.make("processes", cache=memory, name="m")
    assert m.increment("a") == 1
    with pytest.raises(TypeError, match="memory cache"):
        pickle.dumps(m)  # a worker's copy would count apart, in its own memory
    memory.close()
    path = cache.path
    cache.close()
    ro = quiver.Cache.open(path, readonly=True)
    assert SafeCounter.make("processes", cache=ro, name="r").get("big") == 2**63 - 1
    with pytest.raises(quiver.ReadOnlyError):
        SafeCounter.make("processes", cache=ro, name="r").increment("a")
    ro.close()


def test_a_counter_bumped_from_another_language(cache):
    """The C API's qv_counter_add, as Lua and C call it, bumps the same entry."""
    counter = SafeCounter.make("processes", cache=cache, name="langs")
    counter.increment("lua", 2)
    code = ("import sys, quiver; from quiver import _quiver as q; c = quiver.Cache.open(sys.argv[1]); "
            "print(q.qv_counter_add(c, 'langs', quiver.encode('lua'), 40))")
    out = subprocess.run([sys.executable, "-c", code, cache.path], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"
    assert counter.get("lua") == 42
