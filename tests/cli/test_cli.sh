#!/bin/sh
# The quiver tool opens existing caches only: every command given a path that
# is not a directory holding data.mdb exits with status 3, says why, and
# creates nothing; on a real cache the commands work.
# Usage: test_cli.sh QUIVER MAKE_CACHE TMPDIR
set -u
quiver=$1 make_cache=$2 tmp=$3
rm -rf "$tmp" && mkdir -p "$tmp" || exit 1
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
# run WANT_STATUS ARGS...: run quiver, output in $tmp/out and $tmp/err
run() {
    want=$1
    shift
    "$quiver" "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    if [ "$got" != "$want" ]; then
        fail "quiver $*: exit status $got, want $want"
        cat "$tmp/out" "$tmp/err"
    fi
}

cache=$tmp/cache
digest=$("$make_cache" "$cache") || exit 1
mkdir "$tmp/empty"
echo "not a cache" >"$tmp/file"

for path in "$tmp/typo" "$tmp/typo/deeper" "$tmp/empty" "$tmp/file" ":memory:"; do
    for cmd in "stats" "stats --json" "stats --zero" "ls" "ls cli.big" "ls cli.big --json" "show $digest" "evict $digest" "clear" \
        "clear cli.big" "gc" "verify" "verify --repair"; do
        # shellcheck disable=SC2086 # split the command into its words
        set -- $cmd
        name=$1
        shift
        run 3 "$name" "$path" "$@"
        grep -q "not a quiver cache" "$tmp/err" || fail "quiver $name $path $*: no clear message: $(cat "$tmp/err")"
    done
done
[ ! -e "$tmp/typo" ] || fail "a mistyped path was created: $(find "$tmp/typo")"
[ -z "$(ls -A "$tmp/empty")" ] || fail "files were created in an empty directory: $(ls -A "$tmp/empty")"
[ "$(cat "$tmp/file")" = "not a cache" ] || fail "a regular file was changed"
[ ! -e ":memory:" ] || fail "a directory named :memory: was created"

# usage errors are found before PATH is touched
run 2 evict "$tmp/typo"
run 2 frobnicate "$tmp/typo"
run 2 verify "$tmp/typo" --fix
run 2 ls "$tmp/typo" a b
run 2 ls "$tmp/typo" --json --json
run 2 ls "$tmp/typo" --long
run 2 clear "$tmp/typo" a b
run 2 stats "$tmp/typo" --zero --zero
run 2 stats "$tmp/typo" --bogus
[ ! -e "$tmp/typo" ] || fail "a usage error created the path"

# the real cache
run 0 stats "$cache"
grep -q "^entries: 2$" "$tmp/out" || fail "stats: $(cat "$tmp/out")"
grep -q "^bytes: [0-9]* ([0-9.]* KiB)$" "$tmp/out" || fail "stats: bytes not in KiB: $(cat "$tmp/out")"
grep -q "^max_bytes: 0 (no limit)$" "$tmp/out" || fail "stats: max_bytes: $(cat "$tmp/out")"
# the totals of every process that wrote: make_cache stored 2 calls and hit one twice
grep -q "^total_hits: 2$" "$tmp/out" && grep -q "^total_stores: 2$" "$tmp/out" || fail "stats: totals: $(cat "$tmp/out")"
grep -q "^saved: 0 (0 ns)$" "$tmp/out" || fail "stats: saved: $(cat "$tmp/out")"
# function, calls, bytes, hits, misses, stores, evicted, corrupt, saved (make_cache stores and hits
# without the call runtime, so no misses are counted by name)
grep -q "^cli.big  *1  *4.00 KiB  *2  *0  *1  *0  *0  *0 ns$" "$tmp/out" || fail "stats: per function: $(cat "$tmp/out")"
run 0 stats "$cache" --json
grep -q '"entries": 2' "$tmp/out" || fail "stats --json: $(cat "$tmp/out")"
python3 - "$tmp/out" <<'PY' || fail "stats --json: $(cat "$tmp/out")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["total_hits"] == 2 and s["total_stores"] == 2 and s["saved_ns"] == 0, s
assert s["functions"]["cli.big"] == {"calls": 1, "result_bytes": 4099, "hits": 2, "misses": 0, "stores": 1,
                                     "evictions": 0, "corrupt": 0, "saved_ns": 0}, s
PY
run 0 ls "$cache"
[ "$(wc -l <"$tmp/out")" -eq 2 ] || fail "ls: $(cat "$tmp/out")"
run 0 ls "$cache" cli.big
grep -q "^$digest" "$tmp/out" || fail "ls NAME: $(cat "$tmp/out")"
# make_cache hit cli.big twice and closed, which wrote the counts
grep -q "  (2 hits, last 20[0-9-]*T[0-9:]*Z)$" "$tmp/out" || fail "ls shows no hits: $(cat "$tmp/out")"
grep -q " \[4.00 KiB, computed in [0-9.]* [mun]*s\]  (2 hits" "$tmp/out" || fail "ls: no size and time: $(cat "$tmp/out")"
run 0 ls "$cache" cli.small
grep -q "  (0 hits)$" "$tmp/out" || fail "ls shows hits of a call never hit: $(cat "$tmp/out")"
grep -q " \[1 B, computed in 1.50 us\]  " "$tmp/out" || fail "ls: no size and time: $(cat "$tmp/out")"
# --json: one array, an object per call with its digest, size and hits
run 0 ls "$cache" --json
python3 - "$tmp/out" "$digest" <<'PY' || fail "ls --json: $(cat "$tmp/out")"
import json, sys
calls = {c["digest"]: c for c in json.load(open(sys.argv[1]))}
big = calls[sys.argv[2]]
assert len(calls) == 2 and big["name"] == "cli.big" and big["args"] == [7], calls
assert big["hits"] == 2 and big["result_bytes"] == 4099 and len(big["result"]["bytes"]) == 8192, big
PY
run 0 ls "$cache" --json cli.small
grep -q '"name": "cli.small"' "$tmp/out" && ! grep -q cli.big "$tmp/out" || fail "ls --json NAME: $(cat "$tmp/out")"
run 0 ls "$cache" cli.none --json
[ "$(cat "$tmp/out")" = "[]" ] || fail "ls --json of no calls: $(cat "$tmp/out")"
run 0 show "$cache" "$digest"
grep -q '"hits": 2' "$tmp/out" || fail "show: no hits: $(cat "$tmp/out")"
# counts describe the cache, not the call: an export leaves them out, and its
# import (which refuses an item of any other shape) starts them at 0
run 0 export "$cache" "$tmp/hits.cbor"
run 0 import "$tmp/hits-copy" "$tmp/hits.cbor"
grep -q "^calls stored: 2$" "$tmp/out" || fail "import of a cache with hits: $(cat "$tmp/out" "$tmp/err")"
run 0 ls "$tmp/hits-copy" cli.big
grep -q "  (0 hits)$" "$tmp/out" || fail "hits crossed an export: $(cat "$tmp/out")"
run 0 show "$cache" "$digest"
grep -q "cli.big" "$tmp/out" || fail "show: $(cat "$tmp/out")"
run 0 verify "$cache"
grep -q "bad entries: 0" "$tmp/out" || fail "verify: $(cat "$tmp/out")"
run 0 evict "$cache" "$digest"
run 1 evict "$cache" "$digest"
run 0 gc "$cache"
run 0 verify "$cache" --repair
run 0 stats "$cache"
grep -q "^entries: 1$" "$tmp/out" || fail "stats after evict: $(cat "$tmp/out")"
grep -q "^values: 0$" "$tmp/out" || fail "the evicted call's value is still stored: $(cat "$tmp/out")"

# totals add up across processes, and --zero sets them to 0 (not the per-call hits)
"$make_cache" "$tmp/twice" >/dev/null && "$make_cache" "$tmp/twice" >/dev/null || exit 1
run 0 stats "$tmp/twice"
grep -q "^total_hits: 4$" "$tmp/out" && grep -q "^total_stores: 4$" "$tmp/out" || fail "totals of two processes: $(cat "$tmp/out")"
run 0 stats "$tmp/twice" --zero
grep -q "^total_hits: 4$" "$tmp/out" || fail "stats --zero shows the totals first: $(cat "$tmp/out")"
run 0 stats "$tmp/twice" --json
grep -q '"total_hits": 0, "total_misses": 0, "total_stores": 0' "$tmp/out" || fail "stats --zero: $(cat "$tmp/out")"
run 0 ls "$tmp/twice" cli.big
grep -q "  ([1-9][0-9]* hits\?, last" "$tmp/out" || fail "stats --zero cleared the per-call hits: $(cat "$tmp/out")"

# clear NAME removes that function's calls, clear the rest
"$make_cache" "$tmp/clear" >/dev/null || exit 1
run 0 clear "$tmp/clear" cli.small
grep -q "^calls removed: 1$" "$tmp/out" || fail "clear NAME: $(cat "$tmp/out")"
run 0 ls "$tmp/clear"
[ "$(wc -l <"$tmp/out")" -eq 1 ] && grep -q cli.big "$tmp/out" || fail "clear NAME left: $(cat "$tmp/out")"
run 0 clear "$tmp/clear"
grep -q "^calls removed: 1$" "$tmp/out" || fail "clear: $(cat "$tmp/out")"
run 0 stats "$tmp/clear"
grep -q "^entries: 0$" "$tmp/out" && grep -q "^values: 0$" "$tmp/out" || fail "clear left: $(cat "$tmp/out")"

# progress: with QUIVER_PROGRESS_INTERVAL=0 every report is a line on stderr
# (not a terminal here): several per phase of a 3000-call pass, counting up
# to a last line at 100%; with the default interval a short pass prints none.
big=$tmp/big
"$make_cache" "$big" 3000 >/dev/null || exit 1
# progress_lines CMD PHASE: check the lines of PHASE in $tmp/err
progress_lines() {
    grep "^quiver: $2: " "$tmp/err" >"$tmp/lines"
    n=$(wc -l <"$tmp/lines")
    [ "$n" -ge 5 ] || fail "$1: $n progress lines for $2, want several: $(cat "$tmp/err")"
    tail -n 1 "$tmp/lines" | grep -q ": \([0-9]*\)/\1 (100%)$" || fail "$1: $2 does not end at 100%: $(tail -n 1 "$tmp/lines")"
    sed 's/^[^:]*: [^:]*: \([0-9]*\)\/.*/\1/' "$tmp/lines" | sort -n -c 2>/dev/null || fail "$1: $2 does not count up"
}
QUIVER_PROGRESS_INTERVAL=0 run 0 verify "$big"
grep -q "bad entries: 0" "$tmp/out" || fail "verify with progress: $(cat "$tmp/out")"
progress_lines verify "checking calls"
QUIVER_PROGRESS_INTERVAL=0 run 0 gc "$big"
progress_lines gc "marking calls"
grep -q "^quiver: sweeping values: 1/1 (100%)$" "$tmp/err" || fail "gc: no sweep line: $(cat "$tmp/err")"
QUIVER_PROGRESS_INTERVAL=0 run 0 verify "$big" --repair
progress_lines "verify --repair" "checking calls"
QUIVER_PROGRESS_INTERVAL=0 run 0 export "$big" "$tmp/big.cbor"
progress_lines export "exporting calls"
QUIVER_PROGRESS_INTERVAL=0 run 0 import "$tmp/bigcopy" "$tmp/big.cbor"
progress_lines import "checking file"
progress_lines import "storing calls"
grep -q "^calls stored: 3002$" "$tmp/out" || fail "import of the big cache: $(cat "$tmp/out")"
run 0 verify "$big"
[ ! -s "$tmp/err" ] || fail "a short pass printed progress at the default interval: $(cat "$tmp/err")"
QUIVER_PROGRESS_INTERVAL=soon run 2 verify "$big"
grep -q "QUIVER_PROGRESS_INTERVAL=soon is not a number" "$tmp/err" || fail "bad interval: $(cat "$tmp/err")"
# on a terminal, a bar redrawn in place (when script(1) can give us one)
if command -v script >/dev/null 2>&1; then
    QUIVER_PROGRESS_INTERVAL=0 script -qec "'$quiver' verify '$big'" /dev/null >"$tmp/tty" 2>&1
    grep -q "checking calls *\[#*  *\] *[0-9]*% 256/3002" "$tmp/tty" || fail "no bar on a terminal: $(head -c 300 "$tmp/tty")"
    grep -q "\[#\{30\}\] 100% 3002/3002" "$tmp/tty" || fail "the bar does not reach 100%: $(tail -c 300 "$tmp/tty")"
    QUIVER_PROGRESS_INTERVAL=0 script -qec "'$quiver' export '$big' '$tmp/tty.cbor'" /dev/null >"$tmp/tty" 2>&1
    grep -q "exporting calls *\[#\{30\}\] 100% 3002/3002" "$tmp/tty" || fail "no export bar on a terminal: $(tail -c 300 "$tmp/tty")"
    script -qec "'$quiver' export '$big' -; echo status \$?" /dev/null >"$tmp/tty" 2>&1
    grep -q "not writing CBOR to a terminal" "$tmp/tty" && grep -q "status 2" "$tmp/tty" ||
        fail "export wrote CBOR to a terminal: $(head -c 300 "$tmp/tty")"
fi

# export and import: a cache's calls go through a CBOR sequence file and come
# back identical (same digests, results, times, language and metadata), and
# exporting the copy gives the same bytes
ex=$tmp/ex
"$make_cache" "$ex" 5 rich >/dev/null || exit 1
run 0 export "$ex" "$tmp/ex.cbor"
grep -q "^calls exported: 8$" "$tmp/out" || fail "export: $(cat "$tmp/out")"
run 0 import "$tmp/copy" "$tmp/ex.cbor"
grep -q "^calls stored: 8$" "$tmp/out" || fail "import: $(cat "$tmp/out")"
grep -q "^calls skipped: 0 " "$tmp/out" || fail "import: $(cat "$tmp/out")"
"$quiver" ls "$ex" >"$tmp/ls.ex" && "$quiver" ls "$tmp/copy" >"$tmp/ls.copy" || fail "ls after import"
[ "$(wc -l <"$tmp/ls.ex")" -eq 8 ] && cmp -s "$tmp/ls.ex" "$tmp/ls.copy" || fail "import changed the calls: $(cat "$tmp/ls.copy")"
for d in $(cut -c 1-32 "$tmp/ls.ex"); do
    "$quiver" show "$ex" "$d" >"$tmp/show.ex" && "$quiver" show "$tmp/copy" "$d" >"$tmp/show.copy" || fail "show $d"
    cmp -s "$tmp/show.ex" "$tmp/show.copy" || fail "call $d differs after import: $(cat "$tmp/show.ex" "$tmp/show.copy")"
done
"$quiver" show "$tmp/copy" "$(grep cli.small "$tmp/ls.ex" | cut -c 1-32)" >"$tmp/show.copy"
grep -q '"lang": "python"' "$tmp/show.copy" && grep -q '"meta": {"project": "p1"}' "$tmp/show.copy" &&
    grep -q '"start_ns": 1700000000123456789' "$tmp/show.copy" && grep -q '"duration_ns": 1500' "$tmp/show.copy" ||
    fail "import lost the time, language or metadata: $(cat "$tmp/show.copy")"
run 0 stats "$tmp/copy"
grep -q "^values: 2$" "$tmp/out" || fail "the large result and argument are not stored by digest: $(cat "$tmp/out")"
run 0 export "$tmp/copy" "$tmp/copy.cbor"
cmp "$tmp/ex.cbor" "$tmp/copy.cbor" || fail "exporting the imported cache gives other bytes"
grep -q "quiver-export" "$tmp/ex.cbor" || fail "no header naming the format"
# importing again stores nothing: the calls are there
run 0 import "$tmp/copy" "$tmp/ex.cbor"
grep -q "^calls stored: 0$" "$tmp/out" && grep -q "^calls skipped: 8 " "$tmp/out" || fail "import again: $(cat "$tmp/out")"
# "-" is stdout and stdin; the summary then goes to stderr
"$quiver" export "$ex" - >"$tmp/stdout.cbor" 2>"$tmp/err" || fail "export to stdout: $(cat "$tmp/err")"
cmp "$tmp/ex.cbor" "$tmp/stdout.cbor" || fail "export to stdout gives other bytes"
grep -q "^calls exported: 8$" "$tmp/err" || fail "export to stdout: no summary on stderr: $(cat "$tmp/err")"
"$quiver" import "$tmp/fromstdin" - <"$tmp/ex.cbor" >"$tmp/out" 2>"$tmp/err" || fail "import from stdin: $(cat "$tmp/err")"
grep -q "^calls stored: 8$" "$tmp/out" || fail "import from stdin: $(cat "$tmp/out")"
"$quiver" ls "$tmp/fromstdin" | cmp -s - "$tmp/ls.ex" || fail "import from stdin changed the calls"

# bad input is refused before anything is stored: the target keeps its calls
target=$tmp/target
"$make_cache" "$target" >/dev/null || exit 1
# refused FILE WHY: import FILE into the target fails, says WHY, stores nothing
refused() {
    run 1 import "$target" "$1"
    grep -q "$2" "$tmp/err" || fail "import $1: no clear message: $(cat "$tmp/err")"
    "$quiver" stats "$target" | grep -q "^entries: 2$" || fail "import $1 stored calls"
}
size=$(wc -c <"$tmp/ex.cbor")
head -c $((size - 100)) "$tmp/ex.cbor" >"$tmp/cut.cbor"
refused "$tmp/cut.cbor" "cut short"
# cut exactly between two items: the end item is missing
end=$(printf '\241\161quiver-export-end\010' | wc -c)
head -c $((size - end)) "$tmp/ex.cbor" >"$tmp/noend.cbor"
refused "$tmp/noend.cbor" "truncated"
# the header, then an integer in a longer form than needed
version=$("$quiver" version)
hsize=$((1 + 11 + 1 + ${#version} + 14 + 1))
{ head -c "$hsize" "$tmp/ex.cbor"; printf '\030\001'; tail -c +$((hsize + 1)) "$tmp/ex.cbor"; } >"$tmp/long.cbor"
refused "$tmp/long.cbor" "not canonical"
# items that decode but are not what an export holds
header() { head -c "$hsize" "$tmp/ex.cbor"; }
{ header; printf '\241\141a\001\241\161quiver-export-end\001'; } >"$tmp/shape.cbor"
refused "$tmp/shape.cbor" "a call is a map of 9 entries"
{ header; printf '\241\161quiver-export-end\001'; } >"$tmp/count.cbor"
refused "$tmp/count.cbor" "does not count the calls"
{ cat "$tmp/ex.cbor"; printf '\001'; } >"$tmp/after.cbor"
refused "$tmp/after.cbor" "after the end item"
"$quiver" import "$target" - <"$tmp/cut.cbor" >"$tmp/out" 2>"$tmp/err" && fail "import of a cut file from stdin succeeded"
grep -q "cut short" "$tmp/err" || fail "import of a cut file from stdin: $(cat "$tmp/err")"
"$quiver" stats "$target" | grep -q "^entries: 2$" || fail "import of a cut file from stdin stored calls"
printf '\241\155quiver-export\002' >"$tmp/v2.cbor"
refused "$tmp/v2.cbor" "quiver-export 2"
refused "$tmp/file" "not a quiver export"
: >"$tmp/empty.cbor"
refused "$tmp/empty.cbor" "not a quiver export"
run 1 import "$tmp/never" "$tmp/cut.cbor"
[ ! -e "$tmp/never" ] || fail "a refused import created a cache"
# import creates a cache where there is none, never in something else
run 3 import "$tmp/file" "$tmp/ex.cbor"
mkdir "$tmp/other" && echo hello >"$tmp/other/notes"
run 3 import "$tmp/other" "$tmp/ex.cbor"
[ "$(ls "$tmp/other")" = "notes" ] || fail "import wrote into a directory that is not a cache"
run 3 import ":memory:" "$tmp/ex.cbor"
run 3 export "$tmp/typo" "$tmp/x.cbor"
[ ! -e "$tmp/typo" ] && [ ! -e "$tmp/x.cbor" ] || fail "export of a path that is not a cache created something"
run 2 export "$ex"
run 2 import "$tmp/copy" "$tmp/ex.cbor" extra
run 1 import "$tmp/copy" "$tmp/absent.cbor"
grep -q "absent.cbor" "$tmp/err" || fail "import of a missing file: $(cat "$tmp/err")"

# --help: every command says what it does, on stdout, and exits 0
for cmd in stats ls show evict clear gc verify export import version; do
    run 0 "$cmd" --help
    grep -q "^usage: quiver $cmd" "$tmp/out" || fail "$cmd --help: $(cat "$tmp/out")"
done
run 0 export --help
grep -q "CBOR sequence" "$tmp/out" || fail "export --help does not say what it writes: $(cat "$tmp/out")"

[ "$failures" -eq 0 ] && echo "all CLI checks passed"
exit $((failures > 0))
