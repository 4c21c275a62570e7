"""quiver.parallel.get_executor: every spec, pools reused, serial inside
workers, and a forked child never touching its parent's pools."""

import concurrent.futures
import os
import threading

import pytest

import quiver
from quiver import parallel
from quiver.bound import WrappedExecutor

import _workers

HERE = os.path.dirname(os.path.abspath(__file__))
TWO_CPUS = pytest.mark.skipif(parallel._cpus() < 2, reason='"auto" is serial on one CPU')


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


def test_false_and_none_run_in_the_callers_thread_at_submit():
    for spec in (False, None):
        ex = parallel.get_executor(spec)
        assert isinstance(ex, WrappedExecutor)
        assert isinstance(ex.executor, parallel.SerialExecutor)
        future = ex.submit(_workers.thread_id)
        assert future.done() and future.result() == threading.get_ident()
    assert parallel.get_executor(False) is parallel.get_executor(None)


def test_serial_keeps_a_task_exception_in_its_future():
    future = parallel.get_executor(False).submit(_workers.fail, "boom")
    with pytest.raises(ValueError, match="boom"):
        future.result()


def test_threads_are_one_reused_pool():
    ex = parallel.get_executor("threads")
    assert isinstance(ex.executor, concurrent.futures.ThreadPoolExecutor)
    assert parallel.get_executor("threads") is ex
    assert ex.submit(_workers.thread_id).result() != threading.get_ident()


def test_a_pool_shut_down_is_replaced():
    ex = parallel.get_executor("threads")
    ex.shutdown()
    again = parallel.get_executor("threads")
    assert again is not ex
    assert again.submit(_workers.add, 2, 3).result() == 5


def test_processes_run_elsewhere_and_are_reused():
    ex = parallel.get_executor("processes")
    assert ex.submit(_workers.pid).result(timeout=60) != os.getpid()
    assert parallel.get_executor("processes") is ex
    assert parallel.get_executor("loky") is ex
    assert type(ex.executor).__module__.startswith("loky")


def test_a_number_is_a_process_pool_of_that_many_workers():
    ex = parallel.get_executor(1)
    assert ex.executor._max_workers == 1
    assert parallel.get_executor(1) is ex
    assert ex.submit(_workers.pid).result(timeout=60) != os.getpid()


def test_a_broken_process_pool_is_replaced():
    ex = parallel.get_executor(1)
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):
        ex.submit(_workers.die).result(timeout=60)
    again = parallel.get_executor(1)
    assert again is not ex
    assert again.submit(_workers.add, 1, 1).result(timeout=60) == 2


@TWO_CPUS
def test_auto_is_processes_here_and_true_is_auto():
    ex = parallel.get_executor("auto")
    assert ex is parallel.get_executor(True) is parallel.get_executor("processes")
    assert ex.submit(_workers.pid).result(timeout=60) != os.getpid()


def test_auto_is_serial_inside_a_worker_process():
    kind = parallel.get_executor("processes").submit(_workers.auto_executor_kind).result(timeout=60)
    assert kind == "SerialExecutor"


def test_a_process_pool_carries_the_cache_and_answers_hits_here(lmdb):
    ex = parallel.get_executor("processes")
    with quiver.cache(lmdb):
        assert ex.submit(_workers.square, 13).result(timeout=60) == 169
        assert _workers.square.load(13) == 169
        future = ex.submit(_workers.square, 13)
        # A hit: answered before submit returned, never sent to a worker.
        assert isinstance(future, concurrent.futures.Future) and future.done()
    assert ("square", 13) not in _workers.ran


def test_an_executor_instance_is_wrapped():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ex = parallel.get_executor(pool)
        assert isinstance(ex, WrappedExecutor) and ex.executor is pool
        assert parallel.get_executor(ex) is ex


def test_bad_specs_are_refused_clearly():
    with pytest.raises(ValueError, match="'threads'"):
        parallel.get_executor("thread")
    with pytest.raises(ValueError, match="at least one worker"):
        parallel.get_executor(0)
    with pytest.raises(TypeError, match="float"):
        parallel.get_executor(2.5)
    with pytest.raises(TypeError):
        parallel.get_executor(object())


def test_a_forked_child_never_uses_its_parents_pool():
    parent_pool = parallel.get_executor("threads")
    assert parent_pool.submit(_workers.add, 1, 2).result() == 3
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report, then leave without running pytest's exit
        try:
            ex = parallel.get_executor("threads")
            fresh = ex is not parent_pool and ex.executor is not parent_pool.executor
            ok = ex.submit(_workers.add, 20, 22).result(timeout=20) == 42
            os.write(write, b"fresh" if fresh and ok else b"reused")
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        report = f.read()
    os.waitpid(child, 0)
    assert report == b"fresh"
    # The parent's pool is untouched.
    assert parallel.get_executor("threads") is parent_pool
    assert parent_pool.submit(_workers.add, 3, 4).result() == 7


def test_dask_uses_the_running_client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ex = parallel.get_executor("dask")
        assert ex.executor is client
        assert ex.submit(_workers.add, 4, 5).result(timeout=60) == 9


def test_dask_without_a_client_starts_a_local_one_and_keeps_it():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with pytest.raises(ValueError):
        distributed.get_client()
    ex = parallel.get_executor("dask")
    try:
        assert isinstance(ex.executor, distributed.Client)
        assert ex.submit(_workers.add, 6, 7).result(timeout=60) == 13
        assert parallel.get_executor("dask").executor is ex.executor
    finally:
        ex.executor.close()


def test_executorlib_is_a_single_node_executor(lmdb, monkeypatch):
    executorlib = pytest.importorskip("executorlib", reason="executorlib is not installed")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", HERE + (os.pathsep + path if path else ""))
    ex = parallel.get_executor("executorlib")
    assert isinstance(ex.executor, executorlib.SingleNodeExecutor)
    assert parallel.get_executor("executorlib") is ex
    with quiver.cache(lmdb):
        assert ex.submit(_workers.square, 17).result(timeout=120) == 289
        assert _workers.square.load(17) == 289
    ex.shutdown()
