"""Wrong answers that must not happen: shared names, merged keys, reruns after
a future resolves, stacks that cannot be verified."""
import concurrent.futures
import functools
import os
import threading
import time

import pytest

import quiver
from quiver import Cache, cache, memo


@pytest.fixture
def lmdb(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "cache"))
    with cache(c):
        yield c
    c.close()


# -- unnamed lambdas and closures --------------------------------------------

def _make(n):
    return lambda x: x + n


def _factory(n):
    def add(x):
        return x + n
    return add


@pytest.mark.parametrize("fn", [lambda x: x + 1, _make(2), _factory(3), functools.partial(_make(2), 1)],
                         ids=["lambda", "closure", "nested def", "partial"])
def test_a_function_without_a_unique_name_is_refused(fn):
    with pytest.raises(TypeError) as e:
        memo(fn)
    assert "pass name=" in str(e.value)
    assert getattr(fn, "__qualname__", "no __qualname__") in str(e.value)


def test_two_lambdas_and_two_closures_never_share_an_entry(lmdb):
    inc = memo(name="t.inc")(lambda x: x + 1)
    dbl = memo(name="t.dbl")(lambda x: x * 2)
    assert (inc(5), dbl(5)) == (6, 10)
    made = {n: memo(name=f"t.add{n}")(_factory(n)) for n in (2, 3)}
    assert (made[2](5), made[3](5)) == (7, 8)


def test_a_method_of_a_module_level_class_keeps_its_default_name():
    class_ = type("K", (), {"__module__": __name__, "__qualname__": "K"})

    def f(self, x):
        return x
    f.__qualname__ = "K.f"
    class_.f = memo(f)
    assert class_.f.name == f"{__name__}.K.f"


# -- distinct CBOR keys that Python merges -------------------------------------

@pytest.mark.parametrize("hexdata", [
    "a3016161f56162f93c006163",                      # {1: "a", true: "b", 1.0: "c"}
    "a2da515600018101" "6161" "da5156000181f5" "6162",  # {(1,): "a", (true,): "b"}
    "d9010283" "01f5f93c00",                         # set {1, true, 1.0}
    "a1d9010282" "01f93c00" "f6",                    # {frozenset {1, 1.0}: null}
], ids=["map", "tuple keys", "set", "frozenset key"])
def test_distinct_keys_equal_in_python_are_refused(hexdata):
    data = bytes.fromhex(hexdata)
    with pytest.raises(quiver.DecodeError, match="equal in Python"):
        quiver.decode(data)


def test_the_map_from_the_report_is_refused():
    with pytest.raises(quiver.DecodeError):
        quiver.decode(bytes.fromhex("a3016161f56162f93c006163"))


# -- the Future pass-through ---------------------------------------------------

def test_a_call_right_after_the_future_resolves_is_a_hit():
    ex = concurrent.futures.ThreadPoolExecutor(2)
    calls = []
    late = [20]  # the first calls' futures tell their other callbacks slowly: the store comes late

    def slow_to_tell(fut):
        if late[0]:
            late[0] -= 1
            time.sleep(0.002)

    @memo(name="t.future_race")
    def later(x):
        calls.append(x)
        gate = threading.Event()
        f = ex.submit(gate.wait)
        f.add_done_callback(slow_to_tell)
        gate.set()
        return f

    with cache(Cache.memory()):
        deadline = time.monotonic() + 15
        i = 0
        while i < 10_000 and time.monotonic() < deadline:
            assert later(i).result() is True
            assert later(i) is True
            i += 1
    ex.shutdown()
    assert i >= 2000
    assert len(calls) == i, f"{len(calls) - i} reruns in {i} tries"


def test_a_failed_or_cancelled_future_stores_nothing():
    ex = concurrent.futures.ThreadPoolExecutor(1)
    runs = []

    @memo(name="t.future_fail")
    def boom(x):
        runs.append(x)
        return ex.submit(lambda: 1 / 0)

    with cache(Cache.memory()):
        with pytest.raises(ZeroDivisionError):
            boom(1).result()
        with pytest.raises(ZeroDivisionError):
            boom(1).result()
    ex.shutdown()
    assert runs == [1, 1]


# -- stacks -------------------------------------------------------------------

def test_a_stack_verifies_and_syncs_each_layer(tmpdir_path):
    a = Cache.open(os.path.join(tmpdir_path, "a"), durability="fast")
    b = Cache.open(os.path.join(tmpdir_path, "b"))
    s = Cache.stack(a, Cache.stack(b, Cache.memory()))
    sq = memo(name="t.sq")(lambda x: x * x)
    with cache(s):
        assert sq(3) == 9
    with cache(b):
        assert sq(4) == 16
    assert s.verify() == 0
    assert s.verify(repair=True) == 0
    s.sync()
    a.close()
    with pytest.raises(quiver.ClosedError):
        s.verify()
    b.close()
