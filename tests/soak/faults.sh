#!/usr/bin/env bash
# The storage-fault soak (issue 15): tests/c/test_faults.c's scenarios at
# length. The full disk is filled and freed 40 times (on a tmpfs, and under
# RLIMIT_FSIZE) with every reported store checked each time, and 80 more
# readers are killed per round on top of the first 200 (3,400 in all), a new
# process clearing their slots each round. It prints rounds, stores that fit
# or failed softly, entries kept, and reader slots. `make check` runs one
# round. SOAK_SCALE scales the rounds.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
rounds=$(awk -v s="${SOAK_SCALE:-1}" 'BEGIN { n = int(40 * s + 0.5); print (n < 1 ? 1 : n) }')
test=$QUIVER_BUILD/tests/test_faults_asan
[ -x "$test" ] || { echo "faults: $test is not built (make check builds it)"; exit 1; }
mkdir -p "${SOAK_TMP:-${TMPDIR:-/tmp}}"
tmp=$(mktemp -d "${SOAK_TMP:-${TMPDIR:-/tmp}}/faults.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export QUIVER_CACHE=$tmp/default QV_TEST_TMP=$tmp QVT_FAULT_ROUNDS=$rounds
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "faults: $rounds rounds"
"$test" 2>&1 | grep -E "^(full disk|map of|reader slots)|FAILED|PASSED|\.c:[0-9]+:"
exit "${PIPESTATUS[0]}"
