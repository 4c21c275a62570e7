#!/usr/bin/env bash
# The tour. Uses QUIVER_CACHE when set, else a fresh cache under build/.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
export QUIVER_CACHE=${QUIVER_CACHE:-$QUIVER_BUILD/demo-cache}
echo "== C: a memoized function pointer, twice over, into $QUIVER_CACHE"
quiver_demo 0 39
quiver_demo 20 59
echo
echo "== the cache, as the quiver CLI sees it"
quiver stats "$QUIVER_CACHE"
quiver verify "$QUIVER_CACHE"
