#!/usr/bin/env bash
# The tour: Python, Lua and C share one cache with no configuration at all:
# each uses the default cache, $XDG_CACHE_HOME/quiver, as a user's programs
# would (~/.cache/quiver). The tour points XDG_CACHE_HOME at a fresh
# directory under build/, so that it never touches yours; with QUIVER_CACHE
# set, it uses that cache instead.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
if [ -z "${QUIVER_CACHE:-}" ]; then
  unset QUIVER_CACHE
  export XDG_CACHE_HOME=$QUIVER_BUILD/demo-xdg
  rm -rf "$XDG_CACHE_HOME"
  cache_dir=$XDG_CACHE_HOME/quiver
else
  cache_dir=$QUIVER_CACHE
fi
examples=$QUIVER_SOURCE/examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() { echo; echo "== $1"; shift; "$@" | tee -a "$log"; }

echo "Every step calls score(n) under the name shared.score, version 1, in one"
echo "cache: $cache_dir"
step "1. Python: a process pool computes score(0..39)" python "$examples/tour.py" 0 39
step "2. Lua computes score(20..59): 20..39 are Python's already" lua5.4 "$examples/tour.lua" 20 59
step "3. C swaps in a memoized function pointer for score(0..79): only 60..79 are new" quiver_demo 0 79
step "4. Python again, score(0..79): every call is a hit, nothing reaches the pool" python "$examples/tour.py" 0 79

echo
echo "== summary: per step (language), calls / hits / misses"
grep " calls, " "$log"
echo
python "$examples/tour_summary.py"
echo
echo "== the cache, as the quiver CLI sees it"
quiver stats "$cache_dir"
quiver verify "$cache_dir"

# Across machines: its own redis-server and worker directories, not the cache above.
step "5. Across machines: two dask workers, each with its own LMDB cache, share one Redis" \
  python "$examples/cluster.py"
