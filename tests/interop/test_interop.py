"""Python, Lua and C on one LMDB cache: each answers from what the others
stored (its own body must not run), all compute the same digests, and five
processes of three languages filling one cache at once lose nothing.

Each worker (worker.py, worker.lua, worker_c) memoizes interop.square(n, tag)
= n * n + len(tag) under the same name and version, and prints one JSON line.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import quiver

HERE = Path(__file__).resolve().parent
WORKER_C = os.environ.get("QV_INTEROP_WORKER_C")
LUA = os.environ.get("QV_LUA", "lua5.4")

pytestmark = pytest.mark.skipif(not WORKER_C, reason="QV_INTEROP_WORKER_C is not set: run through ctest")


def command(lang, mode, first, last, seed=None):
    extra = [] if seed is None else [str(seed)]
    if lang == "python":
        return [sys.executable, str(HERE / "worker.py"), mode, str(first), str(last), *extra]
    if lang == "lua":
        return [LUA, str(HERE / "worker.lua"), mode, str(first), str(last), *extra]
    return [WORKER_C, mode, str(first), str(last)]


def env_for(cache_dir):
    return {**os.environ, "QUIVER_CACHE": str(cache_dir)}


def run(lang, mode, first, last, cache_dir, seed=None):
    p = subprocess.run(command(lang, mode, first, last, seed), env=env_for(cache_dir),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{lang} {mode} {first}..{last} exited {p.returncode}: {p.stderr}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["lang"] == lang
    return out


def expected_sum(first, last):
    return sum(n * n + len("alpha") for n in range(first, last + 1))


def test_each_language_answers_from_what_the_others_stored(tmp_path):
    d = tmp_path / "cache"
    assert run("c", "compute", 0, 9, d)["runs"] == 10
    # Python's body must not run for what C stored; then it adds 10..19
    assert run("python", "hits", 0, 9, d)["sum"] == expected_sum(0, 9)
    assert run("python", "compute", 0, 19, d, seed=1)["runs"] == 10
    assert run("lua", "hits", 0, 19, d)["sum"] == expected_sum(0, 19)
    assert run("lua", "compute", 0, 29, d, seed=2)["runs"] == 10
    for lang in ("c", "python", "lua"):
        out = run(lang, "hits", 0, 29, d)
        assert (out["runs"], out["sum"]) == (0, expected_sum(0, 29)), lang

    # the records say who computed what
    with quiver.Cache.open(d, readonly=True) as c:
        langs = {}
        for rec in c.query(name="interop.square"):
            assert rec.result == rec.args[0] ** 2 + len(rec.args[1])
            langs[rec.lang] = langs.get(rec.lang, 0) + 1
    assert langs == {"c": 10, "python": 10, "lua": 10}


def test_the_hits_mode_really_fails_on_a_miss(tmp_path):
    # the other tests rely on a worker in hits mode failing when its body runs
    d = tmp_path / "cache"
    run("c", "compute", 0, 4, d)
    for lang in ("c", "python", "lua"):
        p = subprocess.run(command(lang, "hits", 0, 5), env=env_for(d), capture_output=True, text=True, timeout=60)
        assert p.returncode != 0, lang
        assert "hits mode" in p.stderr, lang


@pytest.mark.parametrize("first", [0, 7, -3, 2**40])
def test_digests_agree_across_languages(tmp_path, first):
    want = quiver.call_digest("interop.square", "1", [first, "alpha"], {})
    for lang in ("c", "python", "lua"):
        assert run(lang, "compute", first, first, tmp_path / lang)["digest"] == want, lang


def test_five_processes_of_three_languages_fill_one_cache(tmp_path):
    d = tmp_path / "cache"
    last = 1999
    # overlapping ranges, each in its own order, all at once
    plan = [("python", 0, last, 11), ("python", 500, last, 12), ("lua", 0, 1499, 13), ("lua", 1000, last, 14),
            ("c", 0, last, None)]
    procs = [subprocess.Popen(command(lang, "compute", a, b, seed), env=env_for(d), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for lang, a, b, seed in plan]
    total_runs = 0
    for (lang, a, b, _), p in zip(plan, procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{lang}: {err}"
        res = json.loads(out.strip().splitlines()[-1])
        assert res["sum"] == expected_sum(a, b), lang
        total_runs += res["runs"]
    # every key ran exactly once: a worker missing a key another runs waits for it
    assert total_runs == last + 1

    # afterwards every language reads every result, and nothing is wrong
    for lang in ("c", "python", "lua"):
        out = run(lang, "hits", 0, last, d)
        assert (out["runs"], out["sum"]) == (0, expected_sum(0, last)), lang
    with quiver.Cache.open(d, readonly=True) as c:
        assert c.stats()["entries"] == last + 1
        assert c.verify() == 0


def test_eight_processes_of_three_languages_run_each_key_once(tmp_path):
    # DESIGN section 12: whoever misses first computes; the others, in any
    # language, wait for its result. 100 slow keys, 8 processes, each in its
    # own order, all at once.
    d, log = tmp_path / "cache", tmp_path / "runs.log"
    plan = [("python", 1), ("python", 2), ("python", 3), ("lua", 4), ("lua", 5), ("lua", 6), ("c", None), ("c", None)]
    env = {**env_for(d), "QV_INTEROP_LOG": str(log), "QV_INTEROP_SLEEP_MS": "5"}
    procs = [subprocess.Popen(command(lang, "compute", 0, 99, seed), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for lang, seed in plan]
    for (lang, _), p in zip(plan, procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{lang}: {err}"
        assert json.loads(out.strip().splitlines()[-1])["sum"] == expected_sum(0, 99), lang  # every result
    ran = [line.split() for line in log.read_text().splitlines()]
    per_key = {}
    for lang, n in ran:
        per_key.setdefault(int(n), []).append(lang)
    assert sorted(per_key) == list(range(100))
    twice = {n: langs for n, langs in per_key.items() if len(langs) > 1}
    assert not twice, f"keys computed more than once: {twice}"
    assert {lang for lang, _ in ran} <= {"python", "lua", "c"}
