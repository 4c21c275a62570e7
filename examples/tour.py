"""The Python part of the tour: a process pool fills the shared cache.

    python examples/tour.py FIRST LAST

score(n) is the tour's "shared.score": the C and Lua parts compute the same
function under the same name and version, so what any of them stored is a
hit here. The cache is the default one every language uses (QUIVER_CACHE,
else ~/.cache/quiver), which the pool's workers find the same way."""
import sys
import time

import quiver
from tour_score import score


def main(first, last):
    cache = quiver.current_cache()
    keys = range(first, last + 1)
    # the hits to come, and the run time they save, from the records
    stored = [n for n in keys if score.contains(n)]
    saved = sum(cache.load(score.digest(n)).duration for n in stored)

    t0 = time.perf_counter()
    runner = quiver.Runner(parallel="processes", progress=True)
    for n in keys:
        runner.add(n, score, n)
    results = runner.run()
    elapsed = time.perf_counter() - t0
    failed = [k for k, v in results.items() if isinstance(v, BaseException)]
    if failed:
        sys.exit(f"tour.py: score failed for {failed}: {results[failed[0]]!r}")
    print(f"python  score({first}..{last}) on a process pool: sum {sum(results.values())}, {elapsed:.2f} s")
    print(f"python  {len(keys):3d} calls, {len(stored):3d} hits, {len(keys) - len(stored):3d} misses, "
          f"{saved:.3f} s saved (cache {cache.path})")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
