"""DESIGN section 12, row by row, from Python: one call, one policy.

Each memo here counts its runs in a file that every process appends to, so a
test can tell how many times a call ran across threads and processes."""
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings

import pytest

import quiver
from quiver import Cache, cache

sys.path.insert(0, os.path.dirname(__file__))
import _runtime_workers as rw  # noqa: E402


def runs(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


@pytest.fixture
def lmdb(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "cache"))
    yield c
    c.close()


def test_hit_does_not_run(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    with cache(lmdb):
        assert rw.slow(log, 3, 0) == 6
        assert rw.slow(log, 3, 0) == 6
    assert runs(log) == [str(os.getpid())]


def test_concurrent_threads_run_once(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    results, returned = [], []

    def call():
        with cache(lmdb):
            results.append(rw.slow(log, 5, 0.3))
        returned.append(time.monotonic())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [10] * 8
    assert len(runs(log)) == 1
    assert max(returned) - min(returned) < 0.05  # waiters wake with the holder's store, no polling


def test_concurrent_processes_run_once(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        got = pool.starmap(rw.call_slow, [(lmdb.path, log, 7, 1.0)] * 4)
    assert [r for r, _ in got] == [14] * 4
    assert len(runs(log)) == 1
    ends = [t for _, t in got]
    assert max(ends) - min(ends) < 0.05


def test_raise_propagates_stores_nothing_and_waiters_run_it(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    errors = []

    def call():
        with cache(lmdb):
            try:
                rw.failing(log, 0.3)
            except ValueError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["on purpose"] * 3
    assert len(runs(log)) == 3  # the holder failed: each waiter ran it itself
    with cache(lmdb):
        assert not rw.failing.contains(log, 0.3)


def test_unencodable_result_is_returned_with_a_warning(lmdb):
    with cache(lmdb):
        with pytest.warns(quiver.QuiverWarning, match="not stored"):
            lock = rw.make_lock("a")
        assert hasattr(lock, "acquire")
        assert not rw.make_lock.contains("a")


def test_undecodable_entry_is_a_miss_and_replaced(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    with cache(lmdb):
        assert rw.slow(log, 11, 0) == 22
    # a result Python cannot rebuild: a pickle of a class that does not exist
    bogus = quiver.encode(quiver.Tag(0x51560002, b"\x80\x04cno_such_module\nThing\n."))
    call = quiver._quiver.call_encoding(rw.slow.name, None, [log, 11], {})  # secs is ignored
    quiver._quiver.cache_store_raw(lmdb, call, bogus, 0, 0, None)
    with cache(lmdb), pytest.warns(quiver.QuiverWarning, match=r"(?s)could not be decoded.*quiver\.register"):
        assert rw.slow(log, 11, 0) == 22
    assert len(runs(log)) == 2
    with cache(lmdb):
        assert rw.slow.load(log, 11, 0) == 22


def test_dedup_false_runs_each(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")

    def call():
        with cache(lmdb):
            rw.slow_nodedup(log, 1, 0.3)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs(log)) == 3


def test_wait_timeout_then_it_runs_itself(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")

    def call():
        with cache(lmdb):
            rw.slow_impatient(log, 1, 0.6)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs(log)) == 3  # 50 ms of patience against a 600 ms call


def test_wait_timeout_must_not_be_negative():
    with pytest.raises(ValueError, match="wait_timeout"):
        quiver.memo(name="t.neg", wait_timeout=-1)(rw.plain)


def test_rerun_holds_the_lease_and_replaces(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    with cache(lmdb):
        assert rw.slow(log, 2, 0) == 4
        assert rw.slow.rerun(log, 2, 0) == 4
        assert rw.slow(log, 2, 0) == 4
    assert len(runs(log)) == 2


def test_killed_holder_is_taken_over(lmdb, tmpdir_path):
    log = os.path.join(tmpdir_path, "log")
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=rw.call_slow, args=(lmdb.path, log, 9, 60.0))
    holder.start()
    deadline = time.monotonic() + 30
    while not runs(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs(log), "the holder never started"
    started = time.monotonic()
    result = {}

    def wait_then_take_over():
        with cache(lmdb):
            result["v"] = rw.slow(log, 9, 0.0)
        result["t"] = time.monotonic()

    waiter = threading.Thread(target=wait_then_take_over)
    waiter.start()
    time.sleep(0.2)
    os.kill(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    waiter.join(10)
    holder.join()
    assert result.get("v") == 18
    assert result["t"] - killed < 1.0, f"taken over after {result['t'] - killed:.2f} s"
    assert result["t"] - started >= 0.2
    assert len(runs(log)) == 2
