#!/usr/bin/env bash
# The tour: Python, Lua and C share one cache through QUIVER_CACHE. Uses
# QUIVER_CACHE when set, else a fresh cache under build/.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
if [ -z "${QUIVER_CACHE:-}" ]; then
  export QUIVER_CACHE=$QUIVER_BUILD/demo-cache
  rm -rf "$QUIVER_CACHE"
fi
examples=$QUIVER_SOURCE/examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() { echo; echo "== $1"; shift; "$@" | tee -a "$log"; }

echo "Every step calls score(n) under the name shared.score, version 1, in one"
echo "cache: $QUIVER_CACHE"
step "1. Python: a process pool computes score(0..39)" python "$examples/tour.py" 0 39
step "2. Lua computes score(20..59): 20..39 are Python's already" lua5.4 "$examples/tour.lua" 20 59
step "3. C swaps in a memoized function pointer for score(0..79): only 60..79 are new" quiver_demo 0 79
step "4. Python again, score(0..79): every call is a hit, nothing reaches the pool" python "$examples/tour.py" 0 79

echo
echo "== summary: per step (language), calls / hits / misses / time saved"
grep " calls, " "$log"
echo
python "$examples/tour_summary.py"
echo
echo "== the cache, as the quiver CLI sees it"
quiver stats "$QUIVER_CACHE"
quiver verify "$QUIVER_CACHE"
