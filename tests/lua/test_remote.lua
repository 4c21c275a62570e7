-- The remote tier from Lua (issue 11), against a real redis-server each spec
-- starts (H.redis) and stops, also when it fails: URLs, a call Python stored
-- in Redis read here by its digest, stacks, and Redis going away.
local quiver = H.quiver

local function exists(path)
  return os.rename(path, path) ~= nil
end

local function core_signed(c)
  return require("quiver_core").qv_cache_signed(rawget(c, "_h")) == 1
end

-- Wall-clock seconds (os.clock is CPU time).
local function now()
  local p = assert(io.popen("date +%s.%N"))
  local t = tonumber(p:read("a"))
  p:close()
  return t
end

local function counting(name)
  local runs = 0
  local f = quiver.memo(name, function(x, y) runs = runs + 1 return x + y end, {version = "1"})
  return f, function() return runs end
end

describe("the remote tier", function()
  it("opens redis:// and unix:// URLs, and never takes a URL for a directory", function()
    local r = H.redis()
    finally(function() r:stop() end)
    local dir = H.tmpdir("urls")
    local ok, err = pcall(quiver.open, "http://example.com/cache")
    assert.is_false(ok)
    assert.matches("QV_EINVAL", err)
    ok, err = pcall(quiver.open, "redis://127.0.0.1:1/0", {timeout_ms = 300})
    assert.is_false(ok)
    assert.matches("QV_EIO", err)
    assert.is_false(exists("http:"))
    assert.is_false(exists("redis:"))
    assert.is_false(exists(dir .. "/redis:"))

    local tcp = quiver.open(r.url, {timeout_ms = 2000})
    assert.matches("^quiver.cache%(redis redis://127.0.0.1:" .. r.port, tostring(tcp))
    local add, runs = counting("remote.lua_add")
    quiver.with_cache(tcp, function()
      assert.are.equal(5, add(2, 3))
      assert.are.equal(5, add(2, 3))
    end)
    assert.are.equal(1, runs())
    local unix = quiver.open(r.unix_url)
    assert.is_true(unix:contains(add:digest(2, 3)))
    assert.are.equal(5, unix:load(add:digest(2, 3)).result)
    local s = unix:stats()
    for _, k in ipairs({"remote_hits", "remote_errors", "dropped", "forged"}) do
      assert.is_not_nil(s[k], k)
    end
    tcp:close()
    unix:close()
  end)

  it("checks its options", function()
    assert.has_error(function() quiver.open("redis://127.0.0.1:1/0", {timeout_ms = -1}) end)
    assert.has_error(function() quiver.open("redis://127.0.0.1:1/0", {secret = 42}) end)
    assert.has_error(function() quiver.open("redis://127.0.0.1:1/0", {secret = ""}) end)
  end)

  it("signs entries with a secret, LMDB and remote alike", function()
    local r = H.redis()
    finally(function() r:stop() end)
    for _, where in ipairs({H.tmpdir("signed"), r.url}) do
      local add, runs = counting("remote.lua_signed")
      local c = quiver.open(where, {secret = "team secret"})
      assert.is_true(core_signed(c))
      quiver.with_cache(c, function() assert.are.equal(3, add(1, 2)) end)
      c:close()
      local again = quiver.open(where, {secret = "team secret"})
      quiver.with_cache(again, function() assert.are.equal(3, add(1, 2)) end)
      assert.are.equal(1, runs())
      local other = quiver.open(where, {secret = "another"})
      quiver.with_cache(other, function() assert.are.equal(3, add(1, 2)) end)
      assert.are.equal(2, runs())
      assert.is_true(other:stats().forged >= 1)
      again:close()
      other:close()
    end
  end)

  it("hits a call Python stored in Redis: the same digest", function()
    local r = H.redis()
    finally(function() r:stop() end)
    local py = [[
import sys, quiver
@quiver.memo(name="remote.shared_add", version="1")
def add(x, y):
    return x + y
with quiver.cache(quiver.Cache.open(sys.argv[1])):
    print(add(20, 22), add.digest(20, 22))
]]
    -- (not under the sanitizer the asan variant preloads: Python's own
    -- allocations at exit would fail it)
    local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS python3 -c '" .. py:gsub("'", "'\\''") .. "' "
      .. r.url .. " 2>&1"))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local result, digest = out:match("^(%d+) (%x+)")
    assert.are.equal("42", result, out)
    local runs = 0
    local add = quiver.memo("remote.shared_add", function(x, y) runs = runs + 1 return x + y end,
      {version = "1"})
    assert.are.equal(digest, add:digest(20, 22))
    local c = quiver.open(r.url)
    quiver.with_cache(c, function() assert.are.equal(42, add(20, 22)) end)
    assert.are.equal(0, runs)
    c:close()
  end)

  it("stacks a local LMDB cache over Redis: two machines, one run", function()
    local r = H.redis()
    finally(function() r:stop() end)
    local add, runs = counting("remote.lua_stacked")
    local one = quiver.stack(quiver.open(H.tmpdir("m1")), quiver.open(r.url))
    assert.matches("^quiver.cache%(stack%(", tostring(one))
    quiver.with_cache(one, function() assert.are.equal(7, add(3, 4)) end)
    local two = quiver.stack(quiver.open(H.tmpdir("m2")), quiver.open(r.url), {queue_limit = 16})
    quiver.with_cache(two, function() assert.are.equal(7, add(3, 4)) end)
    assert.are.equal(1, runs())
    assert.is_true(two:stats().remote_hits >= 1)
    local three = quiver.stack(quiver.open(H.tmpdir("m3")), quiver.open(r.url), {async = true})
    quiver.with_cache(three, function() assert.are.equal(11, add(5, 6)) end)
    three:close() -- flushes the queue, once the last context using it is collected too
    collectgarbage()
    local remote, deadline = quiver.open(r.url), now() + 5
    while not remote:contains(add:digest(5, 6)) and now() < deadline do os.execute("sleep 0.05") end
    assert.is_true(remote:contains(add:digest(5, 6)))
    remote:close()
    one:close()
    two:close()
    assert.has_error(function() quiver.stack(quiver.memory(), "redis://x") end)
  end)

  it("goes on from the local tier when Redis goes away", function()
    local r = H.redis()
    finally(function() r:stop() end)
    local add, runs = counting("remote.lua_down")
    local s = quiver.stack(quiver.open(H.tmpdir("down")), quiver.open(r.url, {timeout_ms = 300}))
    quiver.with_cache(s, function() assert.are.equal(2, add(1, 1)) end)
    r:stop()
    local ok, err = pcall(quiver.open, r.url, {timeout_ms = 300})
    assert.is_false(ok)
    assert.matches("QV_EIO", err)
    local slowest = 0
    quiver.with_cache(s, function()
      for i = 1, 6 do
        local t = now()
        assert.are.equal(1 + (i % 3), add(1, i % 3))
        slowest = math.max(slowest, now() - t)
      end
    end)
    assert.are.equal(3, runs()) -- (1,1) from local; (1,0) and (1,2) computed
    assert.is_true(slowest < 1.0, slowest) -- no call waits much past timeout_ms
    assert.is_true(s:stats().remote_errors >= 1)
    s:close()
  end)
end)
