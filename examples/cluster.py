"""The tour's cluster step: two dask workers, each with a local LMDB cache of
its own, share results through one Redis.

    python examples/cluster.py

It starts a private redis-server on a free loopback port and a
dask.distributed LocalCluster of 2 worker processes. Each worker stacks its
own directory (its QUIVER_CACHE) over the one Redis, as nodes of a real
cluster would: LMDB on each node's own disk, never on NFS; Redis between
them. The same slow calls are then asked of both workers. Everything it
starts is stopped at the end, also on failure."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

CALLS = [3, 4, 5, 6]   # slow_square sleeps 0.5 s per call it really runs
TOGETHER = [7, 8]      # asked of both workers at the same time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir):
    """A redis-server of our own (no persistence) until the block ends."""
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
                                stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None and not ping(port):
                time.sleep(0.02)
            if ping(port):
                yield f"redis://127.0.0.1:{port}/0?prefix=cluster-demo:"
                return
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    sys.exit("cluster.py: redis-server did not start")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    # the workers import cluster_work by name
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, here)
    from distributed import Client, LocalCluster
    from cluster_work import QuiverTiers, report, square_on_worker

    base = tempfile.mkdtemp(prefix="cluster-demo.", dir=os.environ.get("QUIVER_BUILD"))
    t0 = time.perf_counter()
    try:
        with redis_server(base) as url, \
                LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
                             silence_logs=40) as cluster, Client(cluster) as client:
            client.register_plugin(QuiverTiers(base, url))
            by_name = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}
            a, b = by_name[0], by_name[1]  # worker-0 and worker-1
            print(f"redis-server at {url.split('?')[0]}; 2 dask workers, each with its own LMDB directory")

            def ask(who, ns):
                t = time.perf_counter()
                futures = [client.submit(square_on_worker, n, workers=[who], allow_other_workers=False,
                                         pure=False) for n in ns]
                return client.gather(futures), time.perf_counter() - t

            got, secs = ask(a, CALLS)
            print(f"1. worker-0 asks slow_square({CALLS}): {secs:.2f} s, computed by "
                  f"{sorted({r['computed_by'] for r in got})}")
            got, secs = ask(b, CALLS)
            elsewhere = sum(r["computed_by"] != "worker-1" for r in got)
            print(f"2. worker-1 asks the same calls:       {secs:.2f} s, {elsewhere} of {len(CALLS)} answers "
                  f"computed by {sorted({r['computed_by'] for r in got})}, read through Redis")
            t = time.perf_counter()
            both = [client.submit(square_on_worker, n, workers=[w], allow_other_workers=False, pure=False)
                    for n in TOGETHER for w in (a, b)]
            got += client.gather(both)
            by = {n: sorted({r["computed_by"] for r in got if r["n"] == n}) for n in TOGETHER}
            print(f"3. both workers ask slow_square({TOGETHER}) at the same time: {time.perf_counter() - t:.2f} s; "
                  f"the answers both got were computed by {by}")
            if any(r["square"] != r["n"] ** 2 for r in got):
                sys.exit("cluster.py: a wrong result")

            reports = sorted(client.run(report).values(), key=lambda r: r["worker"])
            print()
            for r in reports:
                print(f"   {r['worker']}: ran the body {r['runs']}x, took {r['remote_hits']} answers from Redis; "
                      f"its own cache is {r['local']}")
            runs = sum(r["runs"] for r in reports)
            want = len(CALLS) + len(TOGETHER)
            print(f"\n{want} distinct calls and {runs} runs of the body in the whole cluster "
                  f"({time.perf_counter() - t0:.1f} s in all).")
            print("Each worker keeps its own LMDB cache; a miss there asks Redis before computing, a result\n"
                  "is written to both, and a call two workers ask for at once runs on one of them while the\n"
                  "other waits on its lease in Redis. Point real nodes at a real Redis the same way (README).")
            if runs != want:
                sys.exit(f"cluster.py: {runs} runs for {want} distinct calls")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
