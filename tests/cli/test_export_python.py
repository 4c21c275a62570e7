"""quiver export and import carry Python's calls to another cache: there
the same memoized function answers every call without running, with results
equal to the first, and each record keeps its digest, language, times and
metadata. Driven by ctest (cli.python), which names the quiver tool."""
import datetime
import json
import os
import subprocess
import sys
import time

import pytest

import quiver

CLI = os.environ.get("QV_CLI")
pytestmark = pytest.mark.skipif(not CLI, reason="QV_CLI is not set: run through ctest")

runs = []


@quiver.memo(name="cli.py.echo", version="2")
def echo(*args, **kwargs):
    runs.append(args)
    return {"args": args, "kwargs": kwargs, "set": {1, 2}, "n": 2**80, "c": 1 + 2j, "big": b"r" * 5000,
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)}


CALLS = [
    ((1, "a"), {}),
    ((1.5, None, [True, (2, (3, 4))]), {"k": frozenset({"x", "y"})}),
    ((b"y" * 3000,), {"t": datetime.timedelta(days=1, seconds=2)}),
]


def records(path):
    with quiver.Cache.open(path, readonly=True) as c:
        return sorted((r.digest, r.name, r.version, r.args, r.kwargs, r.result, r.metadata, r.start_ns,
                       r.duration_ns, r.lang) for r in c.query())


def test_calls_come_back_identical_through_export_and_import(tmp_path):
    src, dst, f = tmp_path / "src", tmp_path / "dst", tmp_path / "calls.cbor"
    with quiver.cache(quiver.Cache.open(src)), quiver.meta(project="p1"):
        want = [echo(*a, **k) for a, k in CALLS]
    assert len(runs) == 3
    subprocess.run([CLI, "export", str(src), str(f)], check=True, capture_output=True)
    p = subprocess.run([CLI, "import", str(dst), str(f)], check=True, capture_output=True, text=True)
    assert "calls stored: 3\n" in p.stdout
    with quiver.cache(quiver.Cache.open(dst)):
        got = [echo(*a, **k) for a, k in CALLS]
    assert len(runs) == 3, "a body ran: the imported cache missed"
    assert got == want
    rs = records(dst)
    assert rs == records(src)
    assert {(r[6]["project"], r[9]) for r in rs} == {("p1", "python")}


@quiver.memo(name="cli.py.slow", version="1")
def slow(x):
    time.sleep(0.02)
    return x


def test_stats_totals_and_time_saved_across_processes(tmp_path):
    """Hits from two Python processes reach quiver stats: the totals and,
    per function, the hits and the time they saved."""
    path = tmp_path / "c"
    script = ("import quiver, sys\n"
              "sys.path.insert(0, %r)\n"
              "from test_export_python import slow\n"
              "with quiver.cache(quiver.Cache.open(%r)):\n"
              "    [slow(1) for _ in range(3)]\n") % (os.path.dirname(__file__), str(path))
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], check=True)
    s = json.loads(subprocess.run([CLI, "stats", str(path), "--json"], check=True, capture_output=True,
                                  text=True).stdout)
    assert s["total_hits"] == 5 and s["total_misses"] == 1 and s["total_stores"] == 1, s
    f = s["functions"]["cli.py.slow"]
    assert f["calls"] == 1 and f["hits"] == 5 and f["saved_ns"] >= 5 * 20_000_000, f
    assert s["saved_ns"] == f["saved_ns"]
    human = subprocess.run([CLI, "stats", str(path)], check=True, capture_output=True, text=True).stdout
    assert "\ntotal_hits: 5\n" in human and "\nsaved: " in human, human
    assert any(line.startswith("cli.py.slow ") and line.split()[4] == "5" and line.endswith(" ms")
               for line in human.splitlines()), human
