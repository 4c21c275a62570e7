#!/usr/bin/env bash
# The kill loops (issue 15): 100 rounds of writers in C, Python and Lua
# SIGKILLed mid-store, each followed by `quiver verify` and a check that
# every store a writer reported hits with its value (kill_loops.py says
# what "reported" means). Prints rounds, writers killed, stores checked and
# the time. SOAK_SCALE scales the rounds (ctest's soak.kill_loops.short: 0.05, 5 rounds).
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
here=$(cd "$(dirname "$0")" && pwd)
rounds=$(awk -v s="${SOAK_SCALE:-1}" 'BEGIN { n = int(100 * s + 0.5); print (n < 1 ? 1 : n) }')
export QV_LUA=${QV_LUA:-$(command -v lua5.4)}
mkdir -p "${SOAK_TMP:-${TMPDIR:-/tmp}}"
tmp=$(mktemp -d "${SOAK_TMP:-${TMPDIR:-/tmp}}/kill_loops.XXXXXX")
export QUIVER_CACHE=$tmp/default # a stray default cache lands here, never in ~/.cache
export LUA_CPATH="$QUIVER_BUILD/tests/soak/?.so;$LUA_CPATH"
if "$QUIVER_BUILD/venv/bin/python" "$here/kill_loops.py" "$rounds" "$tmp"; then
    rm -rf "$tmp"
else
    echo "kill loops: the cache and the writers' logs are kept in $tmp" >&2
    exit 1
fi
