"""Module-level functions for the binding, executor and Runner tests, so that
worker processes can import them by reference."""

import os
import signal
import threading
import time
import warnings

import quiver

# Calls that ran in this process, in order: how a test tells a hit (nothing
# ran) from a miss, and which tasks a Ctrl-C left unstarted.
ran = []
_ran_lock = threading.Lock()


def _note(entry):
    with _ran_lock:
        ran.append(entry)


@quiver.memo
def square(x):
    _note(("square", x))
    return x * x


@quiver.memo
def inner(x):
    return {"x": x, "pid": os.getpid()}


@quiver.memo
def outer(x):
    # A memoized call nested in another: it must land in the same cache.
    return [inner(x), os.getpid()]


@quiver.memo
def square_of_len(items):
    return len(items) ** 2


def via_inner(x):
    """Not memoized itself; calls a memoized function (what BoundWrapper must
    carry the cache into)."""
    return os.getpid(), inner(x)


@quiver.memo
def scaled(x, *, factor=1):
    return x * factor


def pid():
    return os.getpid()


def thread_id():
    return threading.get_ident()


def active_meta():
    return dict(quiver.current_meta())


def add(x, y):
    return x + y


def fail(message):
    raise ValueError(message)


def die():
    os._exit(3)


def nap(key, seconds):
    time.sleep(seconds)
    _note(key)
    return key


def interrupt(key):
    """Ctrl-C, as the terminal would send it, to the process running tasks."""
    _note(key)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)  # the signal lands while this task runs
    return key


def auto_executor_kind():
    """What get_executor("auto") gives inside whatever process runs this."""
    from quiver import parallel
    return type(parallel.get_executor("auto").executor).__name__


# A worker initializer and a task, to see the warnings a worker process
# emitted while it unpickled its tasks (before any task code ran). Only the
# display hook is replaced: the default filters decide, as they would for a
# user, whether a repeated warning shows.
_seen = []


def record_warnings():
    def keep(message, category, filename, lineno, file=None, line=None):
        _seen.append((category.__name__, str(message)))
    warnings.showwarning = keep


def recorded_warnings():
    return list(_seen)
