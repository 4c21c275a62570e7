"""Bad input and misuse: clear errors and warnings, never a crash."""
import os
import threading
import time

import lmdb as pylmdb
import pytest

import quiver
from quiver import Cache, cache, memo

import _memo_workers as workers


def test_decode_refuses_garbage_with_a_message():
    for data in (b"", b"\xff", b"\x1b\x00", b"\x82\x01", b"\xa2\x01\x01\x01\x02"):
        with pytest.raises(quiver.DecodeError) as e:
            quiver.decode(data)
        assert "offset" in str(e.value) or "truncated" in str(e.value)
    assert isinstance(quiver.DecodeError("x"), ValueError)


def test_a_corrupt_stored_value_is_a_miss_with_a_warning(tmpdir_path):
    path = os.path.join(tmpdir_path, "c")
    with Cache.open(path) as c, cache(c):
        workers.square(4)
        key = bytes.fromhex(workers.square.digest(4))
    # Damage the stored record with another LMDB client: its result is no longer canonical CBOR.
    env = pylmdb.open(path, max_dbs=16, map_size=1 << 30)
    calls = env.open_db(b"calls")
    with env.begin(write=True) as txn:
        rec = bytearray(txn.get(key, db=calls))
        rec[-1] = 0xff
        rec[2:] = b"\x1c" * (len(rec) - 2)
        txn.put(key, bytes(rec), db=calls)
    env.close()
    with Cache.open(path) as c, cache(c):
        with pytest.warns(quiver.QuiverWarning, match=r"(?s)corrupt.*verify\(repair=True\)"):
            assert workers.square(4) == 16
        assert c.stats()["corrupt"] >= 1


def test_closing_while_another_thread_uses_it_is_an_error_not_a_crash(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "closing"))
    stop = threading.Event()
    seen = []

    def use():
        with cache(c):
            k = 0
            while not stop.is_set():
                try:
                    workers.square(k % 50)
                except quiver.ClosedError as e:
                    seen.append(e)
                    return
                k += 1
    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    c.close()
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert len(seen) == 3 and all("closed" in str(e) for e in seen)
    assert c.closed
    with pytest.raises(quiver.ClosedError):
        c.contains(workers.square.digest(1))


def test_bad_digests_and_options():
    c = Cache.memory()
    with pytest.raises(quiver.InvalidArgumentError, match="32 hex"):
        c.contains("abc")
    with pytest.raises(ValueError, match="durability"):
        Cache.open("x", durability="sometimes")
    with pytest.raises(TypeError):
        cache("not a cache")
    with pytest.raises(quiver.EncodeError):
        quiver.meta(lock=threading.Lock())


def test_deep_nesting_is_refused_not_a_crash():
    deep = []
    for _ in range(2000):
        deep = [deep]
    with pytest.raises((quiver.EncodeError, RecursionError)):
        quiver.encode(deep)


def test_unknown_tags_round_trip():
    t = quiver.Tag(1000, [1, "x"])
    assert quiver.decode(quiver.encode(t)) == t


def test_a_pickle_that_no_longer_loads_is_a_miss_with_a_warning(tmpdir_path):
    import sys
    import types
    mod = types.ModuleType("qv_gone")
    exec("class Gone:\n    pass\n", mod.__dict__)
    sys.modules["qv_gone"] = mod
    calls = []

    @memo(name="t.gone")
    def make():
        calls.append(1)
        return mod.Gone() if "qv_gone" in sys.modules else "again"
    with Cache.open(os.path.join(tmpdir_path, "g")) as c, cache(c):
        make()
        del sys.modules["qv_gone"]
        with pytest.warns(quiver.QuiverWarning, match=r"(?s)could not be decoded.*quiver\.register"):
            assert make() == "again"
        assert make() == "again" and len(calls) == 2


def test_tuple_and_frozenset_keys_round_trip():
    d = {(1, (2, "a")): frozenset({1, 2}), frozenset({3}): [{4}]}
    assert quiver.decode(quiver.encode(d)) == d
