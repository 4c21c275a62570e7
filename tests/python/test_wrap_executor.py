"""wrap_executor: hits answer without the executor, misses run bound, and
keyword-only parameters of the executor's own submit go to it."""

import concurrent.futures
import os
import threading

import pytest

import quiver
from quiver import BoundWrapper, wrap_executor

import _workers

HERE = os.path.dirname(os.path.abspath(__file__))


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A real thread pool that counts what reaches its submit."""

    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append((fn, args, kwargs))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.fixture
def counting():
    ex = CountingExecutor()
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    # In-process workers start in about a second; the resource lets a test
    # ask for one through submit's own resources= keyword.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None, resources={"slot": 2}) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def test_hits_never_reach_submit(lmdb, counting):
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        assert _workers.square(4) == 16
        future = wrapped.submit(_workers.square, 4)
        assert isinstance(future, concurrent.futures.Future)
        assert future.done() and future.result() == 16
        assert counting.submitted == []


def test_a_miss_is_submitted_bound_and_stored_in_the_callers_cache(lmdb, counting):
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        assert wrapped.submit(_workers.square, 5).result() == 25
        assert len(counting.submitted) == 1
        fn, args, kwargs = counting.submitted[0]
        assert isinstance(fn, BoundWrapper) and fn.cache is lmdb
        assert args == (5,) and kwargs == {}
        # Stored by a pool thread, whose own context is empty.
        assert _workers.square.load(5) == 25
        # Now a hit.
        assert wrapped.submit(_workers.square, 5).result() == 25
        assert len(counting.submitted) == 1


def test_plain_callables_are_bound_too(lmdb, counting):
    # Not memoized, but it calls a memoized function: that call needs the cache.
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        worker_pid, value = wrapped.submit(_workers.via_inner, 6).result()
        assert worker_pid == os.getpid() and value["x"] == 6
        assert _workers.inner.load(6) == value
    assert isinstance(counting.submitted[0][0], BoundWrapper)


def test_a_bound_memoized_function_is_probed_in_its_own_cache(lmdb, counting):
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        _workers.square(8)
        bound = BoundWrapper.bind(_workers.square)
    with quiver.cache(quiver.Cache.memory()):
        assert wrapped.submit(bound, 8).result() == 64
    assert counting.submitted == []


def test_keywords_go_to_the_function_when_submit_has_none_of_its_own(lmdb, counting):
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        assert wrapped.submit(_workers.scaled, 3, factor=4).result() == 12
        assert counting.submitted[0][2] == {"factor": 4}
        assert wrapped.submit(_workers.scaled, 3, factor=4).result() == 12
        assert len(counting.submitted) == 1


def test_wrapping_is_idempotent_and_keeps_the_executor(counting):
    # As fleche's: the executor itself comes back, its submit patched once.
    wrapped = wrap_executor(counting)
    assert wrapped is counting
    submit = counting.submit
    assert wrap_executor(counting) is counting and counting.submit is submit
    assert wrapped._max_workers == 2


def test_the_proxy_passes_attributes_through(counting):
    # The proxy, for get_executor's pools and executors whose submit cannot
    # be replaced.
    wrapped = quiver.bound.WrappedExecutor(counting)
    assert wrap_executor(wrapped) is wrapped
    assert wrapped.executor is counting
    assert wrapped.submitted is counting.submitted
    assert wrapped._max_workers == 2
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute


def test_wrap_refuses_what_has_no_submit():
    with pytest.raises(TypeError, match="submit"):
        wrap_executor(object())


def test_map_skips_the_executor_for_hits_and_keeps_order(lmdb, counting):
    wrapped = wrap_executor(counting)
    with quiver.cache(lmdb):
        _workers.square(2)
        assert list(wrapped.map(_workers.square, [1, 2, 3], timeout=30)) == [1, 4, 9]
    assert [args for _, args, _ in counting.submitted] == [(1,), (3,)]


def test_map_of_a_plain_function(counting):
    wrapped = wrap_executor(counting)
    assert list(wrapped.map(_workers.add, [1, 2], [10, 20])) == [11, 22]


def test_context_manager_shuts_the_wrapped_executor_down():
    with wrap_executor(concurrent.futures.ThreadPoolExecutor(1)) as wrapped:
        assert wrapped.submit(_workers.add, 1, 2).result() == 3
    with pytest.raises(RuntimeError):
        wrapped.submit(_workers.add, 1, 2)


def test_unencodable_arguments_are_submitted_not_probed(counting):
    wrapped = wrap_executor(counting)
    lock = threading.Lock()
    # A lock cannot be encoded: the probe reports a miss and the call runs.
    assert wrapped.submit(_workers.square_of_len, [lock, lock]).result() == 4
    assert len(counting.submitted) == 1


def test_dask_keywords_go_to_submit(lmdb, dask_client):
    wrapped = wrap_executor(dask_client)
    with quiver.cache(lmdb):
        future = wrapped.submit(_workers.scaled, 5, factor=3, key="scaled-5", pure=False,
                                resources={"slot": 1})
        assert future.key == "scaled-5"
        assert future.result(timeout=60) == 15
        assert _workers.scaled.load(5, factor=3) == 15
        # The hit is answered here, as a plain completed future.
        again = wrapped.submit(_workers.scaled, 5, factor=3, key="scaled-5-again")
        assert isinstance(again, concurrent.futures.Future) and again.result() == 15


def test_dask_in_process_workers_share_a_memory_cache(dask_client):
    # dask pickles tasks even for workers in this process: the binding must
    # come back to the same memory cache, not a private copy.
    mem = quiver.Cache.memory()
    wrapped = wrap_executor(dask_client)
    with quiver.cache(mem):
        assert wrapped.submit(_workers.square, 31, pure=False).result(timeout=60) == 961
        assert _workers.square.load(31) == 961


def test_dask_client_methods_pass_through(dask_client):
    wrapped = wrap_executor(dask_client)
    assert wrapped is dask_client
    assert wrapped.scheduler_info()["type"] == "Scheduler"


def test_executorlib_resource_dict_goes_to_submit(lmdb, monkeypatch):
    executorlib = pytest.importorskip("executorlib", reason="executorlib is not installed")
    # executorlib starts each worker as a new interpreter: it must find this
    # directory's modules to unpickle the task.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", HERE + (os.pathsep + path if path else ""))
    with executorlib.SingleNodeExecutor(max_workers=1) as raw, quiver.cache(lmdb):
        wrapped = wrap_executor(raw)
        future = wrapped.submit(_workers.scaled, 7, factor=2, resource_dict={"cores": 1})
        assert future.result(timeout=120) == 14
        # Stored by the executorlib worker process into this LMDB cache.
        assert _workers.scaled.load(7, factor=2) == 14
        assert wrapped.submit(_workers.scaled, 7, factor=2, resource_dict={"cores": 1}).done()
        # A plain function, bound: its nested memoized call ran in the worker
        # process and stored there.
        worker_pid, value = wrapped.submit(_workers.via_inner, 8, resource_dict={"cores": 1}).result(timeout=120)
        assert worker_pid != os.getpid() and value == {"x": 8, "pid": worker_pid}
        assert _workers.inner.load(8) == value
