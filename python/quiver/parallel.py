"""Executors by name, reused across calls, and a Runner for keyed tasks.

`get_executor(spec)` turns a short spec into a wrapped executor (see
`quiver.wrap_executor`: hits never reach it, misses carry the caller's cache):

    False, None    a serial executor: each task runs in the caller's thread, at submit
    True, "auto"   processes when this machine has more than one CPU and this is
                   not already a worker process; serial otherwise (no pools in pools)
    "threads"      a thread pool
    "processes"    a process pool (loky's, see below); "loky" is the same pool
    an int n       a process pool of n workers
    "dask"         the running distributed.Client, else a local in-process one
    "executorlib"  executorlib's SingleNodeExecutor
    an executor    that executor, wrapped

The answer is always a `quiver.bound.WrappedExecutor` proxy, whose `executor` is
the pool: the executor itself is left as it was (`quiver.wrap_executor` is the
one that patches an executor's submit in place).

Pools are made on first use and reused by every later call, in every thread;
one that was shut down or broke (a worker died) is replaced. A forked child
never uses its parent's pools: their threads and pipes stayed behind.

Process pools are loky's `ProcessPoolExecutor` rather than the standard
library's: the standard one forks by default on Linux, which is unsafe in a
process that has threads (LMDB readers, pools, dask); loky starts clean workers,
pickles with cloudpickle (functions from `__main__` and notebooks work),
replaces crashed workers with a clear error, and lets idle workers exit. The
pool is ours rather than loky's `get_reusable_executor`, which keeps one per
thread and would hand a forked child its parent's. Without loky installed,
"processes" uses the standard pool with the "forkserver" start method.
"""

import atexit
import concurrent.futures
import multiprocessing
import os
import queue
import sys
import threading
import time

from . import bound
from .bound import WrappedExecutor

__all__ = ["Runner", "SerialExecutor", "get_executor", "in_worker"]

# Idle process workers exit after this long, and are started again on demand.
_IDLE_SECONDS = 60.0


class SerialExecutor(concurrent.futures.Executor):
    """Runs each task in the caller's thread, inside `submit`, and returns its
    future already done. KeyboardInterrupt and SystemExit propagate."""

    def __init__(self):
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shutdown = True


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def in_worker():
    """True in a process that runs tasks for another: a multiprocessing or
    loky child, a dask worker process, or any process that has received bound
    work (executorlib's workers and the like)."""
    return bound.crossed() or multiprocessing.parent_process() is not None


_pools = {}
_pools_lock = threading.Lock()
# A forked child drops its parent's pools without shutting them down (that
# would join threads that do not exist here, and close what the parent still
# uses), and keeps them referenced so that no finalizer runs on them either.
_abandoned = []


def _after_fork_in_child():
    global _pools_lock
    _abandoned.extend(_pools.values())
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _shutdown_pools():
    # Run where concurrent.futures shuts its own pools down: before the
    # interpreter joins non-daemon threads, which would otherwise wait forever
    # on the threads of a pool nobody shut down (executorlib's). Process
    # pools left to the teardown complain from their threads' callbacks, after
    # the modules those need are gone. (dask's Client closes itself at exit.)
    with _pools_lock:
        pools = [wrapped for key, wrapped in _pools.items() if key != "dask"]
        _pools.clear()
    for wrapped in pools:
        if _alive(wrapped):
            wrapped.shutdown()


try:
    threading._register_atexit(_shutdown_pools)
except (AttributeError, RuntimeError):  # not CPython 3.9+, or already shutting down
    atexit.register(_shutdown_pools)


def _alive(wrapped):
    if wrapped._closed:
        return False
    pool = wrapped.executor
    flags = getattr(pool, "_flags", None)  # loky keeps its state here
    if flags is not None:
        return not (flags.shutdown or flags.broken)
    # The standard library's pools: shut down, or broken by a dead worker or
    # a failed initializer, they refuse every later task.
    return not (getattr(pool, "_shutdown", False) or getattr(pool, "_shutdown_thread", False)
                or getattr(pool, "_broken", False))


def _process_pool(workers):
    try:
        import loky
    except ImportError:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))
    return loky.ProcessPoolExecutor(max_workers=workers, timeout=_IDLE_SECONDS)


def _executorlib():
    import executorlib
    return executorlib.SingleNodeExecutor(max_workers=_cpus())


def _shared(key, make):
    with _pools_lock:
        wrapped = _pools.get(key)
        if wrapped is None or not _alive(wrapped):
            wrapped = _pools[key] = WrappedExecutor(make())
        return wrapped


def _dask():
    try:
        import distributed
    except ImportError:
        raise ImportError('get_executor("dask") needs the distributed package (pip install distributed)') from None
    try:
        # A proxy: the user's own client keeps its submit.
        return WrappedExecutor(distributed.get_client())
    except ValueError:  # no client running: start a local one, and keep it for later calls
        pass
    with _pools_lock:
        wrapped = _pools.get("dask")
        if wrapped is None or wrapped._closed or wrapped.executor.status in ("closing", "closed"):
            client = distributed.Client(processes=False, dashboard_address=None)
            wrapped = _pools["dask"] = WrappedExecutor(client)
        return wrapped


_NAMES = ("threads", "processes", "loky", "dask", "executorlib", "auto")


def get_executor(spec="auto"):
    """A wrapped executor for `spec` (see the module's documentation)."""
    if isinstance(spec, WrappedExecutor):
        return spec
    if spec is None or spec is False:
        return _shared("serial", SerialExecutor)
    if spec is True or spec == "auto":
        if in_worker() or _cpus() < 2:
            return _shared("serial", SerialExecutor)
        return _shared(("processes", _cpus()), lambda: _process_pool(_cpus()))
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"get_executor needs at least one worker, not {spec}")
        return _shared(("processes", spec), lambda: _process_pool(spec))
    if isinstance(spec, str):
        if spec == "threads":
            return _shared("threads", lambda: concurrent.futures.ThreadPoolExecutor(thread_name_prefix="quiver"))
        if spec == "loky":
            try:
                import loky  # noqa: F401  (the pool is the same as "processes"; loky is required here)
            except ImportError:
                raise ImportError('get_executor("loky") needs the loky package (pip install loky)') from None
            spec = "processes"
        if spec == "processes":
            return _shared(("processes", _cpus()), lambda: _process_pool(_cpus()))
        if spec == "dask":
            return _dask()
        if spec == "executorlib":
            return _shared("executorlib", _executorlib)
        raise ValueError(f"unknown executor {spec!r}: expected one of {', '.join(map(repr, _NAMES))}, "
                         "True, False, None, a number of workers or an executor")
    if callable(getattr(spec, "submit", None)):
        return WrappedExecutor(spec)
    raise TypeError(f"get_executor takes a name, a bool, None, a number of workers or an executor, "
                    f"not {type(spec).__name__}")


class _Line:
    """One self-rewriting stderr line, for when tqdm is not installed."""

    def __init__(self, total, stream):
        self._total = total
        self._stream = stream
        self._done = 0
        self._start = time.monotonic()
        self._shown = 0.0
        self._draw()

    def update(self, n=1):
        self._done += n
        now = time.monotonic()
        if now - self._shown >= 0.1 or self._done == self._total:
            self._draw(now)

    def _draw(self, now=None):
        now = time.monotonic() if now is None else now
        self._shown = now
        width = 30
        filled = width * self._done // self._total if self._total else width
        bar = "#" * filled + "-" * (width - filled)
        self._stream.write(f"\r{self._done}/{self._total} [{bar}] {now - self._start:.1f}s")
        self._stream.flush()

    def close(self):
        self._draw()
        self._stream.write("\n")
        self._stream.flush()


class _Silent:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress_bar(total):
    stream = sys.stderr
    if stream is None or not stream.isatty():
        return _Silent()
    try:
        import tqdm
    except ImportError:
        return _Line(total, stream)
    return tqdm.tqdm(total=total, file=stream, unit="task")


class Runner:
    """Keyed tasks on any executor, run once.

        runner = quiver.Runner(parallel="threads")
        runner.add("a", f, 1)
        runner.add("b", f, 2)
        results = runner.run()     # {"a": f(1), "b": f(2)}; an exception where a task raised

    Memoized tasks go through `wrap_executor`, so hits never reach the pool.
    While it runs a progress bar shows on stderr when it is a terminal (tqdm's
    when installed). Ctrl-C cancels every task not yet started and re-raises
    KeyboardInterrupt. A Runner runs once: `add` or `run` after `run` raise
    RuntimeError.
    """

    def __init__(self, parallel="auto", progress=True):
        self._parallel = parallel
        self._progress = progress
        self._tasks = {}
        self._ran = False

    def __len__(self):
        return len(self._tasks)

    def add(self, key, fn, /, *args, **kwargs):
        """Add the task `fn(*args, **kwargs)` under `key` (hashable, unique)."""
        if self._ran:
            raise RuntimeError("this Runner has already run; make a new one")
        if not callable(fn):
            raise TypeError(f"Runner.add needs a callable, not {type(fn).__name__}")
        if key in self._tasks:
            raise ValueError(f"Runner already has a task {key!r}")
        self._tasks[key] = (fn, args, kwargs)

    def run(self):
        """Run every task; return {key: result, or the exception it raised}."""
        if self._ran:
            raise RuntimeError("this Runner has already run; make a new one")
        self._ran = True
        executor = get_executor(self._parallel)
        finished = queue.SimpleQueue()
        futures = {}
        received = 0
        bar = _progress_bar(len(self._tasks)) if self._progress else _Silent()
        try:
            for key, (fn, args, kwargs) in self._tasks.items():
                try:
                    future = executor.submit(fn, *args, **kwargs)
                except Exception as exc:  # refused at submit (say, unpicklable): that task's answer
                    future = concurrent.futures.Future()
                    future.set_exception(exc)
                futures[key] = future
                future.add_done_callback(finished.put)  # exactly once per future
                # A serial executor does the work here, inside submit.
                while not finished.empty():
                    finished.get()
                    received += 1
                    bar.update()
            while received < len(futures):
                try:
                    # A timeout, so that Ctrl-C is seen while nothing finishes.
                    finished.get(timeout=0.1)
                except queue.Empty:
                    continue
                received += 1
                bar.update()
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        finally:
            bar.close()
        results = {}
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except Exception as exc:
                results[key] = exc
        return results
