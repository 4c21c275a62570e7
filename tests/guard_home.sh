#!/bin/sh
# The home guard: no test may change the user's real default cache.
#   guard_home.sh snapshot STATE CACHES   before the tests (also empties CACHES,
#                                         the tests' own default caches)
#   guard_home.sh check STATE             after them: fails on any change
#   guard_home.sh selftest TMP            shows that check fails when it should
# Watched: $XDG_CACHE_HOME/quiver, $HOME/.cache/quiver and $QUIVER_CACHE, as
# ctest itself was started: every place a default could resolve to. Each is
# recorded as absent, or as a listing of every file under it with its type,
# mode, size and mtime (to the nanosecond), so a created, removed, written or
# merely opened-for-writing cache (LMDB's lock file) shows.
set -u

watched() {
    [ -n "${HOME:-}" ] && echo "$HOME/.cache/quiver"
    case "${XDG_CACHE_HOME:-}" in /*) echo "$XDG_CACHE_HOME/quiver" ;; esac
    case "${QUIVER_CACHE:-}" in "" | :memory: | *://*) ;; *) echo "$QUIVER_CACHE" ;; esac
}

listing() {
    watched | sort -u | while read -r dir; do
        if [ -e "$dir" ]; then
            echo "watched: $dir"
            find "$dir" -printf '%y %m %s %T@ %p\n' | sort -k5
        else
            echo "watched: $dir (absent)"
        fi
    done
}

case "${1:-}" in
snapshot)
    state=$2 caches=$3
    rm -rf "$caches" && mkdir -p "$caches" || exit 1
    mkdir -p "$(dirname "$state")" && listing >"$state" || exit 1
    # a snapshot that watches nothing would make check pass whatever happened
    grep -q "^watched: " "$state" || { echo "guard: no HOME: nothing to watch"; exit 1; }
    cat "$state" | sed 's/^/guard: /' | head -20
    ;;
check)
    state=$2
    [ -s "$state" ] || { echo "guard: no snapshot at $state: guard.home.snapshot did not run"; exit 1; }
    listing >"$state.after"
    if ! diff -u "$state" "$state.after"; then
        echo "guard: FAIL: a test changed the user's default cache (above: before, after)"
        exit 1
    fi
    rm -f "$state"
    echo "guard: the user's default cache is unchanged: $(grep -c '^watched: ' "$state.after") place(s) watched"
    ;;
selftest)
    # check must fail on each kind of change, and pass on none
    tmp=$2
    rm -rf "$tmp" && mkdir -p "$tmp/home" || exit 1
    self=$0 failures=0
    run() { HOME=$tmp/home XDG_CACHE_HOME= QUIVER_CACHE= sh "$self" "$@" >"$tmp/out" 2>&1; }
    expect() { # expect PASS|FAIL WHAT: after a snapshot and WHAT, check gives PASS or FAIL
        want=$1 what=$2
        run snapshot "$tmp/state" "$tmp/caches" || { echo "snapshot failed"; cat "$tmp/out"; exit 1; }
        sleep 0.01
        eval "$what"
        if run check "$tmp/state"; then got=PASS; else got=FAIL; fi
        [ "$got" = "$want" ] || { echo "selftest: '$what': check gave $got, want $want"; cat "$tmp/out"; failures=$((failures + 1)); }
        rm -f "$tmp/state"
    }
    expect PASS ":"
    expect FAIL "mkdir -p '$tmp/home/.cache/quiver'"
    expect PASS ":"
    expect FAIL "echo data >'$tmp/home/.cache/quiver/data.mdb'"
    expect FAIL "touch '$tmp/home/.cache/quiver/data.mdb'"
    expect FAIL "rm '$tmp/home/.cache/quiver/data.mdb'"
    expect FAIL "chmod 0700 '$tmp/home/.cache/quiver'"
    # no snapshot at all: not a pass
    if run check "$tmp/missing"; then echo "selftest: check passed without a snapshot"; failures=$((failures + 1)); fi
    [ "$failures" -eq 0 ] && echo "guard selftest passed"
    exit $((failures > 0))
    ;;
*)
    echo "usage: guard_home.sh snapshot STATE CACHES | check STATE | selftest TMP" >&2
    exit 2
    ;;
esac
