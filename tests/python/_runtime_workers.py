"""Module-level memos for test_runtime, importable by spawned workers. Each
appends its pid to a log file when it runs; how long it runs is left out of
its key (ignore="secs"), so callers with other patience share one entry."""
import os
import threading
import time

import quiver


def _ran(log):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")


@quiver.memo(name="runtime.slow", ignore="secs")
def slow(log, x, secs):
    _ran(log)
    time.sleep(secs)
    return 2 * x


@quiver.memo(name="runtime.failing", ignore="secs")
def failing(log, secs):
    _ran(log)
    time.sleep(secs)
    raise ValueError("on purpose")


@quiver.memo(name="runtime.slow_nodedup", ignore="secs", dedup=False)
def slow_nodedup(log, x, secs):
    _ran(log)
    time.sleep(secs)
    return x


@quiver.memo(name="runtime.slow_impatient", ignore="secs", wait_timeout=0.05)
def slow_impatient(log, x, secs):
    _ran(log)
    time.sleep(secs)
    return x


@quiver.memo(name="runtime.make_lock")
def make_lock(tag):
    return threading.Lock()


def plain(x):
    return x


def call_slow(path, log, x, secs):
    """In a worker: slow(log, x, secs) in the cache at path; (result, when it returned)."""
    with quiver.cache(quiver.Cache.open(path)):
        r = slow(log, x, secs)
    return r, time.monotonic()
