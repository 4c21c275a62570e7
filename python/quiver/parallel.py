"""Executors by name, reused across calls, and a Runner for keyed tasks.

`get_executor(spec, **options)` turns a short spec into a wrapped executor (see
`quiver.wrap_executor`: hits never reach it, misses carry the caller's cache):

    False, None    a serial executor: each task runs in the caller's thread, at submit
    True, "auto"   serial inside a worker (no pools in pools); else the last of
                   "processes" (or "loky", or an int), "executorlib", "dask", "ray"
                   asked for by name (dask and ray only while running); else a
                   running distributed.Client or ray runtime; else processes when
                   this machine has more than one CPU, serial otherwise
    "threads"      a thread pool (never remembered by "auto")
    "processes"    a process pool (loky's, see below); "loky" is the same pool
    an int n       the process pool, with n workers
    "dask"         the running distributed.Client, else one connected to the scheduler
                   dask's config names (DASK_SCHEDULER_ADDRESS), else a local in-process one
    "ray"          the running ray runtime, else a local one started here
    "executorlib"  executorlib's SingleNodeExecutor
    an executor    that executor, wrapped

The answer is always a `quiver.bound.WrappedExecutor` proxy, whose `executor` is
the pool: the executor itself is left as it was (`quiver.wrap_executor` is the
one that patches an executor's submit in place).

Pools are made on first use and reused by every later call, in every thread;
one that was shut down or broke (a worker died) is replaced. The process pool
follows loky's `get_reusable_executor`: `get_executor("processes",
max_workers=None, timeout=60, kill_workers=False, reuse="auto",
initializer=None, initargs=(), env=None)` resizes the pool when max_workers
changes (None: every CPU), lets idle workers exit after `timeout` seconds,
makes a new pool when the other arguments change or reuse=False (waiting for
the running tasks, or killing them with kill_workers=True), and with
kill_workers=True replaces a pool that is still busy. "threads" takes
max_workers, initializer and initargs; "ray" and "dask" take max_workers, used
only when they start a runtime of their own.

A forked child never uses its parent's pools, runtimes or remembered backend:
their threads and pipes stayed behind. A fork hook and a PID check (for forks
no hook sees) both drop them.

Process pools are loky's rather than the standard library's: the standard one
forks by default on Linux, which is unsafe in a process that has threads (LMDB
readers, pools, dask); loky starts clean workers, pickles with cloudpickle
(functions from `__main__` and notebooks work), replaces crashed workers with a
clear error, and lets idle workers exit. The pool is ours rather than loky's
singleton, which keeps one per thread and hands a forked child its parent's (a
child's `get_reusable_executor()` then hangs). Without loky installed,
"processes" uses the standard pool with the "forkserver" start method.

The helpers take a pool (wrapped or not) or a spec: `get_n_workers(pool)`,
`should_nest(pool)` (whether tasks may submit tasks of their own: dask, ray),
`can_scatter(pool)`, `scatter(pool, obj)` (a dask future, a ray object ref,
the object itself for local pools; tasks take it as an argument) and
`submit(pool, fn, *args, **kwargs)`.
"""

import atexit
import concurrent.futures
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time

from . import bound
from ._shared import SafeCounter, SafeDict  # threads: in memory; processes: the cache's shared store
from .bound import WrappedExecutor

__all__ = ["RayExecutor", "Runner", "SafeCounter", "SafeDict", "SerialExecutor", "can_scatter", "get_executor",
           "get_n_workers", "in_worker", "scatter", "should_nest", "submit"]

# Idle process workers exit after this long, and are started again on demand.
_IDLE_SECONDS = 60.0

_log = logging.getLogger("quiver")


class SerialExecutor(concurrent.futures.Executor):
    """Runs each task in the caller's thread, inside `submit`, and returns its
    future already done. KeyboardInterrupt and SystemExit propagate."""

    _max_workers = 1

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
    """True where "auto" is serial: in a process that runs tasks for another (a
    multiprocessing or loky child, a dask or ray worker process, any process
    that has received bound work), and while a task submitted through a
    wrapped executor runs, in whatever thread."""
    return bound.in_task() or bound.crossed() or multiprocessing.parent_process() is not None


class _State:
    """What a process keeps between get_executor calls; a forked child starts
    a new one."""

    def __init__(self):
        self.pid = os.getpid()
        # Reentrant: replacing a pool waits for its tasks while holding it,
        # and a done callback of one of them may ask for an executor.
        self.lock = threading.RLock()
        self.pools = {}
        self.options = {}  # the options each pool was made with
        self.auto = None   # the last persistent backend asked for by name


_state = _State()
# A forked child drops its parent's pools without shutting them down (that
# would join threads that do not exist here, and close what the parent still
# uses), and keeps them referenced so that no finalizer runs on them either.
_abandoned = []
_fork_lock = threading.Lock()


def _here():
    global _state
    state = _state
    if state.pid != os.getpid():
        with _fork_lock:
            state = _state
            if state.pid != os.getpid():
                _abandoned.append(state)
                state = _state = _State()
    return state


def _after_fork_in_child():
    global _fork_lock
    _fork_lock = threading.Lock()
    _here()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _shutdown_pools():
    # Run where concurrent.futures shuts its own pools down: before the
    # interpreter joins non-daemon threads, which would otherwise wait forever
    # on the threads of a pool nobody shut down (executorlib's). Process
    # pools left to the teardown complain from their threads' callbacks, after
    # the modules those need are gone. (dask's Client closes itself at exit.)
    state = _here()
    with state.lock:
        pools = [wrapped for key, wrapped in state.pools.items() if key != "dask"]
        state.pools.clear()
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
    if isinstance(pool, RayExecutor):
        return pool._alive()
    flags = getattr(pool, "_flags", None)  # loky keeps its state here
    if flags is not None:
        return not (flags.shutdown or flags.broken)
    # The standard library's pools: shut down, or broken by a dead worker or
    # a failed initializer, they refuse every later task.
    return not (getattr(pool, "_shutdown", False) or getattr(pool, "_shutdown_thread", False)
                or getattr(pool, "_broken", False))


def _shared(key, make):
    state = _here()
    with state.lock:
        wrapped = state.pools.get(key)
        if wrapped is None or not _alive(wrapped):
            wrapped = state.pools[key] = WrappedExecutor(make())
        return wrapped


# -- processes: loky's reusable executor, kept per process ---------------------

def _process_pool(max_workers, timeout, initializer, initargs, env):
    try:
        import loky
    except ImportError:
        if env is not None:
            raise ImportError('get_executor("processes", env=...) needs the loky package (pip install loky)') from None
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=max_workers, mp_context=multiprocessing.get_context("forkserver"),
            initializer=initializer, initargs=initargs)
    try:
        # loky's own resizable pool, made here rather than through its
        # per-thread singleton.
        from loky.reusable_executor import _ReusablePoolExecutor as pool_class
    except ImportError:
        pool_class = loky.ProcessPoolExecutor
    return pool_class(max_workers=max_workers, timeout=timeout, initializer=initializer,
                      initargs=initargs, env=env)


def _busy(pool):
    return bool(getattr(pool, "_pending_work_items", None))


def _stop(pool, kill_workers):
    if getattr(pool, "_flags", None) is not None:  # loky
        pool.shutdown(wait=True, kill_workers=kill_workers)
        return
    if kill_workers:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=kill_workers)


def _processes(max_workers=None, timeout=_IDLE_SECONDS, kill_workers=False, reuse="auto",
               initializer=None, initargs=(), env=None):
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                    or max_workers < 1):
        raise ValueError(f"max_workers must be a number of workers, at least 1, not {max_workers!r}")
    if reuse not in (True, False, "auto"):
        raise ValueError(f"reuse must be True, False or \"auto\", not {reuse!r}")
    options = dict(timeout=timeout, initializer=initializer, initargs=tuple(initargs), env=env)
    state = _here()
    with state.lock:
        wrapped = state.pools.get("processes")
        if wrapped is not None and _alive(wrapped):
            pool = wrapped.executor
            if max_workers is None:
                max_workers = pool._max_workers if reuse is True else _cpus()
            same = state.options.get("processes") == options if reuse == "auto" else reuse
            resizable = hasattr(pool, "_resize") or pool._max_workers == max_workers
            if same and resizable and not (kill_workers and _busy(pool)):
                if pool._max_workers != max_workers:
                    pool._resize(max_workers)  # after the running tasks finish
                return wrapped
            wrapped._closed = True
            _stop(pool, kill_workers)
        wrapped = state.pools["processes"] = WrappedExecutor(
            _process_pool(max_workers or _cpus(), **options))
        state.options["processes"] = options
        return wrapped


def _threads(max_workers=None, initializer=None, initargs=()):
    options = dict(max_workers=max_workers, initializer=initializer, initargs=tuple(initargs))
    state = _here()
    with state.lock:
        wrapped = state.pools.get("threads")
        if wrapped is not None and _alive(wrapped):
            if state.options.get("threads") == options or options == dict(max_workers=None, initializer=None,
                                                                          initargs=()):
                return wrapped
            # Other arguments: a new pool; the old one finishes what it has.
            wrapped._closed = True
            wrapped.executor.shutdown(wait=False)
        wrapped = state.pools["threads"] = WrappedExecutor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix="quiver", **options))
        state.options["threads"] = options
        return wrapped


# -- distributed backends: an existing scheduler or runtime first ------------

def _running_dask_client():
    """The distributed.Client this process already runs, without importing
    distributed when nothing did."""
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].get_client()
    except ValueError:
        return None


def _dask(max_workers=None):
    try:
        import distributed
    except ImportError:
        raise ImportError('get_executor("dask") needs the distributed package (pip install distributed)') from None
    client = _running_dask_client()
    if client is not None:
        return WrappedExecutor(client)  # a proxy: the user's own client keeps its submit
    state = _here()
    with state.lock:
        wrapped = state.pools.get("dask")
        if wrapped is None or wrapped._closed or wrapped.executor.status in ("closing", "closed"):
            import dask
            if dask.config.get("scheduler-address", None):
                # A scheduler named by DASK_SCHEDULER_ADDRESS or dask's config: join it.
                client = distributed.Client()
            else:
                extra = {} if max_workers is None else dict(n_workers=1, threads_per_worker=max_workers)
                # ":0": a free port (None still takes 8787, and warns when another cluster has it)
                client = distributed.Client(processes=False, dashboard_address=":0", **extra)
            wrapped = state.pools["dask"] = WrappedExecutor(client)
        return wrapped


# The process a RayExecutor was made in: a forked child sees ray initialized,
# but the connection is its parent's.
_ray_driver = None


def _ray_call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


class RayFuture(concurrent.futures.Future):
    """A concurrent.futures.Future for a ray task: `result`, `exception`,
    `done`, `add_done_callback`, `concurrent.futures.wait` and `as_completed`
    behave as for any pool's; `cancel` cancels the ray task (ray interrupts
    it even when it runs). `ref` is the task's ObjectRef, which other tasks
    take as an argument."""

    def __init__(self, ref):
        super().__init__()
        self.ref = ref
        ref.future().add_done_callback(self._settle)

    def _settle(self, inner):
        if self.cancelled():
            return
        try:
            exc = inner.exception()
            if exc is None:
                self.set_result(inner.result())
            else:
                # ray raises an exception that is also an instance of the
                # task's own: except ValueError still catches it.
                cause = getattr(exc, "as_instanceof_cause", None)
                self.set_exception(cause() if cause is not None else exc)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            pass

    def cancel(self):
        if self.done():
            return self.cancelled()
        import ray
        try:
            ray.cancel(self.ref)
        except Exception:  # already finished, or the runtime is gone
            pass
        return super().cancel()


class RayExecutor(concurrent.futures.Executor):
    """Tasks on ray, as a concurrent.futures executor. It uses the ray
    runtime this process already has (`ray.is_initialized()`); otherwise
    `ray.init` connects to the cluster RAY_ADDRESS names or that `ray start`
    started on this machine, or starts a local one (with max_workers CPUs
    when given), which `shutdown` stops. A task that dies with its worker is
    not retried: the future gets the error, as with a process pool."""

    def __init__(self, max_workers=None):
        import ray
        global _ray_driver
        self._ray = ray
        self._owned = False
        self._shutdown = False
        if ray.is_initialized() and _ray_driver not in (None, os.getpid()):
            # Its connection and threads stayed in the parent: using it hangs.
            raise RuntimeError("this process is a fork of a ray driver, whose runtime it cannot use; "
                               "start it with the spawn or forkserver method, or call ray.shutdown() first")
        if not ray.is_initialized():
            extra = {} if max_workers is None else dict(num_cpus=max_workers)
            ray.init(include_dashboard=False, ignore_reinit_error=True, **extra)
            self._owned = True
        self._remote = ray.remote(max_retries=0)(_ray_call)
        _ray_driver = os.getpid()

    def _alive(self):
        return not self._shutdown and self._ray.is_initialized()

    @property
    def _max_workers(self):
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return RayFuture(self._remote.remote(fn, *args, **kwargs))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Refuse new tasks; stop the runtime when this executor started it."""
        self._shutdown = True
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _ray(max_workers=None):
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ImportError('get_executor("ray") needs the ray package (pip install ray)') from None
    return _shared("ray", lambda: RayExecutor(max_workers))


def _executorlib():
    import executorlib
    return executorlib.SingleNodeExecutor(max_workers=_cpus())


# -- get_executor -------------------------------------------------------------

_NAMES = ("threads", "processes", "loky", "dask", "ray", "executorlib", "auto")
# Backends "auto" remembers: pools worth keeping, and not threads.
_PERSISTENT = ("processes", "dask", "ray", "executorlib")


def _by_name(name, options):
    if name == "threads":
        return _threads(**options)
    if name == "processes":
        return _processes(**options)
    if name == "dask":
        return _dask(**options)
    if name == "ray":
        return _ray(**options)
    if options:
        raise TypeError(f"get_executor({name!r}) takes no options, not {', '.join(options)}")
    return _shared("executorlib", _executorlib)


def _auto(options):
    if in_worker():
        return _shared("serial", SerialExecutor)
    state = _here()
    name = state.auto
    if name is not None:
        wrapped = state.pools.get(name)
        if wrapped is not None and _alive(wrapped) and not options:
            return wrapped  # as it is: "auto" does not resize what was asked for
        if name in ("processes", "executorlib"):
            return _by_name(name, options)
        # dask and ray only as found running (cotengra's rule): "auto" never
        # starts a scheduler or runtime again after the user closed theirs.
    if _running_dask_client() is not None:
        return _dask(**options)
    ray = sys.modules.get("ray")
    if (ray is not None and getattr(ray, "is_initialized", lambda: False)()
            and _ray_driver in (None, os.getpid())):  # not a runtime a forked child inherited
        return _ray(**options)
    if _cpus() < 2:
        return _shared("serial", SerialExecutor)
    return _processes(**options)


def get_executor(spec="auto", **options):
    """A wrapped executor for `spec` (see the module's documentation);
    `options` go to the pool ("processes": max_workers, timeout,
    kill_workers, reuse, initializer, initargs, env)."""
    if isinstance(spec, WrappedExecutor):
        return spec
    if spec is None or spec is False:
        return _shared("serial", SerialExecutor)
    if spec is True or spec == "auto":
        return _auto(options)
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"get_executor needs at least one worker, not {spec}")
        wrapped = _processes(max_workers=spec, **options)
        _here().auto = "processes"
        return wrapped
    if isinstance(spec, str):
        if spec == "loky":
            try:
                import loky  # noqa: F401  (the pool is the same as "processes"; loky is required here)
            except ImportError:
                raise ImportError('get_executor("loky") needs the loky package (pip install loky)') from None
            spec = "processes"
        if spec not in _NAMES:
            raise ValueError(f"unknown executor {spec!r}: expected one of {', '.join(map(repr, _NAMES))}, "
                             "True, False, None, a number of workers or an executor")
        wrapped = _by_name(spec, options)
        if spec in _PERSISTENT:
            _here().auto = spec
        return wrapped
    if callable(getattr(spec, "submit", None)):
        return WrappedExecutor(spec)
    raise TypeError(f"get_executor takes a name, a bool, None, a number of workers or an executor, "
                    f"not {type(spec).__name__}")


# -- helpers, for code that works on any of them --------------------------------

def _pool(pool):
    """The executor behind a spec, a WrappedExecutor or an executor."""
    if not callable(getattr(pool, "submit", None)):
        pool = get_executor(pool)
    while isinstance(pool, WrappedExecutor):
        pool = pool.executor
    return pool


def _kind(pool):
    if isinstance(pool, RayExecutor):
        return "ray"
    if type(pool).__module__.split(".")[0] == "distributed":
        return "dask"
    return "local"


def get_n_workers(pool="auto"):
    """How many tasks `pool` (an executor or a spec) runs at once."""
    pool = _pool(pool)
    if _kind(pool) == "dask":
        return sum(w.get("nthreads", 1) for w in pool.scheduler_info()["workers"].values())
    for name in ("_max_workers", "max_workers"):
        n = getattr(pool, name, None)
        if isinstance(n, int) and n > 0:
            return n
    return _cpus()


def should_nest(pool="auto"):
    """Whether tasks on `pool` may submit tasks of their own to it: yes on
    dask and ray, whose schedulers take them; not on local pools, where a
    task that waits for another can starve the pool."""
    return _kind(_pool(pool)) != "local"


def can_scatter(pool="auto"):
    """Whether `scatter(pool, obj)` ships obj to the workers once (dask, ray)."""
    return _kind(_pool(pool)) != "local"


def scatter(pool, obj):
    """obj placed where pool's workers read it once, for any number of tasks
    that take it as an argument: a dask future, a ray ObjectRef, or obj itself
    on a local pool."""
    pool = _pool(pool)
    kind = _kind(pool)
    if kind == "dask":
        return pool.scatter([obj])[0]  # in a list: a list is scattered as one object
    if kind == "ray":
        return pool._ray.put(obj)
    return obj


def submit(pool, fn, /, *args, **kwargs):
    """`fn(*args, **kwargs)` on pool (an executor or a spec), wrapped: a hit
    never reaches it. Returns a concurrent.futures-like future. On dask the
    task is not pure unless pure=True is passed: two equal submits run twice,
    as on any other pool."""
    wrapped = get_executor(pool)
    if _kind(wrapped.executor) == "dask":
        kwargs.setdefault("pure", False)
    return wrapped.submit(fn, *args, **kwargs)


class _Progress:
    """Counts of a run and their summary: done/total, successes, failures, exec/s, elapsed."""

    def __init__(self, total):
        self.total = total
        self.ok = 0
        self.failed = 0
        self.start = time.monotonic()

    @property
    def done(self):
        return self.ok + self.failed

    def stats(self, now=None):
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"ok {self.ok}, failed {self.failed}, {rate:.1f} exec/s, {elapsed:.1f}s"

    def update(self, ok):
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def tick(self):
        pass

    def close(self):
        pass


class _Line(_Progress):
    """One self-rewriting stderr line, for a terminal without tqdm."""

    def __init__(self, total, stream):
        super().__init__(total)
        self._stream = stream
        self._shown = 0.0
        self._width = 0
        self._draw()

    def update(self, ok):
        super().update(ok)
        now = time.monotonic()
        if now - self._shown >= 0.1 or self.done == self.total:
            self._draw(now)

    def _draw(self, now=None):
        now = time.monotonic() if now is None else now
        self._shown = now
        width = 30
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.done}/{self.total} [{bar}] {self.stats(now)}"
        self._stream.write("\r" + line.ljust(self._width))  # blanks what a longer line left
        self._width = len(line)
        self._stream.flush()

    def close(self):
        self._draw()
        self._stream.write("\n")
        self._stream.flush()


class _Every(_Progress):
    """A plain line every `every` seconds and one at the end, for logs."""

    def __init__(self, total, stream, every):
        super().__init__(total)
        self._stream = stream
        self._every = every
        self._next = self.start + every

    def _print(self):
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self._stream.write(f"{self.done}/{self.total} ({pct:.0f}%) {self.stats()}\n")
        self._stream.flush()

    def tick(self):
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._every
            self._print()

    def update(self, ok):
        super().update(ok)
        self.tick()

    def close(self):
        self._print()


class _Tqdm(_Progress):
    def __init__(self, total, stream, tqdm):
        super().__init__(total)
        self._bar = tqdm.tqdm(total=total, file=stream, unit="exec")

    def update(self, ok):
        super().update(ok)
        self._bar.set_postfix(ok=self.ok, failed=self.failed, refresh=False)
        self._bar.update()

    def close(self):
        self._bar.close()


def _progress_bar(total, every):
    stream = sys.stderr
    if stream is None:
        return _Progress(total)
    if stream.isatty():
        try:
            import tqdm
        except ImportError:
            return _Line(total, stream)
        return _Tqdm(total, stream, tqdm)
    if every:
        return _Every(total, stream, every)
    return _Progress(total)


class Runner:
    """Keyed tasks on any executor, run once (vayu's ParallelRunner).

        runner = quiver.Runner(parallel="threads")
        runner.add("a", f, 1)
        runner.add("b", f, 2)
        results = runner.run()     # {"a": f(1), "b": f(2)}; an exception where a task raised

    `parallel` is any `get_executor` spec; `n_workers`, `initializer` and
    `initargs` go to its pool ("processes", "threads", an int, or what "auto"
    picks). `executor_cls`, when given, wins over `parallel`: any
    concurrent.futures executor class (ThreadPoolExecutor,
    ProcessPoolExecutor, loky's, ...), made for this run with
    max_workers=n_workers and the initializer, and shut down after it.

    Memoized tasks go through `wrap_executor`, so hits never reach the pool.
    With `report_exceptions` each failure is logged (logger "quiver", with its
    traceback); either way the exception is that key's result. While it runs,
    a progress line (done/total, successes, failures, exec/s, elapsed) shows on
    stderr when it is a terminal (tqdm's when installed); otherwise, with
    `print_progress_every=seconds`, a plain line is printed that often and once
    at the end. Ctrl-C cancels every task not yet started and re-raises
    KeyboardInterrupt. A Runner runs once: `add` or `run` after `run` raise
    RuntimeError.
    """

    def __init__(self, parallel="auto", n_workers=None, executor_cls=None, initializer=None, initargs=(),
                 report_exceptions=True, progress=True, print_progress_every=None):
        if executor_cls is not None and not callable(executor_cls):
            raise TypeError(f"executor_cls must be an executor class, not {type(executor_cls).__name__}")
        if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int)
                                      or n_workers < 1):
            raise ValueError(f"n_workers must be a number of workers, at least 1, not {n_workers!r}")
        self._parallel = parallel
        self._n_workers = n_workers
        self._executor_cls = executor_cls
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._report = report_exceptions
        self._progress = progress
        self._every = print_progress_every
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

    def _pool_options(self):
        options = {}
        if self._n_workers is not None:
            options["max_workers"] = self._n_workers
        if self._initializer is not None:
            options["initializer"] = self._initializer
            options["initargs"] = self._initargs
        return options

    def _executor(self):
        """(the wrapped executor, whether this run owns it)."""
        options = self._pool_options()
        if self._executor_cls is not None:
            return WrappedExecutor(self._executor_cls(**options)), True
        parallel = self._parallel
        if options and (parallel is None or parallel is False):
            options.pop("max_workers", None)
            if options:
                raise TypeError("a serial Runner takes no initializer")
        if options and isinstance(parallel, int) and not isinstance(parallel, bool):
            options.pop("max_workers", None)  # the int is the number of workers
        if options and callable(getattr(parallel, "submit", None)):
            raise TypeError("n_workers and initializer are for pools the Runner makes, not an executor given")
        return get_executor(parallel, **options), False

    def run(self):
        """Run every task; return {key: result, or the exception it raised}."""
        if self._ran:
            raise RuntimeError("this Runner has already run; make a new one")
        self._ran = True
        executor, owned = self._executor()
        finished = queue.SimpleQueue()
        futures = {}
        keys = {}
        received = 0
        total = len(self._tasks)
        if self._progress:
            bar = _progress_bar(total, self._every)
        elif self._every and sys.stderr is not None:
            bar = _Every(total, sys.stderr, self._every)
        else:
            bar = _Progress(total)
        interrupted = False

        def receive(future):
            failure = None if future.cancelled() else future.exception()
            if failure is not None and self._report:
                _log.error("Runner: task %r failed: %s: %s", keys[id(future)], type(failure).__name__, failure,
                           exc_info=(type(failure), failure, failure.__traceback__))
            bar.update(failure is None)

        try:
            for key, (fn, args, kwargs) in self._tasks.items():
                try:
                    future = executor.submit(fn, *args, **kwargs)
                except Exception as exc:  # refused at submit (say, unpicklable): that task's answer
                    future = concurrent.futures.Future()
                    future.set_exception(exc)
                futures[key] = future
                keys[id(future)] = key
                future.add_done_callback(finished.put)  # exactly once per future
                # A serial executor does the work here, inside submit.
                while not finished.empty():
                    receive(finished.get())
                    received += 1
                bar.tick()
            while received < len(futures):
                try:
                    # A timeout, so that Ctrl-C is seen while nothing finishes.
                    done = finished.get(timeout=0.1)
                except queue.Empty:
                    bar.tick()
                    continue
                receive(done)
                received += 1
        except BaseException:
            interrupted = True
            for future in futures.values():
                future.cancel()
            raise
        finally:
            bar.close()
            if owned:
                try:
                    executor.shutdown(wait=not interrupted, cancel_futures=True)
                except TypeError:  # an executor older than cancel_futures
                    executor.shutdown(wait=not interrupted)
        results = {}
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except Exception as exc:
                results[key] = exc
        return results
