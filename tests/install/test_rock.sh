#!/bin/sh
# The rock as a user builds it: `luarocks make` in a clean copy of the source
# (the cmake build type builds in the source directory), into a fresh tree,
# then `require "quiver"` from that tree alone: the paths `luarocks path`
# prints, no build tree, no LD_LIBRARY_PATH.
#   test_rock.sh SOURCE_DIR TMP LUA VERSION
set -eu
source=$1 tmp=$2 lua=$3 version=$4
command -v luarocks >/dev/null || { echo "luarocks is missing (scripts/setup.sh installs it)" >&2; exit 1; }
rm -rf "$tmp" && mkdir -p "$tmp/src"
trap 'rm -rf "$tmp"' EXIT
unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LD_LIBRARY_PATH
tar -C "$source" --exclude='./build' --exclude='./build-*' --exclude='./build.luarocks' --exclude=./.git -cf - . |
  tar -C "$tmp/src" -xf -
rockspec="quiver-$version-1.rockspec"
test -f "$tmp/src/$rockspec" || { echo "no $rockspec for project version $version" >&2; exit 1; }

export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
(cd "$tmp/src" && luarocks --lua-version 5.4 make --tree "$tmp/tree" "$rockspec" >"$tmp/luarocks.log" 2>&1) ||
  { cat "$tmp/luarocks.log" >&2; exit 1; }
luarocks --lua-version 5.4 list --tree "$tmp/tree" --porcelain | grep -q "^quiver	$version-1	installed"

eval "$(luarocks --lua-version 5.4 path --tree "$tmp/tree")"
cd "$tmp"
cat >check.lua <<'LUA'
local quiver = require "quiver"
assert(package.searchpath("quiver_core", package.cpath):find(arg[1], 1, true), "quiver_core from elsewhere")
local calls = 0
local add = quiver.memo("rock.add", function(x, y) calls = calls + 1; return x + y end, {version = "1"})
local c = quiver.open(arg[1] .. "/cache")
quiver.with_cache(c, function()
  assert(add(1, 2) == 3 and add(1, 2) == 3 and calls == 1)
end)
assert(quiver.call_digest("shared.add", nil, {1, 2}, {}) == "d2aec93101298c8daf75589ce9ce1f83")
print("rock: quiver " .. quiver.VERSION .. " ok")
LUA
"$lua" check.lua "$tmp"
