"""quiver.parallel as cotengra, loky and vayu users know it: the ray backend,
"auto" remembering a backend, no pools inside workers, the pool helpers,
loky's reusable-executor semantics (and forked children that never hang), and
the Runner's executor_cls, report_exceptions and progress lines."""

import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import quiver
from quiver import parallel

import _parallel_workers as w

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def forget_auto():
    parallel._here().auto = None
    yield
    parallel._here().auto = None


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


def pids_of(ex, n, seconds=0.3):
    return {f.result(timeout=60) for f in [ex.submit(w.nap, seconds) for _ in range(n)]}


# -- loky's reusable executor ---------------------------------------------------

def test_processes_resize_when_max_workers_changes():
    one = parallel.get_executor("processes", max_workers=1)
    assert one.executor._max_workers == 1
    assert len(pids_of(one, 2)) == 1
    two = parallel.get_executor("processes", max_workers=2)
    assert two is one and one.executor._max_workers == 2
    assert len(pids_of(two, 4, 0.5)) == 2
    # An int is the same pool, resized.
    assert parallel.get_executor(1) is one and one.executor._max_workers == 1


def test_idle_workers_exit_after_timeout():
    ex = parallel.get_executor("processes", max_workers=1, timeout=1)
    first = ex.submit(w.pid).result(timeout=60)
    assert ex.submit(w.pid).result(timeout=60) == first  # still warm
    time.sleep(3)
    assert ex.submit(w.pid).result(timeout=60) != first  # the idle worker left; a new one came


def test_other_arguments_or_reuse_false_make_a_new_pool():
    a = parallel.get_executor("processes", max_workers=1, env={"QV_L1_ENV": "one"})
    assert a.submit(w.env, "QV_L1_ENV").result(timeout=60) == "one"
    b = parallel.get_executor("processes", max_workers=1, env={"QV_L1_ENV": "two"})
    assert b is not a and b.submit(w.env, "QV_L1_ENV").result(timeout=60) == "two"
    assert parallel.get_executor("processes", max_workers=1, env={"QV_L1_ENV": "two"}) is b
    c = parallel.get_executor("processes", max_workers=1, env={"QV_L1_ENV": "two"}, reuse=False)
    assert c is not b
    with pytest.raises(RuntimeError):
        b.submit(w.pid)
    d = parallel.get_executor("processes", max_workers=1, initializer=w.init, initargs=("ready",))
    assert d.submit(w.initialized_with).result(timeout=60) == ["ready"]


def test_kill_workers_replaces_a_busy_pool():
    ex = parallel.get_executor("processes", max_workers=1)
    busy = ex.submit(w.nap, 60)
    time.sleep(1)
    started = time.monotonic()
    again = parallel.get_executor("processes", max_workers=1, kill_workers=True)
    assert time.monotonic() - started < 15
    assert again is not ex
    with pytest.raises(Exception):
        busy.result(timeout=15)
    assert again.submit(w.add, 1, 2).result(timeout=60) == 3
    # Idle, kill_workers changes nothing.
    assert parallel.get_executor("processes", max_workers=1, kill_workers=True) is again


def test_bad_process_options_are_refused():
    with pytest.raises(ValueError):
        parallel.get_executor("processes", max_workers=0)
    with pytest.raises(ValueError):
        parallel.get_executor("processes", reuse="sometimes")
    with pytest.raises(TypeError):
        parallel.get_executor("executorlib", max_workers=2)


def test_a_forked_child_of_a_warm_pool_never_hangs():
    ex = parallel.get_executor("processes", max_workers=2)
    assert len(pids_of(ex, 2)) >= 1  # warm: workers and manager thread running
    read, write = os.pipe()
    started = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            mine = parallel.get_executor("processes", max_workers=2)
            fresh = mine is not ex and mine.executor is not ex.executor
            ran = mine.submit(w.add, 20, 22).result(timeout=20)
            os.write(write, b"fresh %d" % ran if fresh else b"reused")
            mine.shutdown(wait=True)
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    while True:  # never hang the test either
        done, _ = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > 30:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the forked child hung in get_executor")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    with os.fdopen(read, "rb") as f:
        assert f.read() == b"fresh 42"
    assert elapsed < 15, elapsed
    # The parent's pool is untouched.
    assert parallel.get_executor("processes", max_workers=2) is ex
    assert ex.submit(w.add, 1, 1).result(timeout=60) == 2


def test_a_pid_guard_drops_state_no_fork_hook_saw():
    threads = parallel.get_executor("threads")
    parallel.get_executor("processes")
    state = parallel._here()
    assert state.auto == "processes"
    state.pid = -1  # as if this process were a child that inherited it
    fresh = parallel.get_executor("threads")
    assert fresh is not threads and parallel._here() is not state
    assert parallel._here().auto is None
    assert fresh.submit(w.add, 2, 2).result() == 4
    threads.shutdown()
    for wrapped in state.pools.values():
        wrapped.shutdown()


# -- "auto" ----------------------------------------------------------------------

@pytest.mark.skipif(parallel._cpus() < 2, reason="auto is serial on one CPU")
def test_auto_remembers_the_last_persistent_backend_but_not_threads():
    distributed = pytest.importorskip("distributed")
    assert type(parallel.get_executor("auto").executor).__module__.startswith("loky")
    dask = parallel.get_executor("dask")
    try:
        assert isinstance(dask.executor, distributed.Client)
        assert parallel.get_executor("auto").executor is dask.executor
        parallel.get_executor("threads")
        assert parallel.get_executor("auto").executor is dask.executor  # threads are never remembered
        processes = parallel.get_executor("processes", max_workers=1)
        assert parallel.get_executor("auto") is processes
        assert processes.executor._max_workers == 1  # auto takes the pool as it is
        parallel.get_executor("dask")
        assert parallel.get_executor("auto").executor is dask.executor
    finally:
        dask.executor.close()
    # A closed client is not started again by auto (cotengra's rule): the local default.
    assert type(parallel.get_executor("auto").executor).__module__.startswith("loky")
    parallel.get_executor(1)  # an int is the process pool, remembered as one
    assert parallel._here().auto == "processes"


def test_auto_finds_a_running_dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        ex = parallel.get_executor("auto")
        assert ex.executor is client
        assert parallel.get_n_workers(ex) == 2
        assert parallel.should_nest(ex) and parallel.can_scatter(ex)
        # Inside a task on its in-process worker, auto is serial.
        assert ex.submit(w.auto_kind).result(timeout=60) == "SerialExecutor"
        data = parallel.scatter(ex, [1, 2, 3])
        assert isinstance(data, distributed.Future)
        assert parallel.submit(ex, w.total, data).result(timeout=60) == 6
        assert parallel.submit(client, w.total, data).result(timeout=60) == 6
        # Not pure unless asked: equal submits are separate tasks.
        assert parallel.submit(ex, w.pid).key != parallel.submit(ex, w.pid).key


def test_dask_joins_the_scheduler_its_config_names():
    distributed = pytest.importorskip("distributed")
    import dask
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with dask.config.set({"scheduler-address": cluster.scheduler_address}):
            ex = parallel.get_executor("dask")
        try:
            assert ex.executor.scheduler.address == cluster.scheduler_address
            assert ex.submit(w.add, 2, 5).result(timeout=60) == 7
        finally:
            ex.executor.close()


def test_auto_is_serial_inside_any_task_even_a_thread():
    assert parallel.get_executor("threads").submit(w.auto_kind).result() == "SerialExecutor"
    assert parallel.get_executor(False).submit(w.auto_kind).result() == "SerialExecutor"
    assert parallel.get_executor("processes").submit(w.auto_kind).result(timeout=60) == "SerialExecutor"
    assert not parallel.in_worker()


# -- helpers on local pools --------------------------------------------------------

def test_helpers_on_local_pools():
    assert parallel.get_n_workers(False) == 1
    assert parallel.get_n_workers(parallel.get_executor("processes", max_workers=2)) == 2
    assert parallel.get_n_workers(concurrent.futures.ThreadPoolExecutor(3)) == 3
    assert parallel.get_n_workers("threads") == parallel.get_executor("threads").executor._max_workers
    obj = {"big": list(range(10))}
    for spec in (False, "threads", "processes"):
        assert not parallel.should_nest(spec) and not parallel.can_scatter(spec)
        assert parallel.scatter(spec, obj) is obj
        assert parallel.submit(spec, w.total, obj["big"]).result(timeout=60) == 45


def test_submit_keeps_hits_off_the_pool(lmdb):
    with quiver.cache(lmdb):
        first = parallel.submit("processes", w.cube, 3).result(timeout=60)
        assert first["pid"] != os.getpid()
        hit = parallel.submit("processes", w.cube, 3)
        assert hit.done() and hit.result() == first


# -- ray ----------------------------------------------------------------------------

def test_ray(lmdb, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        # Discovery: the runtime this process runs, found and not owned.
        ex = parallel.get_executor("auto")
        assert isinstance(ex.executor, parallel.RayExecutor) and not ex.executor._owned
        assert parallel.get_executor("ray") is ex
        assert parallel.get_n_workers(ex) == 2
        assert parallel.should_nest(ex) and parallel.can_scatter(ex)

        future = ex.submit(w.add, 1, 2)
        assert isinstance(future, concurrent.futures.Future)
        seen = []
        future.add_done_callback(seen.append)
        assert future.result(timeout=60) == 3 and future.done()
        assert seen == [future] or (time.sleep(0.5) or seen == [future])
        assert ex.submit(w.pid).result(timeout=60) != os.getpid()

        with pytest.raises(ValueError, match="ray boom"):
            ex.submit(w.fail, "ray boom").result(timeout=60)

        slow = ex.submit(w.nap, 30)
        time.sleep(0.5)
        assert slow.cancel() and slow.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            slow.result(timeout=1)

        ref = parallel.scatter(ex, list(range(100)))
        assert isinstance(ref, ray.ObjectRef)
        assert parallel.submit(ex, w.total, ref).result(timeout=60) == 4950

        done = concurrent.futures.wait([ex.submit(w.add, i, i) for i in range(4)], timeout=60).done
        assert sorted(f.result() for f in done) == [0, 2, 4, 6]

        # Inside a ray task, auto is serial.
        assert ex.submit(w.auto_kind).result(timeout=60) == "SerialExecutor"

        # Misses run on ray into this cache; hits never reach ray.
        with quiver.cache(lmdb):
            stored = ex.submit(w.cube, 5).result(timeout=60)
            assert stored["cube"] == 125 and w.cube.load(5) == stored
            hit = ex.submit(w.cube, 5)
            assert type(hit) is concurrent.futures.Future and hit.result() == stored
        assert parallel.get_executor("auto") is ex  # remembered

        # A forked child cannot use its parent's ray connection: an error at once, never a hang.
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                assert not isinstance(parallel.get_executor("auto").executor, parallel.RayExecutor)
                parallel.get_executor("ray")
                os.write(write, b"used the parent's")
            except RuntimeError as exc:
                os.write(write, b"refused" if "fork of a ray driver" in str(exc) else repr(exc).encode())
            except BaseException as exc:
                os.write(write, repr(exc).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            assert f.read() == b"refused"
        os.waitpid(child, 0)
    finally:
        ray.shutdown()
    # No runtime any more: get_executor starts one of its own, and its shutdown stops it.
    own = parallel.get_executor("ray", max_workers=2)
    try:
        assert own is not ex and own.executor._owned and ray.is_initialized()
        assert own.submit(w.add, 2, 3).result(timeout=60) == 5
    finally:
        own.shutdown()
    assert not ray.is_initialized()


# -- Runner -----------------------------------------------------------------------

def test_runner_executor_cls_wins_over_parallel():
    runner = quiver.Runner(parallel="processes", executor_cls=concurrent.futures.ThreadPoolExecutor,
                           n_workers=2, initializer=w.init, initargs=("thread",), progress=False)
    for i in range(4):
        runner.add(i, w.pid)
    runner.add("init", w.initialized_with)
    results = runner.run()
    assert {results[i] for i in range(4)} == {os.getpid()}
    assert "thread" in results["init"]


@pytest.mark.parametrize("cls", ["stdlib", "loky"])
def test_runner_with_a_process_executor_cls(cls):
    if cls == "loky":
        loky = pytest.importorskip("loky")
        executor_cls = loky.ProcessPoolExecutor
    else:
        executor_cls = concurrent.futures.ProcessPoolExecutor
    runner = quiver.Runner(executor_cls=executor_cls, n_workers=2, initializer=w.init, initargs=(cls,),
                           progress=False)
    runner.add("pid", w.pid)
    runner.add("init", w.initialized_with)
    results = runner.run()
    # (the standard pool forks on Linux: its workers start with this process's list)
    assert results["pid"] != os.getpid() and results["init"][-1:] == [cls]


def test_runner_n_workers_and_initializer_go_to_its_pool():
    runner = quiver.Runner(parallel="processes", n_workers=1, initializer=w.init, initargs=("proc",),
                           progress=False)
    runner.add("a", w.initialized_with)
    runner.add("b", w.pid)
    results = runner.run()
    assert results["a"] == ["proc"]
    assert parallel.get_executor("processes", max_workers=1, initializer=w.init,
                                 initargs=("proc",)).executor._max_workers == 1


def test_report_exceptions_logs_each_failure_and_keeps_it(caplog):
    runner = quiver.Runner(parallel="threads", progress=False)
    runner.add("good", w.add, 1, 1)
    runner.add("bad", w.fail, "logged")
    with caplog.at_level(logging.ERROR, logger="quiver"):
        results = runner.run()
    assert results["good"] == 2 and isinstance(results["bad"], ValueError)
    [record] = [r for r in caplog.records if r.name == "quiver"]
    assert "'bad'" in record.getMessage() and "logged" in record.getMessage()
    assert record.exc_info[0] is ValueError

    caplog.clear()
    quiet = quiver.Runner(parallel="threads", progress=False, report_exceptions=False)
    quiet.add("bad", w.fail, "silent")
    with caplog.at_level(logging.ERROR, logger="quiver"):
        assert isinstance(quiet.run()["bad"], ValueError)
    assert not [r for r in caplog.records if r.name == "quiver"]


def test_print_progress_every_prints_plain_lines_off_a_terminal(capfd):
    runner = quiver.Runner(parallel="threads", n_workers=2, print_progress_every=0.2)
    for i in range(6):
        runner.add(i, w.nap, 0.25)
    runner.add("bad", w.fail, "x")
    runner.run()
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) >= 3, lines
    assert "\r" not in "".join(lines)
    assert lines[-1].startswith("7/7 (100%) ok 6, failed 1, ") and "exec/s" in lines[-1], lines[-1]


def test_progress_on_a_terminal_shows_successes_failures_and_rate():
    pytest.importorskip("tqdm")
    from test_runner import run_on_a_terminal
    shown = run_on_a_terminal("""
        import quiver, _parallel_workers as w
        runner = quiver.Runner(parallel=False, report_exceptions=False)
        runner.add("a", w.add, 1, 1)
        runner.add("b", w.fail, "x")
        runner.run()
    """)
    assert "2/2" in shown and "exec/s" in shown and "ok=1" in shown and "failed=1" in shown


def test_ctrl_c_cancels_what_has_not_started_and_reraises(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    code = textwrap.dedent(f"""
        import quiver, _parallel_workers as w
        runner = quiver.Runner(parallel="processes", n_workers=2, progress=False)
        for i in range(30):
            runner.add(i, w.mark_and_nap, {str(marks)!r}, i, 0.5)
        runner.run()
        print("finished")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    deadline = time.monotonic() + 60
    while not os.listdir(marks):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err and b"finished" not in out, err
    time.sleep(1)
    assert len(os.listdir(marks)) < 10, sorted(os.listdir(marks))
