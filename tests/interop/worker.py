"""The Python worker of the interop tests (see worker_c.c for the protocol).

    python worker.py compute|hits FIRST LAST [SEED]

The cache is QUIVER_CACHE's. SEED shuffles the order of the calls, so that
concurrent workers meet on different keys. With QV_INTEROP_LOG each run of
the body appends "python N" to that file; QV_INTEROP_SLEEP_MS makes it slow."""
import json
import os
import random
import sys
import time

import quiver

runs = 0
hits_only = False


@quiver.memo(name="interop.square", version="1")
def square(n, tag):
    global runs
    runs += 1
    if hits_only:
        sys.exit(f"worker.py: the body ran for ({n}, {tag!r}) in hits mode")
    _log(n)
    return n * n + len(tag)


def _log(n):
    if os.environ.get("QV_INTEROP_SLEEP_MS"):
        time.sleep(int(os.environ["QV_INTEROP_SLEEP_MS"]) / 1000)
    if os.environ.get("QV_INTEROP_LOG"):
        with open(os.environ["QV_INTEROP_LOG"], "a") as f:
            f.write(f"python {n}\n")


def main(mode, first, last, seed=None):
    global hits_only
    hits_only = mode == "hits"
    first, last = int(first), int(last)
    keys = list(range(first, last + 1))
    if seed is not None:
        random.Random(int(seed)).shuffle(keys)
    total = sum(square(n, "alpha") for n in keys)
    print(json.dumps({"lang": "python", "runs": runs, "sum": total, "digest": square.digest(first, "alpha")}))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("compute", "hits"):
        sys.exit("usage: worker.py compute|hits FIRST LAST [SEED]")
    main(*sys.argv[1:])
