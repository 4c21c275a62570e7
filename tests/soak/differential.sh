#!/usr/bin/env bash
# The differential soak (issue 15): 1M random values (SOAK_SCALE scales it)
# whose canonical encoding, value digest and call digest must be the same
# bytes in C, Python and Lua, each decoding the others' bytes back to an
# equal value. tests/differential/test_differential.py at length, in chunks
# of 100,000 values, each with its own seed (QV_DIFF_SEED sets the first; by
# default it changes every run, and each chunk prints the one it used, so a
# failure reproduces with QV_DIFF_SEED=<seed> QV_DIFF_EXAMPLES=100000).
# `make check` runs 10,000 values with a fixed seed.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
total=$(awk -v s="${SOAK_SCALE:-1}" 'BEGIN { n = int(1000000 * s + 0.5); print (n < 1000 ? 1000 : n) }')
chunk=$(( total < 100000 ? total : 100000 ))
first=${QV_DIFF_SEED:-$(date +%s)}
server=$QUIVER_BUILD/tests/differential_server_c
[ -x "$server" ] || { echo "differential: $server is not built (make builds it)"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/differential.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export QUIVER_CACHE=:memory: QV_DIFF_SERVER_C=$server QV_LUA=${QV_LUA:-$(command -v lua5.4)}
export HYPOTHESIS_STORAGE_DIRECTORY=$tmp/hypothesis
cd "$tmp"
echo "differential: $total values in chunks of $chunk, first seed $first"
start=$(date +%s)
done_values=0 agreed_values=0 status=0 i=0
while [ "$done_values" -lt "$total" ]; do
    n=$(( total - done_values < chunk ? total - done_values : chunk ))
    seed=$(( first + i ))
    if QV_DIFF_SEED=$seed QV_DIFF_EXAMPLES=$n python -m pytest -q -s -p no:cacheprovider \
        "$QUIVER_SOURCE/tests/differential" > "$tmp/chunk.log" 2>&1; then
        agreed=$(sed -n 's/^.*differential: \([0-9]*\) values agreed.*/\1/p' "$tmp/chunk.log" | tail -1)
        echo "differential: seed $seed: ${agreed:-0} values agreed"
        done_values=$(( done_values + n )) agreed_values=$(( agreed_values + ${agreed:-0} ))
    else
        echo "differential: seed $seed FAILED:"
        tail -n 60 "$tmp/chunk.log"
        status=1
        break
    fi
    i=$(( i + 1 ))
done
took=$(( $(date +%s) - start ))
echo "differential: $agreed_values values (the boundary values in each chunk included) agreed in C, Python and Lua in $took s ($(( agreed_values / (took > 0 ? took : 1) )) values/s)"
exit $status
