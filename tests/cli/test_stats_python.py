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
