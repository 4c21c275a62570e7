#!/usr/bin/env bash
# The leak soak (issue 15): 1M memoized calls in Python and in Lua on an LMDB
# cache (leak.py, leak.lua), each failing when anonymous resident memory grows
# more than 10% after the warm-up, open descriptors grow at all, or LMDB
# reader slots grow past the 16 an environment pools (one per thread shard);
# each prints its calls, time, memory, descriptors and slots.
# SOAK_SCALE scales the calls (ctest's soak.leaks.short: 0.05, 50k calls).
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
here=$(cd "$(dirname "$0")" && pwd)
calls=$(awk -v s="${SOAK_SCALE:-1}" 'BEGIN { n = int(1000000 * s + 0.5); print (n < 5000 ? 5000 : n) }')
python=$QUIVER_BUILD/venv/bin/python
lua=${QV_LUA:-$(command -v lua5.4)}
mkdir -p "${SOAK_TMP:-${TMPDIR:-/tmp}}"
tmp=$(mktemp -d "${SOAK_TMP:-${TMPDIR:-/tmp}}/leaks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export QUIVER_CACHE=$tmp/default # a stray default cache lands here, never in ~/.cache
export QV_SOAK_READERS=$QUIVER_BUILD/tests/soak/soak_readers
export LUA_CPATH="$QUIVER_BUILD/tests/soak/?.so;$LUA_CPATH"
status=0
"$python" "$here/leak.py" "$tmp/python" "$calls" || status=1
"$lua" "$here/leak.lua" "$tmp/lua" "$calls" || status=1
exit $status
