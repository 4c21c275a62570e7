"""quiver stats counts what every process did, by function: two Python
processes run one memoized function on a cache (the first computes, the
second hits), and the command-line tool, a third process, reads the hits,
misses, stores and the time the hits saved. Driven by ctest (cli.python)."""
import json
import os
import subprocess
import sys

import pytest

CLI = os.environ.get("QV_CLI")
pytestmark = pytest.mark.skipif(not CLI, reason="QV_CLI is not set: run through ctest")

WORKER = """
import sys, time, quiver
@quiver.memo(name="cli.stats.slow")
def slow(x):
    time.sleep(0.02)
    return x * 2
with quiver.cache(quiver.Cache.open(sys.argv[1])):
    assert [slow(x) for x in (1, 2, 3)] == [2, 4, 6]
"""


def test_stats_count_every_process(tmp_path):
    path = str(tmp_path / "cache")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER, path], check=True)
    out = subprocess.run([CLI, "stats", path, "--json"], check=True, capture_output=True, text=True).stdout
    stats = json.loads(out)
    slow = stats["functions"]["cli.stats.slow"]
    assert (slow["calls"], slow["hits"], slow["misses"], slow["stores"]) == (3, 3, 3, 3), slow
    assert slow["evictions"] == slow["corrupt"] == 0, slow
    assert slow["saved_ns"] >= 3 * 20_000_000, slow  # each hit saved its call's 20 ms
    assert stats["saved_ns"] == slow["saved_ns"]
    assert stats["total_hits"] == 3 and stats["total_stores"] == 3, stats
    text = subprocess.run([CLI, "stats", path], check=True, capture_output=True, text=True).stdout
    assert any(line.split()[:7] == ["cli.stats.slow", "3", "3", "B", "3", "3", "3"] for line in text.splitlines()), text


def test_export_then_import_into_redis(tmp_path):
    """A cache moves into Redis through an export file, and a process that
    opens the Redis URL gets every call without running one."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
    from _redis import RedisServer

    path, exported = str(tmp_path / "cache"), str(tmp_path / "calls.cbor")
    subprocess.run([sys.executable, "-c", WORKER, path], check=True)
    subprocess.run([CLI, "export", path, exported], check=True, capture_output=True)
    server = RedisServer(str(tmp_path)).start()
    try:
        done = subprocess.run([CLI, "import", server.url, exported], check=True, capture_output=True, text=True)
        assert "3" in done.stdout, done.stdout
        listed = subprocess.run([CLI, "ls", server.url, "cli.stats.slow"], check=True, capture_output=True,
                                text=True).stdout
        assert len(listed.splitlines()) == 3, listed
        never_runs = WORKER.replace("time.sleep(0.02)", "raise AssertionError('ran')")
        subprocess.run([sys.executable, "-c", never_runs, server.url], check=True)
        gc = subprocess.run([CLI, "gc", server.url], capture_output=True, text=True)
        assert gc.returncode == 1 and "gc" in gc.stderr, gc
    finally:
        server.remove()
