#!/usr/bin/env bash
# Run the libFuzzer targets of fuzz/, one at a time (they share the machine).
#
#   fuzz.sh [--runs N | --seconds S | --replay] [NAME...]
#
# NAME is decoder, record, record_struct or signature (default: all four).
#   --runs N     run each fuzzer to N executions (default: FUZZ_RUNS, else 10M)
#   --seconds S  run each fuzzer for S seconds (make check's short form)
#   --replay     run each file of tests/corpus through the fuzzer once
# Seeds: the shared vectors (valid and invalid), every hex example of
# docs/FORMAT.md, the signatures in the docs and C tests (fuzz/seeds.py),
# and tests/corpus. The corpus each fuzzer grows is kept in
# $QUIVER_BUILD/fuzz-corpus/NAME, so a later run starts where this one ended.
# Prints executions, exec/s and time per fuzzer; a crash fails the run and
# leaves its input in $QUIVER_BUILD/fuzz-artifacts (copy it to tests/corpus/).
set -euo pipefail
: "${QUIVER_BUILD:?source build/env.sh first}"
source_dir=${QUIVER_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
mode=runs
amount=${FUZZ_RUNS:-10000000}
case "${1:-}" in
--runs) mode=runs amount=$2; shift 2 ;;
--seconds) mode=seconds amount=$2; shift 2 ;;
--replay) mode=replay; shift ;;
-*) echo "usage: fuzz.sh [--runs N | --seconds S | --replay] [NAME...]" >&2; exit 2 ;;
esac
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(decoder record record_struct signature)
regressions="$source_dir/tests/corpus"
artifacts="$QUIVER_BUILD/fuzz-artifacts"
logs="$QUIVER_BUILD/fuzz-logs"
mkdir -p "$artifacts" "$logs"
python=$(command -v python3)
[ -x "$QUIVER_BUILD/venv/bin/python" ] && python="$QUIVER_BUILD/venv/bin/python"

summary=()
failed=0
for name in "${names[@]}"; do
    fuzzer="$QUIVER_BUILD/bin/fuzz_$name"
    [ -x "$fuzzer" ] || { echo "fuzz: $fuzzer was not built (libFuzzer needs clang)" >&2; exit 1; }
    log="$logs/$name.log"
    if [ "$mode" = replay ]; then
        log="$logs/$name.replay.log" # ctest may fuzz and replay NAME at once
        inputs=("$regressions"/*)
        [ -e "${inputs[0]}" ] || { echo "fuzz: no inputs in $regressions" >&2; exit 1; }
        if ! "$fuzzer" -runs=1 "${inputs[@]}" >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "fuzz: $name failed on an input of tests/corpus (log: $log)" >&2
            exit 1
        fi
        echo "fuzz: $name replayed ${#inputs[@]} inputs of tests/corpus"
        continue
    fi
    corpus="$QUIVER_BUILD/fuzz-corpus/$name"
    seeds="$QUIVER_BUILD/fuzz-seeds/$name"
    kind=bytes
    [ "$name" = signature ] && kind=signatures
    rm -rf "$seeds"
    mkdir -p "$corpus" "$seeds"
    "$python" "$source_dir/fuzz/seeds.py" "$kind" "$seeds" >/dev/null
    cp "$regressions"/* "$seeds"/ 2>/dev/null || true
    limit=(-runs="$amount")
    [ "$mode" = seconds ] && limit=(-max_total_time="$amount")
    echo "fuzz: $name: ${limit[0]#-} (log: $log)"
    start=$(date +%s.%N)
    status=0
    # new inputs go to the first directory only: the seeds stay as they are.
    # RSS grows by about 0.2 GB per million executions under ASan (no leak:
    # LSan finds none), so 10M need more than libFuzzer's default 2 GB.
    "$fuzzer" "${limit[@]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$name-" "$corpus" "$seeds" >"$log" 2>&1 || status=$?
    end=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    line=$(printf '%-14s %12s executions %8s exec/s %6s s' "$name" "${execs:-?}" "${rate:-?}" "$seconds")
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        line="$line  FAILED (exit $status; input in $artifacts)"
        failed=1
    fi
    summary+=("$line")
    echo "fuzz: $line"
done

if [ "$mode" != replay ]; then
    echo "fuzz: summary"
    printf '  %s\n' "${summary[@]}"
fi
exit "$failed"
