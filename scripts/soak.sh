#!/usr/bin/env bash
# The long forms of the fault tests (issue 15): every tests/soak/*.sh in
# order, each printing its own figures. SOAK_SCALE=0.01 runs a short version.
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
status=0
for part in "$QUIVER_SOURCE"/tests/soak/*.sh; do
    echo "== $(basename "$part" .sh)"
    start=$(date +%s)
    bash "$part" || status=1
    echo "== $(basename "$part" .sh): $(( $(date +%s) - start )) s"
done
exit $status
