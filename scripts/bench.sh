#!/usr/bin/env bash
# Every benchmark, in one run, printing ratios against the floors measured alongside.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
"$QUIVER_BUILD/bin/bench_core"
