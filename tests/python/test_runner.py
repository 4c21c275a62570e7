"""quiver.Runner: keyed results and exceptions, one shot, hits kept off the
pool, a progress bar only on a terminal, and Ctrl-C."""

import concurrent.futures
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

import quiver

import _workers

HERE = os.path.dirname(os.path.abspath(__file__))


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.mark.parametrize("parallel", [False, "threads", 2])
def test_results_and_exceptions_by_key(parallel):
    runner = quiver.Runner(parallel=parallel, progress=False)
    runner.add("three", _workers.add, 1, 2)
    runner.add(("tuple", 1), _workers.add, x=10, y=20)
    runner.add("bad", _workers.fail, "no good")
    assert len(runner) == 3
    results = runner.run()
    assert list(results) == ["three", ("tuple", 1), "bad"]
    assert results["three"] == 3 and results[("tuple", 1)] == 30
    assert isinstance(results["bad"], ValueError) and str(results["bad"]) == "no good"


def test_a_process_pool_runs_the_tasks_elsewhere():
    runner = quiver.Runner(parallel=2, progress=False)
    for i in range(4):
        runner.add(i, _workers.pid)
    assert os.getpid() not in runner.run().values()


def test_one_shot():
    runner = quiver.Runner(parallel=False, progress=False)
    runner.add("a", _workers.add, 1, 1)
    assert runner.run() == {"a": 2}
    with pytest.raises(RuntimeError, match="already run"):
        runner.run()
    with pytest.raises(RuntimeError, match="already run"):
        runner.add("b", _workers.add, 2, 2)


def test_bad_tasks_are_refused_at_add():
    runner = quiver.Runner(parallel=False, progress=False)
    runner.add("a", _workers.add, 1, 1)
    with pytest.raises(ValueError, match="'a'"):
        runner.add("a", _workers.add, 2, 2)
    with pytest.raises(TypeError, match="callable"):
        runner.add("b", 42)


def test_an_empty_runner_returns_nothing():
    assert quiver.Runner(parallel=False, progress=False).run() == {}


def test_hits_never_reach_the_executor(lmdb):
    pool = CountingExecutor()
    try:
        with quiver.cache(lmdb):
            for x in (1, 2):
                _workers.square(x)
            runner = quiver.Runner(parallel=pool, progress=False)
            for x in (1, 2, 3, 4):
                runner.add(x, _workers.square, x)
            assert runner.run() == {1: 1, 2: 4, 3: 9, 4: 16}
            assert pool.submitted == 2
            # The misses ran bound: stored in this cache by the pool's threads.
            assert _workers.square.load(4) == 16
    finally:
        pool.shutdown()


def test_no_progress_bar_when_stderr_is_not_a_terminal(capfd):
    runner = quiver.Runner(parallel=False, progress=True)
    runner.add("a", _workers.add, 1, 1)
    runner.run()
    assert capfd.readouterr().err == ""


def run_on_a_terminal(code):
    """Run code in a new interpreter whose stderr is a terminal; return what
    it wrote there."""
    master, slave = pty.openpty()
    # A terminal of 24 rows and 100 columns (a new pty has none: 0 x 0).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


RUN_THREE = """
    import quiver, _workers
    runner = quiver.Runner(parallel=False, progress={progress})
    for i in range(3):
        runner.add(i, _workers.add, i, 1)
    assert runner.run() == {{0: 1, 1: 2, 2: 3}}
"""


def test_progress_on_a_terminal_uses_tqdm():
    pytest.importorskip("tqdm", reason="tqdm is not installed")
    shown = run_on_a_terminal(RUN_THREE.format(progress=True))
    assert "3/3" in shown and "100%" in shown


def test_progress_without_tqdm_is_one_rewritten_line():
    shown = run_on_a_terminal("import sys; sys.modules['tqdm'] = None\n" + textwrap.dedent(
        RUN_THREE.format(progress=True)))
    assert shown.startswith("\r0/3 [")
    assert "\r3/3 [" + "#" * 30 + "]" in shown
    assert shown.count("\n") == 1 and shown.endswith("\n")


def test_progress_false_shows_nothing_even_on_a_terminal():
    assert run_on_a_terminal(RUN_THREE.format(progress=False)) == ""


def test_ctrl_c_in_a_serial_run_stops_it_and_reraises():
    del _workers.ran[:]
    runner = quiver.Runner(parallel=False, progress=False)
    runner.add("first", _workers.nap, "first", 0)
    runner.add("ctrl-c", _workers.interrupt, "ctrl-c")
    runner.add("never", _workers.nap, "never", 0)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert _workers.ran == ["first", "ctrl-c"]
    with pytest.raises(RuntimeError, match="already run"):
        runner.run()


def test_ctrl_c_while_a_pool_works_cancels_what_has_not_started():
    del _workers.ran[:]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    try:
        runner = quiver.Runner(parallel=pool, progress=False)
        runner.add("ctrl-c", _workers.interrupt, "ctrl-c")
        for i in range(20):
            runner.add(i, _workers.nap, i, 0.2)
        with pytest.raises(KeyboardInterrupt):
            runner.run()
    finally:
        pool.shutdown(wait=True)  # waits for every task still queued: none should be
    # Only the tasks already running when Ctrl-C came finished; the rest were
    # cancelled (without that, all 21 would have run by now).
    assert "ctrl-c" in _workers.ran
    assert len(_workers.ran) <= 4, _workers.ran
