"""The leak soak in Python (leaks.sh runs it, and leak.lua is its twin).

    python leak.py DIR CALLS

Makes CALLS memoized calls on an LMDB cache in DIR: misses that store
(distinct keys), hits (a hot set of repeated keys), keyword calls, a memo
returning futures, contexts and metadata entered and left around every
batch, and a second handle on the same path opened and closed every 1000
calls. After a warm-up of a fifth of the calls, and at the end, it samples
resident memory, open descriptors and the LMDB reader slots this process
holds, and fails when anonymous resident memory grew by more than 10%,
descriptors grew at all, or reader slots grew past the 16 an environment
pools (one per thread shard). Each sample follows a full
collection and malloc_trim(0): a few hundred KiB that free() keeps cached,
or not, at the moment of a sample would otherwise pass for growth.

Anonymous memory (statm's resident minus shared) is the measure: the map's
file pages also count as resident, but they are the cache's data, growing
with every distinct key stored, and the kernel drops them at will."""
import concurrent.futures
import ctypes
import gc
import os
import random
import subprocess
import sys
import time

import quiver

HOT = 1000          # keys hit again and again once the warm-up stored them
HANDLE_EVERY = 1000  # calls between opening and closing a second handle
GROWTH = 0.10
SHARDS = 16         # QV_SHARDS: the read transactions an environment pools, one per thread shard
_libc = ctypes.CDLL(None)


@quiver.memo(name="soak.leak", version="1")
def record(n, kind):
    return {"n": n, "kind": kind, "pad": "x" * (n % 400)}  # up to 400 bytes: inline and values table


@quiver.memo(name="soak.leak.scaled", version="1")
def scaled(n, *, scale=1.0):
    return [n * scale, -n, str(n).encode()]


@quiver.memo(name="soak.leak.future", version="1")
def later(n):
    f = concurrent.futures.Future()
    f.set_result(n * n)
    return f


def probe(path):
    gc.collect()
    _libc.malloc_trim(0)  # count live memory, not what free() kept cached
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        resident, shared = (int(x) for x in f.read().split()[1:3])
    fds = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir holds
    envs = [path] + [d for d in (os.path.join(path, "shared"),) if os.path.isdir(d)]
    out = subprocess.run([os.environ["QV_SOAK_READERS"], str(os.getpid()), *envs],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"rss": resident * page, "anon": (resident - shared) * page, "fds": fds, "readers": int(out[0])}


def run(c, path, rng, first, last):
    """Calls first..last-1, in batches of 100 under the cache's context."""
    for batch in range(first, last, 100):
        with quiver.cache(c):
            with quiver.meta(batch=batch // 100 % 10) if batch // 100 % 7 == 0 else _nothing():
                for i in range(batch, min(batch + 100, last)):
                    r = rng.random()
                    if r < 0.15:
                        record(i, "distinct")
                    elif r < 0.20:
                        f = later(i % 5000)  # a Future on a miss, the stored value on a hit
                        if isinstance(f, concurrent.futures.Future):
                            f.result()
                    elif r < 0.25:
                        scaled(i % 2000, scale=1.5)
                    else:
                        record(rng.randrange(HOT), "hot")
                    if i % HANDLE_EVERY == HANDLE_EVERY - 1:
                        other = quiver.Cache.open(path, durability="fast")
                        with quiver.cache(other):
                            record(rng.randrange(HOT), "hot")
                        other.close()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def mib(n):
    return f"{n / 2**20:.1f}"


def main(path, calls):
    calls = int(calls)
    warm = calls // 5
    rng = random.Random(15)
    c = quiver.Cache.open(path, durability="fast")
    t0 = time.monotonic()
    run(c, path, rng, 0, warm)
    before = probe(path)
    run(c, path, rng, warm, calls)
    after = probe(path)
    elapsed = time.monotonic() - t0
    s = c.stats()
    c.close()
    growth = after["anon"] / before["anon"] - 1
    bad = []
    if growth > GROWTH:
        bad.append(f"anonymous memory grew {growth:+.1%} after the warm-up (limit {GROWTH:+.0%})")
    # Reader slots: a thread's first read takes the pooled transaction of its
    # shard (QV_SHARDS, 16), and pools retire idle workers and start new ones,
    # each on the next shard; so up to 16 slots is the design, not a leak.
    allowed = {"fds": before["fds"], "readers": max(before["readers"], SHARDS)}
    for k, what in (("fds", "open descriptors"), ("readers", "reader slots")):
        if after[k] > allowed[k]:
            bad.append(f"{what} grew from {before[k]} to {after[k]} (at most {allowed[k]})")
    print(f"python: {calls} calls ({s['stores']} stores, {s['hits']} hits) in {elapsed:.1f} s; "
          f"rss {mib(before['rss'])} -> {mib(after['rss'])} MiB, anon {mib(before['anon'])} -> "
          f"{mib(after['anon'])} MiB ({growth:+.1%}, limit {GROWTH:+.0%}) after {warm} warm-up calls; "
          f"fds {before['fds']} -> {after['fds']}; reader slots {before['readers']} -> {after['readers']}: "
          + ("ok" if not bad else "FAILED"))
    for b in bad:
        print(f"python: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: leak.py DIR CALLS")
    sys.exit(main(*sys.argv[1:]))
