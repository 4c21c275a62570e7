-- The Lua module as a rock: `luarocks --lua-version 5.4 make --tree T` in a
-- clone builds quiver_core (SWIG, linked to the static library) with this
-- repository's CMake, and installs it with lua/quiver.lua into the tree.
-- Needs what `make` needs: cmake, a C compiler, swig, liblua5.4-dev,
-- liblmdb-dev, libxxhash-dev, libffi-dev, libhiredis-dev, libssl-dev.
rockspec_format = "3.0"
package = "quiver"
version = "0.1.0-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "Memoized function calls in one LMDB cache shared by every language and process",
   detailed = [[
quiver memoizes function calls into one LMDB cache that C, Python, Lua, Rust
and Go share: the cache key is a digest of a canonical encoding that every
language produces byte for byte the same.]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      QUIVER_TESTS = "OFF",
      QUIVER_PYTHON = "OFF",
      QUIVER_LUA = "ON",
      QUIVER_LUA_STATIC = "ON",
   },
   -- Only the module: the C library's own install (headers, libquiver.so,
   -- the CLI) belongs to `cmake --install`, not to a Lua tree.
   install_pass = false,
   install = {
      lib = { quiver_core = "build.luarocks/lua/quiver_core.so" },
      lua = { quiver = "lua/quiver.lua" },
   },
}
