"""Module-level memoized functions for tests that cross process boundaries."""
import os

import quiver


@quiver.memo(name="tests.square")
def square(x):
    return x * x


@quiver.memo(name="tests.pid_of")
def pid_of(x):
    return (x, os.getpid())


@quiver.memo(name="tests.writes_file", isolate=True)
def writes_file(name):
    with open(name, "w") as f:
        f.write("x")
    return os.getcwd()


def hammer(path, worker, keys):
    """Threads of one process hitting and storing overlapping keys."""
    import threading
    c = quiver.Cache.open(path)
    errors = []

    def run(t):
        try:
            with quiver.cache(c):
                for k in keys:
                    r = square(k)
                    if r != k * k:
                        errors.append((worker, t, k, r))
        except Exception as e:  # reported to the parent, which asserts on it
            errors.append((worker, t, repr(e)))
    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# A pool worker's cache, opened once by its initializer and never closed:
# the worker ends in os._exit.
_worker_cache = None


def open_worker_cache(path):
    global _worker_cache
    _worker_cache = quiver.Cache.open(path)


def squares_in_worker_cache(keys):
    with quiver.cache(_worker_cache):
        return [square(k) for k in keys]
