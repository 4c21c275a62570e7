#!/usr/bin/env bash
# Every benchmark, in one run, printing ratios against the floors and anchors
# measured alongside (Python's ThreadPoolExecutor first, handed over in the
# environment). Pass --quick for a smoke run.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
# A benchmark never touches the user's default cache (DESIGN section 9):
# whatever memoizes without an active cache lands in a directory of this run.
QUIVER_CACHE=$(mktemp -d "$QUIVER_BUILD/bench-default.XXXXXX")
export QUIVER_CACHE
trap 'rm -rf "$QUIVER_CACHE"' EXIT
tasks=200000
[ "${1:-}" = "--quick" ] && tasks=20000
eval "$(python3 "$QUIVER_SOURCE/bench/tpe.py" "$tasks")"
export QV_TPE_ROUNDTRIP_NS QV_TPE_TASK_NS
"$QUIVER_BUILD/bin/bench_core" "$@"
"$QUIVER_BUILD/bin/bench_lease" "$@"
"$QUIVER_BUILD/bin/bench_remote" "$@"
python3 "$QUIVER_SOURCE/bench/bench_python.py" "$@"
lua5.4 "$QUIVER_SOURCE/bench/bench_lua.lua" "$@"
