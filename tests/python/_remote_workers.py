"""A "machine" for test_remote.py: its own local cache directory stacked over
one shared Redis, calling one slow memoized function. Every run of the
function appends a line to QV_RUNS, so the test counts them across
processes.

    python _remote_workers.py LOCAL_DIR REDIS_URL X  ->  prints slow(X)
"""
import json
import os
import sys
import time

import quiver
from quiver import Cache


@quiver.memo(name="remote.slow", version="1")
def slow(x):
    with open(os.environ["QV_RUNS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("QV_SLEEP", "1")))
    return {"double": x * 2, "by": os.getpid()}


if __name__ == "__main__":
    local, url, x = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Cache.open(local) as lc, Cache.open(url) as rc:
        s = Cache.stack(lc, rc)
        with quiver.cache(s):
            r = slow(x)
        stats = s.stats()
        s.close()
    print(json.dumps({"result": r, "remote_hits": stats["remote_hits"], "hits": stats["hits"]}))
