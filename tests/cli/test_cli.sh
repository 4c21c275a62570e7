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
    for cmd in "stats" "stats --json" "ls" "ls cli.big" "show $digest" "evict $digest" "gc" "verify" "verify --repair"; do
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
[ ! -e "$tmp/typo" ] || fail "a usage error created the path"

# the real cache
run 0 stats "$cache"
grep -q "^entries: 2$" "$tmp/out" || fail "stats: $(cat "$tmp/out")"
run 0 stats "$cache" --json
grep -q '"entries": 2' "$tmp/out" || fail "stats --json: $(cat "$tmp/out")"
run 0 ls "$cache"
[ "$(wc -l <"$tmp/out")" -eq 2 ] || fail "ls: $(cat "$tmp/out")"
run 0 ls "$cache" cli.big
grep -q "^$digest" "$tmp/out" || fail "ls NAME: $(cat "$tmp/out")"
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
run 0 verify "$big"
[ ! -s "$tmp/err" ] || fail "a short pass printed progress at the default interval: $(cat "$tmp/err")"
QUIVER_PROGRESS_INTERVAL=soon run 2 verify "$big"
grep -q "QUIVER_PROGRESS_INTERVAL=soon is not a number" "$tmp/err" || fail "bad interval: $(cat "$tmp/err")"
# on a terminal, a bar redrawn in place (when script(1) can give us one)
if command -v script >/dev/null 2>&1; then
    QUIVER_PROGRESS_INTERVAL=0 script -qec "'$quiver' verify '$big'" /dev/null >"$tmp/tty" 2>&1
    grep -q "checking calls *\[#*  *\] *[0-9]*% 256/3002" "$tmp/tty" || fail "no bar on a terminal: $(head -c 300 "$tmp/tty")"
    grep -q "\[#\{30\}\] 100% 3002/3002" "$tmp/tty" || fail "the bar does not reach 100%: $(tail -c 300 "$tmp/tty")"
fi

[ "$failures" -eq 0 ] && echo "all CLI checks passed"
exit $((failures > 0))
