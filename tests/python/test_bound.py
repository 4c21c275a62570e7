"""BoundWrapper: the active cache and metadata travel into threads and
processes, and memoized calls nested inside bound work use the bound cache."""

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import warnings

import pytest

import quiver
from quiver import BoundWrapper

import _workers


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def spawned():
    # spawn: the test process has threads (pools, LMDB), which fork would copy
    # half-way; one worker, so the tasks below share a worker's state.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx,
                                                initializer=_workers.record_warnings) as ex:
        yield ex


def in_thread(fn, *args):
    """Run fn in a new thread (whose context is empty, as every pool
    thread's is) and return its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


def test_a_thread_sees_the_bound_cache_and_not_the_default(lmdb):
    with quiver.cache(lmdb):
        bound = BoundWrapper.bind(_workers.square)
    assert in_thread(bound, 7) == 49
    with quiver.cache(lmdb):
        assert _workers.square.contains(7)
        assert _workers.square.load(7) == 49
    # The thread did not use whatever cache is active here.
    other = quiver.Cache.memory()
    with quiver.cache(other):
        assert not _workers.square.contains(7)


def test_an_unbound_call_in_a_thread_does_not_see_the_callers_cache(lmdb):
    # The reason BoundWrapper exists: a new thread starts with an empty context.
    with quiver.cache(lmdb):
        assert in_thread(lambda: quiver.current_cache() is lmdb) is False
        assert in_thread(BoundWrapper.bind(lambda: quiver.current_cache() is lmdb)) is True


def test_metadata_travels_with_the_binding(lmdb):
    with quiver.cache(lmdb), quiver.meta(project="p1", step=3):
        bound = BoundWrapper.bind(_workers.active_meta)
    seen = in_thread(bound)
    assert seen["project"] == "p1" and seen["step"] == 3


def test_binding_a_bound_callable_keeps_its_own_context(lmdb):
    with quiver.cache(lmdb):
        bound = BoundWrapper.bind(_workers.square)
    with quiver.cache(quiver.Cache.memory()):
        assert BoundWrapper.bind(bound) is bound


def test_memo_bind_is_boundwrapper_bind(lmdb):
    with quiver.cache(lmdb), quiver.meta(project="p2"):
        bound = _workers.square.bind()
    assert isinstance(bound, BoundWrapper)
    assert bound.func is _workers.square and bound.cache is lmdb
    assert bound.meta == {"project": "p2"}
    assert bound.__name__ == "square"


def test_bind_refuses_what_cannot_be_called():
    with pytest.raises(TypeError, match="callable"):
        BoundWrapper.bind(42)


def test_a_pickled_binding_reopens_the_lmdb_cache(lmdb):
    with quiver.cache(lmdb), quiver.meta(project="p3"):
        bound = BoundWrapper.bind(_workers.square)
    copy = pickle.loads(pickle.dumps(bound))
    assert copy.func is _workers.square
    assert copy.cache is lmdb  # unpickled in the process that bound it: the same cache
    assert copy.meta == {"project": "p3"}
    assert copy(9) == 81
    with quiver.cache(lmdb):
        assert _workers.square.load(9) == 81


def test_a_memory_cache_pickled_and_unpickled_here_is_the_same_cache():
    mem = quiver.Cache.memory()
    with quiver.cache(mem):
        bound = BoundWrapper.bind(_workers.square)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: nothing crossed
        copy = pickle.loads(pickle.dumps(bound))
    assert copy.cache is mem
    assert copy(10) == 100
    with quiver.cache(mem):
        assert _workers.square.load(10) == 100


def test_a_process_pool_stores_into_the_bound_cache(lmdb, spawned):
    with quiver.cache(lmdb):
        futures = [spawned.submit(BoundWrapper.bind(_workers.square), x) for x in range(5)]
        assert [f.result() for f in futures] == [x * x for x in range(5)]
        # Stored by the worker, read here: the cache crossed the process boundary.
        for x in range(5):
            assert _workers.square.load(x) == x * x
        # Nothing ran here: every call was the worker's.
        assert ("square", 3) not in _workers.ran


def test_nested_memoized_calls_in_a_worker_use_the_bound_cache(lmdb, spawned):
    with quiver.cache(lmdb):
        worker_pid, value = spawned.submit(BoundWrapper.bind(_workers.via_inner), 11).result()
        assert worker_pid != os.getpid()
        assert value == {"x": 11, "pid": worker_pid}
        assert _workers.inner.load(11) == value

        stored = spawned.submit(BoundWrapper.bind(_workers.outer), 12).result()
        assert stored[1] != os.getpid()
        assert _workers.outer.load(12) == stored
        assert _workers.inner.load(12) == stored[0]


def test_metadata_reaches_the_worker_process(lmdb, spawned):
    with quiver.cache(lmdb), quiver.meta(project="remote"):
        seen = spawned.submit(BoundWrapper.bind(_workers.active_meta)).result()
    assert seen["project"] == "remote"


def test_a_memory_cache_warns_in_another_process_and_shares_nothing(spawned):
    mem = quiver.Cache.memory()
    with quiver.cache(mem):
        results = [spawned.submit(BoundWrapper.bind(_workers.square), 21).result() for _ in range(3)]
        assert results == [441] * 3
        # The worker's cache was its own: nothing came back into this one.
        assert not _workers.square.contains(21)
    warned = [m for cat, m in spawned.submit(_workers.recorded_warnings).result() if cat == "QuiverWarning"]
    # Once for the worker, not once per task.
    assert len(warned) == 1, warned
    assert "memory" in warned[0]
