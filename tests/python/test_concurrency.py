"""Many processes and threads on one LMDB cache: every result correct."""
import concurrent.futures
import multiprocessing
import os
import threading

import pytest

import quiver
from quiver import Cache, cache

import _memo_workers as workers


def test_four_processes_two_threads_overlapping_keys(tmpdir_path):
    path = os.path.join(tmpdir_path, "shared")
    Cache.open(path).close()
    keys = [list(range(w * 50, w * 50 + 200)) for w in range(4)]  # each overlaps its neighbours
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as ex:
        errors = list(ex.map(workers.hammer, [path] * 4, range(4), keys))
    assert errors == [[], [], [], []]
    with Cache.open(path) as c, cache(c):
        for k in range(350):
            assert workers.square._probe(k) == (True, k * k)
        assert c.stats()["entries"] == 350


def test_threads_share_one_cache_handle(tmpdir_path):
    c = Cache.open(os.path.join(tmpdir_path, "threads"))
    bad = []

    def run(t):
        with cache(c):
            for k in range(300):
                if workers.square(k % 97) != (k % 97) ** 2:
                    bad.append((t, k))
    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
    assert c.stats()["entries"] == 97
    c.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_that_never_close_their_cache_still_count(tmpdir_path, method):
    """Workers end in os._exit, closing nothing: what they counted (totals,
    and a limitless cache's size) is written as they end all the same."""
    path = os.path.join(tmpdir_path, "counted")
    ctx = multiprocessing.get_context(method)
    keys = [list(range(w * 10, w * 10 + 10)) for w in range(4)]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=workers.open_worker_cache,
                                                initargs=(path,)) as ex:
        got = list(ex.map(workers.squares_in_worker_cache, keys))
    assert got == [[k * k for k in ks] for ks in keys]
    with Cache.open(path) as c:
        s = c.stats()
        assert (s["entries"], s["total_misses"], s["total_stores"]) == (40, 40, 40), s
        counted = s["bytes"]
        c.gc()
        assert c.stats()["bytes"] == counted > 0
