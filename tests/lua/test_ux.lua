-- A new user's first minutes (issue 16): the default cache is the C
-- library's, objects describe themselves, and an argument that cannot be
-- encoded is named. Children get their own QUIVER_CACHE, so nothing here
-- touches the user's default cache.
local quiver = H.quiver

describe("the default cache", function()
  it("is the C library's: QUIVER_CACHE, where every process and language finds it", function()
    local dir = H.tmpdir("ux-default")
    local code = [[
      local quiver = require "quiver"
      local sq = quiver.memo("ux.square", function(x) return x * x end)
      io.write(sq(7), " ", sq:contains(7) and "stored" or "missing", " ", tostring(sq))
    ]]
    local out, ok = H.spawn(code, {QUIVER_CACHE = dir})
    assert.is_true(ok, out)
    assert.matches("^49 stored quiver%.memo%(ux%.square, cache=quiver%.cache%(lmdb " .. dir:gsub("%p", "%%%0")
      .. ", 1 entries, %d+ bytes%)%)$", out)
    -- another process opening the directory finds the call
    local c = quiver.open(dir)
    local sq = quiver.memo("ux.square", function() error("must not run") end)
    quiver.with_cache(c, function() assert.are.equal(49, sq(7)) end)
    c:close()
  end)
end)

describe("tostring", function()
  it("of a cache gives its kind, path, entries and bytes, or that it is closed", function()
    local dir = H.tmpdir("ux-cache")
    local c = quiver.open(dir)
    local f = quiver.memo("ux.id", function(x) return x end)
    quiver.with_cache(c, function() f(1) end)
    local s = c:stats()
    assert.are.equal(string.format("quiver.cache(lmdb %s, 1 entries, %d bytes)", dir, s.bytes), tostring(c))
    c:close()
    assert.are.equal(string.format("quiver.cache(lmdb %s, closed)", dir), tostring(c))
    local m = quiver.memory()
    assert.are.equal("quiver.cache(memory, 0 entries, 0 bytes)", tostring(m))
    m:close()
    assert.are.equal("quiver.cache(memory, closed)", tostring(m))
  end)

  it("of a memo gives its name, version and the cache it would use now", function()
    local add = quiver.memo("ux.add", function(x, y) return x + y end, {version = "2"})
    local c = quiver.memory()
    quiver.with_cache(c, function()
      add(1, 2)
      assert.are.equal("quiver.memo(ux.add, version 2, cache=" .. tostring(c) .. ")", tostring(add))
    end)
    local d = quiver.memory()
    local scope <close> = quiver.cache_scope(d)
    assert.are.equal("quiver.memo(ux.add, version 2, cache=quiver.cache(memory, 0 entries, 0 bytes))",
      tostring(add))
  end)
end)

describe("a default cache that cannot be opened", function()
  it("is shown by tostring(memo) with the reason, not raised", function()
    local out, ok = H.spawn([[
      local quiver = require "quiver"
      io.write(tostring(quiver.memo("ux.f", function() end)))
    ]], {QUIVER_CACHE = "/proc/self/no/such/dir"})
    assert.is_true(ok, out)
    assert.matches("^quiver%.memo%(ux%.f, cache=unavailable: QV_E%u+: .+%)$", out)
  end)
end)

describe("an argument that cannot be encoded", function()
  it("is named by the memo and its position, with what to do", function()
    local f = quiver.memo("ux.takes", function(a, b) return a end)
    quiver.with_cache(quiver.memory(), function()
      local ok, err = pcall(f, 1, print)
      assert.is_false(ok)
      assert.are.equal("QV_EENCODE: ux.takes: argument 2 is a Lua function, which cannot be cached; pass "
        .. "ignore = {2} to quiver.memo, or a value quiver can encode", err)
      ok, err = pcall(f, coroutine.create(print))
      assert.is_false(ok)
      assert.matches("^QV_EENCODE: ux%.takes: argument 1 is a Lua thread", err)
      -- left out of the key, it is never encoded
      local g = quiver.memo("ux.ignores", function(a, b) return a end, {ignore = {2}})
      assert.are.equal(1, g(1, print))
    end)
  end)
end)
