"""Module-level functions for test_parallel_layer, importable by worker
processes (loky, ray, dask) by reference."""

import os
import time

import quiver
from quiver import parallel

initialized = []


def init(value):
    initialized.append(value)


def initialized_with():
    return list(initialized)


def pid():
    return os.getpid()


def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


def env(name):
    return os.environ.get(name)


def add(x, y):
    return x + y


def total(items):
    return sum(items)


def fail(message):
    raise ValueError(message)


def auto_kind():
    return type(parallel.get_executor("auto").executor).__name__


def mark_and_nap(directory, name, seconds):
    with open(os.path.join(directory, str(name)), "w"):
        pass
    time.sleep(seconds)
    return name


@quiver.memo
def cube(x):
    return {"cube": x ** 3, "pid": os.getpid()}
