"""The remote tier from Python (issue 11), against a real redis-server that
each test starts on a free loopback port and kills after: URLs, stacks of
a local LMDB cache over Redis as separate "machines", faults, and which
pickles are loaded (issues 11 and 17)."""
import json
import os
import pickle
import subprocess
import sys
import time
import warnings

import pytest

import quiver
from quiver import Cache, QuiverWarning
from _redis import RedisServer, redis_server, resp  # noqa: F401 (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_COUNTERS = ("remote_hits", "remote_errors", "dropped", "forged")


def calls(port):
    """The remote tier's call-record keys."""
    return [k for k in resp(port, "KEYS", "*") if b"c:" in k]


def record_key(port, digest):
    found = [k for k in calls(port) if digest.encode() in k]
    assert len(found) == 1, (digest, calls(port))
    return found[0]


def eventually(check, seconds=5):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within %s s" % seconds
        time.sleep(0.02)


def counting(name, result=lambda x: x + 1):
    """A memoized function that counts its runs."""
    runs = []

    def f(x):
        runs.append(x)
        return result(x)
    return quiver.memo(name=name)(f), runs


# ------------------------------------------------------------------- URLs

def test_a_url_is_never_a_directory(tmpdir_path, monkeypatch):
    monkeypatch.chdir(tmpdir_path)
    for url in ("http://example.com/cache", "file:///tmp/x", "rediss://127.0.0.1:6379/0"):
        with pytest.raises(ValueError) as e:
            Cache.open(url)
        assert isinstance(e.value, quiver.InvalidArgumentError), e.value
    t = time.monotonic()
    with pytest.raises(quiver.IOError):
        Cache.open("redis://127.0.0.1:1/0", timeout=0.5)
    assert time.monotonic() - t < 3
    import pathlib
    with pytest.raises(ValueError):
        Cache.open(pathlib.Path("redis://127.0.0.1:6379/0"))  # "redis:/127.0.0.1:6379/0"
    assert os.listdir(tmpdir_path) == []  # no directory "redis:", "http:", ...


def test_open_over_tcp_and_a_unix_socket(redis_server):
    f, runs = counting("remote.add")
    tcp = Cache.open(redis_server.url)
    assert repr(tcp).startswith(f"<quiver.Cache redis '{redis_server.url}")
    with quiver.cache(tcp):
        assert f(1) == 2 and f(1) == 2
    assert runs == [1]
    assert len(calls(redis_server.port)) == 1
    unix = Cache.open(redis_server.unix_url, timeout=2)
    assert unix.path.startswith("unix://")
    with quiver.cache(unix):
        assert f(1) == 2
    assert runs == [1]
    assert unix.contains(f.digest(1)) and unix.load(f.digest(1)).result == 2
    s = unix.stats()
    assert s["hits"] >= 1 and all(k in s for k in NEW_COUNTERS), s
    tcp.close()
    unix.close()


def test_timeout_and_secret_are_checked():
    with pytest.raises(ValueError):
        Cache.open("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(TypeError):
        Cache.open("redis://127.0.0.1:1/0", secret=42)
    with pytest.raises(ValueError):
        Cache.open("redis://127.0.0.1:1/0", secret=b"")


# ---------------------------------------------------------------- stacks

def test_stack_shows_both_and_counts_remote_hits(redis_server, tmpdir_path):
    f, runs = counting("remote.stacked")
    a = Cache.stack(Cache.open(os.path.join(tmpdir_path, "a")), Cache.open(redis_server.url))
    assert repr(a).startswith("<quiver.Cache stack of <quiver.Cache lmdb ")
    assert f"<quiver.Cache redis '{redis_server.url}" in repr(a)
    with quiver.cache(a):
        assert f(5) == 6
    b = Cache.stack(Cache.open(os.path.join(tmpdir_path, "b")), Cache.open(redis_server.url))
    with quiver.cache(b):
        assert f(5) == 6  # from Redis, copied into b's local tier
        assert f(5) == 6  # from b's local tier
    assert runs == [5]
    s = b.stats()
    assert s["remote_hits"] >= 1 and all(k in s for k in NEW_COUNTERS), s
    # the remote hit is copied into the local tier by the stack's worker
    eventually(lambda: Cache.open(os.path.join(tmpdir_path, "b")).contains(f.digest(5)))
    assert b.gc() == 0 and b.verify() == 0  # the local tier's
    with pytest.raises(ValueError):
        Cache.open(redis_server.url).gc()  # a remote tier has nothing to collect
    # a copy in another process reopens the same two tiers
    c = pickle.loads(pickle.dumps(b))
    assert c.contains(f.digest(5)) and repr(c).startswith("<quiver.Cache stack of")
    for x in (a, b, c):
        x.close()
    with pytest.raises(ValueError):
        Cache.stack(Cache.memory(), Cache.memory(), asynchronous=True)


def test_asynchronous_stack_flushes_at_close(redis_server, tmpdir_path):
    f, runs = counting("remote.async")
    s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url),
                    asynchronous=True, queue_limit=64)
    assert "asynchronous" in repr(s)
    with quiver.cache(s):
        for i in range(20):
            f(i)
    s.close()
    got = len(calls(redis_server.port))
    dropped = 20 - got
    assert got > 0 and dropped >= 0


def test_compute_once_across_machines(redis_server, tmpdir_path):
    """Two processes, each with its own local directory, one Redis: the slow
    call runs once; a third machine then reads it from Redis."""
    runs = os.path.join(tmpdir_path, "runs")
    env = dict(os.environ, QV_RUNS=runs, QV_SLEEP="1.5")

    def machine(name):
        return subprocess.Popen([sys.executable, os.path.join(HERE, "_remote_workers.py"),
                                 os.path.join(tmpdir_path, name), redis_server.url, "21"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [machine("m1"), machine("m2")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    with open(runs) as fh:
        assert len(fh.read().split()) == 1
    assert outs[0]["result"] == outs[1]["result"] and outs[0]["result"]["double"] == 42
    third = machine("m3")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    out = json.loads(out)
    assert out["result"] == outs[0]["result"] and out["remote_hits"] == 1
    with open(runs) as fh:
        assert len(fh.read().split()) == 1


def test_a_stack_travels_to_a_process_pool(redis_server, tmpdir_path):
    """BoundWrapper pickles the stack: the worker reopens both tiers (the URL
    with its options), stores through them, and this process reads Redis."""
    import concurrent.futures
    import multiprocessing
    import _workers
    s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url, timeout=2))
    ctx = multiprocessing.get_context("spawn")
    with quiver.cache(s), concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        futures = [ex.submit(quiver.BoundWrapper.bind(_workers.square), x) for x in range(4)]
        assert [f.result() for f in futures] == [0, 1, 4, 9]
    with quiver.cache(Cache.open(redis_server.url)):
        assert [_workers.square.load(x) for x in range(4)] == [0, 1, 4, 9]
    assert ("square", 2) not in _workers.ran  # every call was the worker's
    s.close()


# ----------------------------------------------------------------- faults

def test_redis_down_at_open(redis_server, tmpdir_path):
    url = redis_server.url
    remote = Cache.open(url, timeout=0.3)
    redis_server.stop()
    # down when the stack is made: it works from local, with one warning
    f, runs = counting("remote.down_at_stack")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "s")), remote)
        with quiver.cache(s):
            assert [f(i % 2) for i in range(4)] == [1, 2, 1, 2]
    assert runs == [0, 1]
    assert len([w for w in said if issubclass(w.category, QuiverWarning)]) == 1, [str(w.message) for w in said]
    s.close()
    t = time.monotonic()
    with pytest.raises(quiver.IOError) as e:
        Cache.open(url, timeout=0.5)
    assert time.monotonic() - t < 3
    assert "127.0.0.1" in str(e.value), e.value
    f, runs = counting("remote.down")
    local = Cache.open(os.path.join(tmpdir_path, "l"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        s = Cache.stack(local, url)
        with quiver.cache(s):
            assert f(1) == 2 and f(1) == 2
    assert runs == [1]
    assert len([w for w in said if issubclass(w.category, QuiverWarning)]) == 1, [str(w.message) for w in said]


def test_redis_killed_mid_run(redis_server, tmpdir_path):
    timeout = 0.3
    f, runs = counting("remote.killed")
    s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url, timeout=timeout))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with quiver.cache(s):
            assert f(0) == 1
            redis_server.stop()
            slowest = 0
            for i in range(10):
                t = time.monotonic()
                assert f(i % 3) == i % 3 + 1
                slowest = max(slowest, time.monotonic() - t)
    assert runs == [0, 1, 2]
    # no call waits for Redis longer than its timeout (with room for a slow machine)
    assert slowest < timeout + 0.7, slowest
    assert any(issubclass(w.category, QuiverWarning) for w in said)
    assert s.stats()["remote_errors"] >= 1
    # back: stores reach it again after the backoff
    redis_server.start()
    deadline = time.monotonic() + 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with quiver.cache(s):
            x = 100
            while not calls(redis_server.port) and time.monotonic() < deadline:
                f(x)
                x += 1
                time.sleep(0.1)
    assert calls(redis_server.port)
    s.close()


def test_redis_hung_mid_run(redis_server, tmpdir_path):
    """A server that stops answering (SIGSTOP) costs one timeout, not one per call."""
    import signal
    timeout = 0.3
    f, runs = counting("remote.hung")
    s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url, timeout=timeout))
    times = []
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with quiver.cache(s):
            f(0)
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            try:
                for i in range(12):
                    t = time.monotonic()
                    assert f(i % 4) == i % 4 + 1
                    times.append(time.monotonic() - t)
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert runs == [0, 1, 2, 3]
    assert max(times) < timeout + 0.7, times
    assert sum(times) < 3 * timeout + 1, times  # it backs off instead of waiting on every call
    assert len([w for w in said if issubclass(w.category, QuiverWarning)]) == 1, [str(w.message) for w in said]
    s.close()


# ---------------------------------------------------------- pickles, signing

def pickled(name):
    runs = []

    def f():
        runs.append(1)
        return range(3)  # stored as a pickle
    return quiver.memo(name=name)(f), runs


def refused(said):
    return [w for w in said if issubclass(w.category, QuiverWarning) and "refusing to unpickle" in str(w.message)]


def read_back(f, runs, cache):
    """f() through cache: (its result, whether it ran, the refusals said)."""
    before = len(runs)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with quiver.cache(cache):
            got = f()
    return got, len(runs) > before, refused(said)


def test_remote_pickles_need_a_signature_or_trust(redis_server, tmpdir_path):
    f, runs = pickled("remote.pickled")
    with quiver.cache(Cache.open(redis_server.url)):
        f()
    assert runs == [1]
    bare = Cache.open(redis_server.url)
    assert not bare._trusted
    got, ran, said = read_back(f, runs, bare)
    assert got == range(3) and ran and len(said) == 1 and "not signed" in str(said[0].message)
    # a private local directory does not make the stack over Redis trusted
    stack = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url))
    assert not stack._trusted
    got, ran, said = read_back(f, runs, stack)
    assert ran and len(said) == 1
    trusted = Cache.open(redis_server.url, trust_pickle=True)
    got, ran, said = read_back(f, runs, trusted)
    assert got == range(3) and not ran and not said


def test_shared_secret_loads_pickles(redis_server, tmpdir_path):
    f, runs = pickled("remote.signed")
    writer = Cache.open(redis_server.url, secret=b"shared secret")
    assert writer._trusted
    with quiver.cache(writer):
        f()
    reader = Cache.open(redis_server.url, secret="shared secret")
    got, ran, said = read_back(f, runs, reader)
    assert got == range(3) and not ran and not said
    stack = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l"), secret="shared secret"),
                        Cache.open(redis_server.url, secret="shared secret"))
    assert stack._trusted
    got, ran, said = read_back(f, runs, stack)
    assert not ran and not said and stack.stats()["remote_hits"] == 1
    # another secret: forged, a miss
    other = Cache.open(redis_server.url, secret="another")
    got, ran, said = read_back(f, runs, other)
    assert ran and other.stats()["forged"] >= 1


def test_a_tampered_entry_is_a_miss(redis_server):
    f, runs = counting("remote.tampered", lambda x: "result %d" % x)
    signed = Cache.open(redis_server.url, secret="k")
    with quiver.cache(signed):
        f(1)
        f(2)
    key = record_key(redis_server.port, f.digest(1))
    data = resp(redis_server.port, "GET", key)
    at = data.index(b"result 1")
    resp(redis_server.port, "SET", key, data[:at] + b"result 9" + data[at + 8:])
    with quiver.cache(signed):
        assert f(1) == "result 1"
    assert runs == [1, 2, 1]
    assert signed.stats()["forged"] >= 1


def test_a_corrupt_entry_is_a_miss(redis_server):
    """Unsigned, garbage in place of a record is a miss (and a warning)."""
    f, runs = counting("remote.corrupt", lambda x: "result %d" % x)
    plain = Cache.open(redis_server.url)
    with quiver.cache(plain):
        f(3)
        resp(redis_server.port, "SET", record_key(redis_server.port, f.digest(3)), b"\xff\x00garbage")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert f(3) == "result 3"
    assert runs == [3, 3]
    assert any(issubclass(w.category, QuiverWarning) for w in said)


def test_signed_lmdb_cache_in_a_group_directory_is_trusted(tmpdir_path):
    """Issue 17: a group cache (group-writable by design) refuses pickles,
    unless its entries are signed with the cache's secret."""
    f, runs = pickled("remote.group")
    plain, team = os.path.join(tmpdir_path, "plain"), os.path.join(tmpdir_path, "team")
    for d in (plain, team):
        os.mkdir(d)
        os.chmod(d, 0o2770)
    with quiver.cache(Cache.open(plain, trust_pickle=True)):
        f()
    unsigned = Cache.open(plain)
    assert not unsigned._trusted and "writable by others" in unsigned._distrust
    got, ran, said = read_back(f, runs, unsigned)
    assert ran and len(said) == 1  # one warning per refused call, not one per look at it
    with quiver.cache(Cache.open(team, secret="team secret")):
        f()
    signed = Cache.open(team, secret="team secret")
    assert signed._trusted
    got, ran, said = read_back(f, runs, signed)
    assert got == range(3) and not ran and not said
    assert runs == [1, 1, 1]
    # signed entries need the secret: without it the cache does not open
    with pytest.raises(ValueError):
        Cache.open(team)


DEFAULT_CACHE = r"""
import json, warnings, quiver
@quiver.memo(name="remote.default")
def f(x):
    return range(x)  # a pickle
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    f(3)
c = quiver.current_cache()
print(json.dumps({"path": c.path, "trusted": c._trusted, "hits": c.stats()["hits"],
                  "refused": sum("refusing to unpickle" in str(w.message) for w in said)}))
"""


def test_quiver_cache_names_the_remote_tier(redis_server):
    """QUIVER_CACHE=redis://... makes the remote tier every language's
    default; with QUIVER_SECRET its pickles load."""
    def run(**env):
        r = subprocess.run([sys.executable, "-c", DEFAULT_CACHE], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, QUIVER_CACHE=redis_server.url, **env))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    first = run(QUIVER_SECRET="s")
    assert first["path"] == redis_server.url and first["trusted"] and first["hits"] == 0
    second = run(QUIVER_SECRET="s")
    assert second["hits"] == 1 and not second["refused"]
    unsigned = run()
    assert not unsigned["trusted"]


# --------------------------------------------------------------- warnings

EXIT_WITH_QUEUE = r"""
import sys, quiver
from quiver import Cache
f = quiver.memo(name="remote.exiting")(lambda x: x)
s = Cache.stack(Cache.open(sys.argv[1]), Cache.open(sys.argv[2], timeout=0.2), asynchronous=True)
quiver.cache(s)
print("ready", flush=True)
sys.stdin.readline()          # Redis is gone now
for i in range(50):
    f(i)
# exit with the queue unflushed: the stack closes, and warns, while Python finalizes
"""


def test_warnings_from_the_stacks_thread_and_at_exit(redis_server, tmpdir_path):
    f, runs = counting("remote.async_down")
    s = Cache.stack(Cache.open(os.path.join(tmpdir_path, "l")), Cache.open(redis_server.url, timeout=0.2),
                    asynchronous=True)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with quiver.cache(s):
            f(0)
            redis_server.stop()
            for i in range(1, 30):
                f(i)
        s.close()  # flushes on the stack's own thread, which meets Redis gone
    assert runs == list(range(30))
    assert any(issubclass(w.category, QuiverWarning) for w in said)

    redis_server.start()
    p = subprocess.Popen([sys.executable, "-c", EXIT_WITH_QUEUE, os.path.join(tmpdir_path, "x"), redis_server.url],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    redis_server.stop()
    out, err = p.communicate("go\n", timeout=60)
    assert p.returncode == 0, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err


def test_an_untrusted_remote_pickle_is_not_laundered_through_local(redis_server, tmpdir_path):
    """A pickle refused through a stack is still copied into its local tier
    by the core; the local tier must not trust it once opened alone."""
    evil = quiver.memo(name="remote.laundered")(lambda: ["planted", range(1)])
    with quiver.cache(Cache.open(redis_server.url)):
        evil()  # whoever can write Redis plants a pickle
    runs = []

    def fails():
        runs.append(1)
        raise RuntimeError("no result to store over the copy")
    victim = quiver.memo(name="remote.laundered")(fails)
    local_dir = os.path.join(tmpdir_path, "l")
    s = Cache.stack(Cache.open(local_dir), Cache.open(redis_server.url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with quiver.cache(s), pytest.raises(RuntimeError):
            victim()  # refused: a miss, and the call runs
    s.close()
    time.sleep(0.5)  # the stack's worker copies in the background
    # the stack copied the planted entry into the local tier: opened alone,
    # the local tier says where its entries came from, and refuses them
    local = Cache.open(local_dir)
    assert not local._trusted and f"copies of entries from {redis_server.url}" in local._distrust
    with warnings.catch_warnings(record=True) as said, quiver.cache(local):
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError):
            victim()  # must not answer with the planted pickle
    assert refused(said)
    assert Cache.open(local_dir, trust_pickle=True)._trusted
    # stacked again (as every worker of a pool remakes a pickled stack), the mark stays one line
    Cache.stack(Cache.open(local_dir), Cache.open(redis_server.url)).close()
    with open(os.path.join(local_dir, "quiver.remote-copies")) as fh:
        assert fh.read().split() == [redis_server.url]
    # a stack whose remote is trusted (signed, or trust_pickle) marks nothing
    clean = os.path.join(tmpdir_path, "clean")
    Cache.stack(Cache.open(clean), Cache.open(redis_server.url, trust_pickle=True)).close()
    assert Cache.open(clean)._trusted
