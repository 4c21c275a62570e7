"""What the cluster example's workers run, in a module of its own so that
dask's worker processes import it by name (a memoized function pickles as
its module and name)."""
import os
import threading
import time

import quiver
from distributed import WorkerPlugin

_tier = None    # this worker's stack: its own LMDB directory over the shared Redis
_runs = 0       # how often slow_square's body ran in this worker process
_lock = threading.Lock()


@quiver.memo(name="cluster.slow_square", version="1")
def slow_square(n):
    """A slow call: worth computing once for the whole cluster."""
    global _runs
    with _lock:
        _runs += 1
    time.sleep(0.5)
    return {"n": n, "square": n * n, "computed_by": os.environ["QUIVER_WORKER"]}


def square_on_worker(n):
    """The task dask runs: slow_square(n) through this worker's stack."""
    with quiver.cache(_tier):
        return slow_square(n)


def report():
    """What this worker did: body runs, and its stack's counters."""
    s = _tier.stats()
    return {"worker": os.environ["QUIVER_WORKER"], "runs": _runs, "local": os.environ["QUIVER_CACHE"],
            "hits": s.get("hits", 0), "misses": s.get("misses", 0), "remote_hits": s.get("remote_hits", 0)}


class QuiverTiers(WorkerPlugin):
    """Gives each worker its own local LMDB directory (QUIVER_CACHE) under
    base, stacked over the Redis at url: what a real node would set in its
    environment. LMDB stays on the node's own disk; only Redis is shared."""

    def __init__(self, base, url):
        self.base, self.url = base, url

    def setup(self, worker):
        global _tier
        name = f"worker-{worker.name}"
        os.environ["QUIVER_WORKER"] = name
        os.environ["QUIVER_CACHE"] = os.path.join(self.base, name)
        local = quiver.Cache.open(os.environ["QUIVER_CACHE"])
        _tier = quiver.Cache.stack(local, quiver.Cache.open(self.url))

    def teardown(self, worker):
        global _tier
        if _tier is not None:
            _tier.close()
            _tier = None
