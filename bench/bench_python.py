"""bench_python: quiver's Python layer against the memoizers people use
instead, measured in the same run and printed as one table (DESIGN section 8,
issue 5).

    python bench/bench_python.py [--quick]

Rows:
  1. a hit on f(int): quiver on LMDB against fleche (memory and pickle-file
     storage), functools.lru_cache, diskcache's memoize, joblib.Memory, and a
     naive memoizer written here (pickle the call, XXH3-128 it, one LMDB get);
  2. a hit whose argument is 1 MB of bytes, and a 1 MB numpy array;
  3. a miss and its store, in each durability mode, against the naive
     memoizer on an LMDB environment with the matching sync flags;
  4. hits from 2 processes at once against 1;
  5. wrap_executor(ThreadPoolExecutor).submit on hits against a plain submit;
  6. the remote tier, on a redis-server started here: a hit on a bare remote
     tier, a remote hit through a stack (local miss, distinct keys) and a
     local hit through a stack, each against a plain local hit;
  8. increments of one key from 4 processes at once: SafeCounter on the
     cache's shared store against a counter a multiprocessing Manager serves.

Every number is the median of several repetitions, and the repetitions of a
row and its anchor are interleaved, so a busy machine slows both alike. A goal
missed is reported, never an exit status. Stores live under
$QUIVER_BUILD/bench-tmp/python (else a temporary directory) and are removed.
"""

import argparse
import concurrent.futures
import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.managers
import os
import pickle
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import quiver

# Explicit names: a spawned worker imports this file as __mp_main__, and the
# default name (module.qualname) would then differ from the parent's.
NAME = "bench_python.f"


def f(x):
    return x + 1


def big(x):
    return len(x)


# ------------------------------------------------------------------ timing

def per_call_ns(loop, n):
    """ns per call of loop(n), which makes n calls."""
    t0 = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - t0) / n


def calibrate(loop, seconds):
    """A call count that takes about `seconds` (at least 1)."""
    n = 1
    while True:
        t0 = time.perf_counter()
        loop(n)
        dt = time.perf_counter() - t0
        if dt >= seconds / 8 or n >= 1 << 24:
            return max(1, int(n * seconds / max(dt, 1e-9)))
        n *= 4


def interleaved(loops, seconds, repeats):
    """Median ns per call of each loop, repetitions interleaved."""
    counts = [calibrate(loop, seconds) for loop in loops]
    samples = [[] for _ in loops]
    for _ in range(repeats):
        for i, loop in enumerate(loops):
            samples[i].append(per_call_ns(loop, counts[i]))
    return [statistics.median(s) for s in samples]


def calling(fn, arg):
    def loop(n):
        for _ in itertools.repeat(None, n):
            fn(arg)
    return loop


# ----------------------------------------------------------------- anchors

def naive_memo(env, name):
    """The memoizer one writes in an afternoon: pickle the call, XXH3-128 it,
    look it up in LMDB; on a miss run, pickle the result, put, commit."""
    import xxhash

    def decorate(fn):
        def wrapper(*args, **kwargs):
            key = xxhash.xxh3_128_digest(pickle.dumps((name, args, kwargs), protocol=5))
            with env.begin(buffers=True) as txn:
                raw = txn.get(key)
                if raw is not None:
                    return pickle.loads(raw)
            result = fn(*args, **kwargs)
            with env.begin(write=True) as txn:
                txn.put(key, pickle.dumps(result, protocol=5))
            return result
        return wrapper
    return decorate


def indexed_memo(env, name):
    """The naive memoizer writing what quiver's format asks of a store
    (FORMAT.md 8.2): the result in a named calls table and the call's entry
    in a names index, in one commit. The floor under quiver's miss + store."""
    import xxhash
    calls, names = env.open_db(b"calls"), env.open_db(b"names")
    prefix = xxhash.xxh3_64_digest(name.encode())

    def decorate(fn):
        def wrapper(*args, **kwargs):
            key = xxhash.xxh3_128_digest(pickle.dumps((name, args, kwargs), protocol=5))
            with env.begin(db=calls, buffers=True) as txn:
                raw = txn.get(key)
                if raw is not None:
                    return pickle.loads(raw)
            result = fn(*args, **kwargs)
            with env.begin(write=True) as txn:
                txn.put(key, pickle.dumps(result, protocol=5), db=calls)
                txn.put(prefix + key, b"", db=names)
            return result
        return wrapper
    return decorate


# Python lmdb's flags for quiver's durability modes (docs/DECISIONS.md).
LMDB_MODES = {
    "safe": dict(sync=True, metasync=False),
    "durable": dict(sync=True, metasync=True),
    "fast": dict(sync=False, metasync=False),
}


def lmdb_env(path, mode="safe", max_dbs=0):
    import lmdb
    return lmdb.open(path, map_size=1 << 32, max_dbs=max_dbs, **LMDB_MODES[mode])


# ------------------------------------------------------------------- table

class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, quiver_ns, anchor_ns=None, goal=None, note=""):
        """goal: ("max_us", v) on quiver's time, ("speedup", v) on anchor/quiver."""
        self.rows.append((name, quiver_ns, anchor_ns, goal, note))

    def print(self):
        fmt = "{:<52} {:>11} {:>11} {:>9} {:>14} {:>6}  {}"
        print(fmt.format("benchmark", "quiver us", "anchor us", "speedup", "goal", "result", "notes"))
        print("-" * 138)
        for name, q, a, goal, note in self.rows:
            speedup = "-" if q is None or a is None else f"{a / q:.2f}x"
            text, result = "-", ""
            if goal is not None and q is not None:
                kind, value = goal
                if kind == "max_us":
                    text, ok = f"<= {value:g} us", q / 1e3 <= value
                else:
                    text, ok = f">= {value:g}x", a is not None and a / q >= value
                result = "PASS" if ok else "MISS"
            print(fmt.format(name, us(q), us(a), speedup, text, result, note))


def us(ns):
    if ns is None:
        return "-"
    return f"{ns / 1e3:.3f}" if ns < 1e4 else f"{ns / 1e3:.1f}"


# -------------------------------------------------------------------- rows

def row_hits(table, tmp, seconds, repeats):
    import diskcache
    import fleche
    import fleche.caches
    import joblib

    c = quiver.Cache.open(os.path.join(tmp, "hits"))
    q = quiver.memo(name=NAME)(f)
    with quiver.cache(c):
        q(7)

    anchors = []

    lru = functools.lru_cache(maxsize=None)(f)
    lru(7)
    anchors.append(("functools.lru_cache (memory)", calling(lru, 7), ""))

    env = lmdb_env(os.path.join(tmp, "naive"))
    naive = naive_memo(env, NAME)(f)
    naive(7)
    anchors.append(("naive LMDB+xxhash+pickle", calling(naive, 7), "DESIGN: ~1.7 us"))

    dc = diskcache.Cache(os.path.join(tmp, "diskcache"))
    dcf = dc.memoize(name=NAME)(f)
    dcf(7)
    anchors.append(("diskcache memoize", calling(dcf, 7), "DESIGN: ~25 us"))

    mem = joblib.Memory(os.path.join(tmp, "joblib"), verbose=0)
    jf = mem.cache(f)
    jf(7)
    anchors.append(("joblib.Memory", calling(jf, 7), "DESIGN: ~80 us"))

    # fleche keeps its active cache in a context variable, like quiver.
    flf = fleche.fleche()(f)
    fleche.cache("memory")
    flf(7)
    anchors.append(("fleche, memory storage", calling(flf, 7), "DESIGN: ~150 us"))
    pickled = fleche.caches.BaseCache.from_config({"template": "pickle", "root": os.path.join(tmp, "fleche")})

    def fleche_pickle(n, _loop=calling(flf, 7)):
        with fleche.cache(pickled):
            _loop(n)
    with fleche.cache(pickled):
        flf(7)
    anchors.append(("fleche, pickle-file storage", fleche_pickle, ""))

    # Interleave quiver with each anchor, so both see the same machine.
    quiver_ns = []
    with quiver.cache(c):
        for name, loop, note in anchors:
            qn, an = interleaved([calling(q, 7), loop], seconds, repeats)
            goal = ("speedup", 40) if name.startswith("diskcache") else None
            table.add(f"1. hit f(int) vs {name}", qn, an, goal, note)
            quiver_ns.append(qn)
    table.add("1. hit f(int), quiver on LMDB (median of above)", statistics.median(quiver_ns), None,
              ("max_us", 0.25), "floor through SWIG ~0.2-0.3 us")
    table.add("1. hit f(int) vs executorlib's cache", None, None, None,
              "not measured: needs h5py and an executor per call, no standalone memoizer")
    c.close()
    env.close()
    dc.close()


def row_big(table, tmp, seconds, repeats):
    import numpy as np

    c = quiver.Cache.open(os.path.join(tmp, "big"))
    q = quiver.memo(name="bench_python.big")(big)
    env = lmdb_env(os.path.join(tmp, "naive-big"))
    naive = naive_memo(env, "bench_python.big")(big)
    data = os.urandom(1 << 20)
    array = np.frombuffer(os.urandom(1 << 20), dtype=np.float64).copy()
    with quiver.cache(c):
        for label, arg in (("1 MB bytes", data), ("1 MB numpy float64 array", array)):
            q(arg)
            naive(arg)
            qn, an = interleaved([calling(q, arg), calling(naive, arg)], seconds, repeats)
            table.add(f"2. hit, {label} argument vs naive", qn, an, ("max_us", 60),
                      "hashed in place through the buffer protocol")
    c.close()
    env.close()


def row_stores(table, tmp, seconds, repeats):
    counter = itertools.count()
    for mode in ("safe", "durable", "fast"):
        c = quiver.Cache.open(os.path.join(tmp, f"store-{mode}"), durability=mode)
        q = quiver.memo(name=f"bench_python.store_{mode}")(f)
        env = lmdb_env(os.path.join(tmp, f"naive-store-{mode}"), mode)
        naive = naive_memo(env, f"bench_python.store_{mode}")(f)
        ienv = lmdb_env(os.path.join(tmp, f"indexed-store-{mode}"), mode, max_dbs=2)
        indexed = indexed_memo(ienv, f"bench_python.store_{mode}")(f)

        def misses(fn):
            def loop(n):
                for _ in itertools.repeat(None, n):
                    fn(next(counter))
            return loop

        # Each store is a commit: a durable one costs an fsync, so time less.
        budget = seconds / 4 if mode == "durable" else seconds
        with quiver.cache(c):
            qn, an, xn = interleaved([misses(q), misses(naive), misses(indexed)], budget, repeats)
        table.add(f"3. miss + store, durability={mode!r} vs naive", qn, an, ("speedup", 0.9),
                  f"naive with the format's calls+names: {xn / 1e3:.1f} us = {an / xn:.2f}x naive")
        c.close()
        env.close()
        ienv.close()


def _hit_worker(path, keys, rounds, start, results):
    c = quiver.Cache.open(path)
    q = quiver.memo(name=NAME)(f)
    with quiver.cache(c):
        for x in keys:  # warm: pages in, transactions pooled
            q(x)
        start.wait()
        t0 = time.perf_counter()
        for _ in range(rounds):
            for x in keys:
                q(x)
        t1 = time.perf_counter()
    results.put((t0, t1, rounds * len(keys)))


def hits_per_second(path, procs, keys, rounds):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [ctx.Process(target=_hit_worker, args=(path, keys, rounds, start, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    start.wait()
    spans = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    # Wall time from the first start to the last end (perf_counter is one
    # system-wide monotonic clock on Linux): overlap is not assumed.
    calls = sum(n for _, _, n in spans)
    return calls / (max(t1 for _, t1, _ in spans) - min(t0 for t0, _, _ in spans))


def row_processes(table, tmp, quick, repeats):
    path = os.path.join(tmp, "procs")
    c = quiver.Cache.open(path)
    q = quiver.memo(name=NAME)(f)
    keys = list(range(1024))
    with quiver.cache(c):
        for x in keys:
            q(x)
    c.close()
    rounds = 50 if quick else 1000
    one, two = [], []
    for _ in range(1 if quick else 3):
        one.append(hits_per_second(path, 1, keys, rounds))
        two.append(hits_per_second(path, 2, keys, rounds))
    one, two = statistics.median(one), statistics.median(two)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    table.add("4. hits, 2 processes vs 1 (time per hit)", 1e9 / two, 1e9 / one, ("speedup", 1.8),
              f"{one / 1e6:.2f} M/s alone, {two / 1e6:.2f} M/s together, {cpus} CPUs")


def row_executor(table, tmp, seconds, repeats):
    c = quiver.Cache.open(os.path.join(tmp, "executor"))
    q = quiver.memo(name=NAME)(f)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, quiver.cache(c):
        q(7)
        wrapped = quiver.wrap_executor(pool)
        pool.submit(q, 7).result()

        def via_wrapped(n):
            for _ in itertools.repeat(None, n):
                wrapped.submit(q, 7).result()

        def via_pool(n):
            for _ in itertools.repeat(None, n):
                pool.submit(q, 7).result()

        qn, an = interleaved([via_wrapped, via_pool], seconds, repeats)
    table.add("5. submit(hit).result(): wrap_executor vs plain", qn, an, ("speedup", 1),
              "a pool round trip cannot beat ~5 us here (DESIGN 8)")
    c.close()


def row_pool_reuse(table, tmp, seconds, repeats):
    """quiver.parallel's process pool against loky's get_reusable_executor:
    the time to get the warm pool, alone and with a trivial task through it."""
    try:
        import loky
    except ImportError:
        table.add("7. warm process pool: get_executor vs loky", None, note="loky is not installed")
        return
    from quiver import parallel

    def ours(n):
        for _ in itertools.repeat(None, n):
            parallel.get_executor("processes", max_workers=2)

    def theirs(n):
        for _ in itertools.repeat(None, n):
            loky.get_reusable_executor(max_workers=2)

    def ours_task(n):
        for _ in itertools.repeat(None, n):
            parallel.get_executor("processes", max_workers=2).submit(abs, -1).result()

    def theirs_task(n):
        for _ in itertools.repeat(None, n):
            loky.get_reusable_executor(max_workers=2).submit(abs, -1).result()

    for loop in (ours_task, theirs_task):
        loop(4)  # workers started and warm
    qn, an = interleaved([ours, theirs], seconds, repeats)
    table.add("7. get the warm process pool: quiver vs loky", qn, an, ("max_us", 20),
              "loky.get_reusable_executor(max_workers=2)")
    qn, an = interleaved([ours_task, theirs_task], seconds, repeats)
    table.add("7b. warm pool + submit(abs, -1).result()", qn, an, ("speedup", 0.8),
              "a forked child of a warm loky pool hangs >30 s in get_reusable_executor; quiver's never")
    loky.get_reusable_executor().shutdown(wait=True)
    parallel.get_executor("processes").shutdown(wait=True)


class _ManagedCounter:
    """The anchor of row 8: a counter served by a multiprocessing Manager,
    one round trip per increment (its own lock: the server runs a thread per
    connection)."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self._d = {}

    def increment(self, key, n=1):
        with self._lock:
            v = self._d[key] = self._d.get(key, 0) + n
        return v

    def get(self, key):
        with self._lock:
            return self._d.get(key, 0)


class _CounterManager(multiprocessing.managers.BaseManager):
    pass


_CounterManager.register("Counter", _ManagedCounter)


def _increment_worker(counter, n, start, results):
    counter.increment("warm")
    start.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        counter.increment("n")
    results.put((t0, time.perf_counter()))


def increments_per_second(counter, procs, n):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [ctx.Process(target=_increment_worker, args=(counter, n, start, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    start.wait()
    spans = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    if counter.get("n") != procs * n:
        raise AssertionError(f"{counter.get('n')} increments counted of {procs * n}")
    return procs * n / (max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans))


def row_safe_counter(table, tmp, quick, repeats):
    """SafeCounter on the cache's shared store against a Manager-served
    counter: 4 spawned processes increment one key at once."""
    from quiver.parallel import SafeCounter
    c = quiver.Cache.open(os.path.join(tmp, "safe"))
    n = 500 if quick else 5000
    ours, theirs = [], []
    with _CounterManager(ctx=multiprocessing.get_context("spawn")) as manager:
        for _ in range(1 if quick else 3):
            counter = SafeCounter.make(concurrent.futures.ProcessPoolExecutor, cache=c)
            ours.append(increments_per_second(counter, 4, n))
            counter.clear()
            theirs.append(increments_per_second(manager.Counter(), 4, n))
    ours, theirs = statistics.median(ours), statistics.median(theirs)
    table.add("8. increment, 4 processes: SafeCounter vs Manager", 1e9 / ours, 1e9 / theirs, ("speedup", 1),
              f"{ours / 1e3:.0f} k/s vs {theirs / 1e3:.0f} k/s in all, exact; time per increment")
    c.close()


@contextlib.contextmanager
def redis_server(tmp):
    """A private redis-server on a free loopback port, stopped at the end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0?prefix=bench-python:"
    finally:
        proc.terminate()
        proc.wait()


def row_remote(table, tmp, seconds, repeats, quick):
    q = quiver.memo(name="bench_python.remote")(f)
    with redis_server(tmp) as url:
        local = quiver.Cache.open(os.path.join(tmp, "remote-local"))
        remote = quiver.Cache.open(url)
        stack = quiver.Cache.stack(local, remote)
        plain = quiver.Cache.open(os.path.join(tmp, "remote-plain"))
        for c in (plain, remote, stack):
            with quiver.cache(c):
                q(7)

        def under(c):
            def loop(n, _inner=calling(q, 7)):
                with quiver.cache(c):
                    _inner(n)
            return loop

        # The anchor of a remote hit: one GET round trip of as many bytes, on
        # a plain socket from Python.
        port = int(url.split(":")[2].split("/")[0])
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"x" * 43  # an int call's record in Redis (bench_remote measures it)
        conn.sendall(b"*3\r\n$3\r\nSET\r\n$6\r\nanchor\r\n$%d\r\n%s\r\n" % (len(payload), payload))
        conn.recv(64)
        get = b"*2\r\n$3\r\nGET\r\n$6\r\nanchor\r\n"
        want = len(b"$43\r\n") + len(payload) + 2

        def raw_get(n):
            for _ in itertools.repeat(None, n):
                conn.sendall(get)
                got = conn.recv(256)
                while len(got) < want:
                    got += conn.recv(256)

        bare_ns, get_ns, plain_ns, stacked_ns = interleaved(
            [under(remote), raw_get, under(plain), under(stack)], seconds, repeats)
        table.add("6. hit f(int), bare remote tier vs raw GET", bare_ns, get_ns, None,
                  f"one round trip on loopback; a plain local hit is {us(plain_ns)} us")
        table.add("6. local hit through a stack vs plain local hit", stacked_ns, plain_ns, ("speedup", 0.91),
                  "Redis under it, not asked: goal <= 1.1x the plain hit")

        # A remote hit through the stack is a local miss: distinct keys, each
        # stored in Redis first and asked once.
        n = 200 if quick else 2000
        with quiver.cache(remote):
            for i in range(n):
                q(1000 + i)
        with quiver.cache(stack):
            t0 = time.perf_counter_ns()
            for i in range(n):
                q(1000 + i)
            through_ns = (time.perf_counter_ns() - t0) / n
        remote_hits = stack.stats().get("remote_hits")
        table.add("6. remote hit through a stack vs raw GET", through_ns, get_ns, None,
                  f"local miss, Redis hit; mean of {n} distinct keys ({remote_hits} remote hits)")
        conn.close()
        stack.close()
        remote.close()
        local.close()
        plain.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    opts = parser.parse_args()
    seconds, repeats = (0.01, 3) if opts.quick else (0.25, 7)

    base = os.environ.get("QUIVER_BUILD")
    if base:
        os.makedirs(os.path.join(base, "bench-tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="python-", dir=os.path.join(base, "bench-tmp") if base else None)
    print("quiver bench_python: the Python layer against the memoizers it replaces, in the same run")
    print(f"  machine : {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    print(f"  run     : {'quick' if opts.quick else 'full'}; medians of {repeats} interleaved repetitions; "
          f"stores in {tmp}")
    print()
    table = Table()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joblib and fleche chatter about their own defaults
            row_hits(table, tmp, seconds, repeats)
            row_big(table, tmp, seconds, repeats)
            row_stores(table, tmp, seconds, repeats)
            row_processes(table, tmp, opts.quick, repeats)
            row_executor(table, tmp, seconds, repeats)
            row_remote(table, tmp, seconds, repeats, opts.quick)
            row_pool_reuse(table, tmp, seconds, repeats)
            row_safe_counter(table, tmp, opts.quick, repeats)
    finally:
        table.print()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("speedup = anchor time / quiver time (higher is better); a MISS is reported, not an error.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
