#!/usr/bin/env bash
# The tour. Uses QUIVER_CACHE when set, else a fresh cache under build/.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
export QUIVER_CACHE=${QUIVER_CACHE:-$QUIVER_BUILD/demo-cache}
echo "== C: memoizing a slow function into $QUIVER_CACHE"
quiver_demo "$QUIVER_CACHE"
echo
echo "== the cache, as the quiver CLI sees it"
quiver ls "$QUIVER_CACHE"
quiver verify "$QUIVER_CACHE"
