"""Python's ThreadPoolExecutor, the anchor for quiver's pool: prints shell
assignments of nanoseconds per empty task (round trip and throughput)."""
import concurrent.futures
import sys
import time


def nothing():
    return None


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        ex.submit(nothing).result()  # start the workers
        rounds = 2000
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            ex.submit(nothing).result()
        roundtrip = (time.perf_counter_ns() - t0) / rounds
        t0 = time.perf_counter_ns()
        futures = [ex.submit(nothing) for _ in range(tasks)]
        for f in futures:
            f.result()
        per_task = (time.perf_counter_ns() - t0) / tasks
    print(f"QV_TPE_ROUNDTRIP_NS={roundtrip:.1f}")
    print(f"QV_TPE_TASK_NS={per_task:.1f}")


if __name__ == "__main__":
    main()
