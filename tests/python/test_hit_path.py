"""The hit path's own encoder and small-result decoder (issue 10, the hit
numbers): a call of positional ints, strs, None and bools is keyed by bytes
written in memo.c, not by the general encoder the store uses, and a small
integer, null or bool result is read without the decoder. Both must agree
with the general path exactly: a call stored by the general path hits
through the fast one (without the miss that the call runtime's second look,
by the general encoding, would hide), no two arguments share a key, and
every result comes back with its value and type.

A miss the fast path meets runs through the call runtime from C, with the
call bytes it hashed and no Python frame of quiver's: what it stores, warns
and returns must be what the general path (_compute) would."""
import concurrent.futures
import os
import warnings

import pytest

import quiver
from quiver import Cache, QuiverWarning, memo

runs = []

EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
         -1, -24, -25, -256, -257, -65536, -65537, -2**32, -2**32 - 1, -2**63, -2**63 - 1, -2**64, -2**64 - 1,
         "", "a", "é", "x" * 23, "x" * 24, "y" * 256, "z" * 600, "\U0001f600", None, True, False, 1.5, b"b"]


@memo(name="hit_path.ident")
def ident(x):
    runs.append(x)
    return x


@memo(name="hit_path.déjà", version="v2 é")
def many(a, b=7, *rest, **options):
    runs.append((a, b, rest))
    return [a, b, list(rest)]


def test_each_argument_stored_by_the_general_path_hits_through_the_fast_one(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        for v in EDGES:
            runs.clear()
            assert ident(x=v) == v  # a miss, by keyword: stored with the general encoder
            assert runs == [v]
            misses = c.stats()["misses"]
            got = ident(v)  # a hit, keyed by the fast encoder where it applies
            assert got == v and type(got) is type(v), f"{v!r} read {got!r}: two arguments share a key"
            assert runs == [v] and c.stats()["misses"] == misses, f"{v!r} missed: the two encoders disagree"
            assert c.load(ident.digest(v)) is not None
    c.close()


def test_defaults_extra_positionals_and_keywords_share_one_entry(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        runs.clear()
        assert many(1) == [1, 7, []]
        assert many(1, 7) == [1, 7, []]
        assert many(a=1) == [1, 7, []]
        assert many(1, b=7) == [1, 7, []]
        assert len(runs) == 1
        assert many(1, 2, "x", None, -3) == [1, 2, ["x", None, -3]]
        assert many(1, 2, "x", None, -3) == [1, 2, ["x", None, -3]]
        assert len(runs) == 2
        assert many(1, 2, z=3) == [1, 2, []]
        assert many(1, 2, z=3) == [1, 2, []]
        assert len(runs) == 3
    c.close()


def test_small_results_keep_value_and_type(tmp_path):
    c = Cache.open(str(tmp_path / "c"))

    @memo(name="hit_path.result")
    def result(i):
        return EDGES[i]

    with quiver.cache(c):
        for i, v in enumerate(EDGES):
            result(i)
            got = result(i)
            assert got == v and type(got) is type(v), (v, got)
    c.close()


def test_rerun_after_fast_hits_still_reruns(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        runs.clear()
        ident(41)
        ident(41)
        assert runs == [41]
        ident.rerun(41)
        assert runs == [41, 41]
        ident(41)
        assert runs == [41, 41]
    c.close()


def test_a_miss_stored_from_the_fast_path_hits_through_the_general_one(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        for v in EDGES:
            runs.clear()
            assert ident(v) == v  # a miss: stored with the fast path's bytes
            got = ident(x=v)  # the general encoder, by keyword
            assert runs == [v] and got == v and type(got) is type(v), f"{v!r}: the two encoders disagree"
            rec = c.load(ident.digest(v))
            assert rec.args == (v,) and rec.metadata == {} and rec.result == v, rec
    c.close()


@memo(name="hit_path.noted")
def noted(x):
    runs.append(x)
    return x * 2


def test_a_fast_miss_stores_the_memos_metadata_and_an_active_metas(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        noted(1)
        with quiver.meta(run="r7"):
            noted(2)  # quiver.meta(...) is merged in Python
        assert noted.record(1).metadata == {}
        assert noted.record(2).metadata == {"run": "r7"}
    c.close()


def test_a_fast_miss_that_raises_stores_nothing_and_runs_again(tmp_path):
    calls = []

    @memo(name="hit_path.raises")
    def boom(x):
        calls.append(x)
        raise KeyError(x)

    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        for _ in range(2):
            with pytest.raises(KeyError):
                boom(3)
        assert calls == [3, 3] and c.stats()["stores"] == 0
    c.close()


def test_a_fast_miss_on_a_readonly_cache_returns_and_warns_at_the_caller(tmp_path):
    Cache.open(str(tmp_path / "c")).close()
    c = Cache.open(str(tmp_path / "c"), readonly=True)
    with quiver.cache(c), warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        runs.clear()
        assert noted(5) == 10 and noted(5) == 10
        assert runs == [5, 5]
    got = [w for w in ws if issubclass(w.category, QuiverWarning)]
    assert len(got) == 1 and "read-only" in str(got[0].message), [str(w.message) for w in ws]
    assert os.path.samefile(got[0].filename, __file__), f"the warning points at {got[0].filename}, not the caller"
    c.close()


def test_a_fast_miss_returning_a_future_stores_its_result_when_done(tmp_path):
    pool = concurrent.futures.ThreadPoolExecutor(1)

    @memo(name="hit_path.later")
    def later(x):
        runs.append(x)
        return pool.submit(lambda: x + 100)

    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        runs.clear()
        fut = later(1)
        assert isinstance(fut, concurrent.futures.Future) and fut.result(timeout=10) == 101
        assert later(1) == 101 and runs == [1]  # stored when it completed: a hit
    pool.shutdown()
    c.close()
