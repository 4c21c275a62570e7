"""Per-call statistics (issue 12): each record counts its hits and keeps the
time of the last. Hits are counted in memory and written in batches (with a
store, sync, close, or a hit after QUIVER_LRU_FLUSH_MS); a count can miss
hits, never add any. Cache.load, f.record and query results show them."""
import datetime
import time

import quiver
from quiver import Cache, memo


@memo(name="hits.f")
def f(x):
    return x * 2


def test_load_record_and_query_show_hits(tmp_path):
    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        f(1)
        f(2)
        rec = f.record(1)
        assert rec.hits == 0 and rec.last_hit is None
        before = time.time()
        for _ in range(3):
            assert f(1) == 2
        assert f.record(1).hits == 0  # counted, not written yet
        c.sync()
        rec = c.load(f.digest(1))
        assert rec.hits == 3
        assert isinstance(rec.last_hit, datetime.datetime) and rec.last_hit.tzinfo is not None
        assert before - 1 <= rec.last_hit.timestamp() <= time.time() + 1
        by_args = {r.args: r for r in c.query("hits.f")}
        assert by_args[(1,)].hits == 3 and by_args[(2,)].hits == 0 and by_args[(2,)].last_hit is None
        assert [r.hits for r in f.query(1)] == [3]
    c.close()


def test_memory_cache_counts_and_eviction_forgets(tmp_path):
    c = Cache.memory()
    with quiver.cache(c):
        f(7)
        f(7)
        f(8)  # a store writes the hits counted so far
        assert f.record(7).hits == 1
        f.evict(7)
        f(7)
        f(9)
        assert f.record(7).hits == 0


def test_read_only_handle_does_not_count(tmp_path):
    path = str(tmp_path / "c")
    c = Cache.open(path)
    with quiver.cache(c):
        f(3)
        f(3)
    c.close()
    ro = Cache.open(path, readonly=True)
    with quiver.cache(ro):
        for _ in range(4):
            assert f(3) == 6
        assert f.record(3).hits == 1
    ro.close()
    c = Cache.open(path)
    assert c.load(f.digest(3)).hits == 1
    c.close()


def test_function_stats_count_by_name(tmp_path):
    @memo(name="hits.slow")
    def slow(x):
        time.sleep(0.005)
        return x

    c = Cache.open(str(tmp_path / "c"))
    with quiver.cache(c):
        for x in (1, 2, 1, 1):
            slow(x)
        f(1)
    c.sync()
    stats = c.function_stats()
    assert set(stats) == {"hits.slow", "hits.f"}
    s = stats["hits.slow"]
    assert (s["misses"], s["stores"], s["hits"], s["evictions"], s["corrupt"]) == (2, 2, 2, 0, 0), s
    assert s["saved_ns"] >= 2 * 5_000_000, s  # each hit saved slow(1)'s 5 ms
    assert (stats["hits.f"]["misses"], stats["hits.f"]["hits"]) == (1, 0)
    c.close()

    small = Cache.open(str(tmp_path / "small"), max_bytes=1)  # every store evicts the call before it
    with quiver.cache(small):
        for x in (1, 2, 1):
            slow(x)
    small.sync()
    s = small.function_stats()["hits.slow"]
    assert (s["misses"], s["stores"], s["hits"]) == (3, 3, 0), s
    assert s["evictions"] >= 2, s
    small.close()
