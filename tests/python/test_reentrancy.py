"""User code that runs while a hit is decoded (a registered decoder, an
unpickler's __setstate__) may make memoized calls that miss and store: on
every store, including an LMDB map that must grow. DESIGN section 4: no host
code runs under a transaction or a store lock. A hang fails the test."""
import contextvars
import os
import threading

import pytest

import quiver
from quiver import Cache, cache

inner_runs = []


@quiver.memo(name="reentrancy.inner")
def inner(x):
    inner_runs.append(x)
    # big enough that a few of them outgrow a small map
    return bytes(200_000) + x.to_bytes(4, "little")


class Registered:
    def __init__(self, n):
        self.n = n


def _decode_registered(n):
    # a memoized call that misses and stores, from inside a hit's decoding
    inner(n)
    return Registered(n)


quiver.register(Registered, lambda r: r.n, _decode_registered)


class Pickled:
    def __init__(self, n):
        self.n = n

    def __setstate__(self, state):
        self.__dict__.update(state)
        inner(1000 + state["n"])


@quiver.memo(name="reentrancy.outer_registered")
def outer_registered(n):
    return Registered(n)


@quiver.memo(name="reentrancy.outer_pickled")
def outer_pickled(n):
    return Pickled(n)


def _within(seconds, fn):
    done, failure = threading.Event(), []
    ctx = contextvars.copy_context()  # the thread runs in the caller's active cache

    def run():
        try:
            ctx.run(fn)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            failure.append(e)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "the hit deadlocked: user code ran under a lock or a transaction"
    if failure:
        raise failure[0]


@pytest.fixture(params=["memory", "lmdb-small-map"])
def store(request, tmpdir_path):
    if request.param == "memory":
        c = Cache.memory()
    else:
        c = Cache.open(os.path.join(tmpdir_path, "small"), map_size=1 << 20, trust_pickle=True)
    yield c
    c.close()


def test_a_decoder_that_stores_does_not_deadlock(store):
    inner_runs.clear()
    with cache(store):
        outer_registered(1)  # stored
        inner_runs.clear()
        assert quiver.current_cache() is store

        def hits():
            for i in range(8):  # 8 x 200 KB through a 1 MiB map: it grows
                assert outer_registered(1).n == 1
                inner(100 + i)
        _within(30, hits)
    assert 1 in inner_runs


def test_an_unpickler_that_stores_does_not_deadlock(store):
    inner_runs.clear()
    if store.path == ":memory:":
        store.trust_pickle = True
    with cache(store):
        outer_pickled(2)
        _within(30, lambda: [outer_pickled(2) for _ in range(3)])
    assert 1002 in inner_runs  # the pickle path really ran: __setstate__ made the call
