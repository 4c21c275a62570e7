-- DESIGN section 12, row by row, from Lua: one call, one policy. The slow
-- body counts its runs in a file every process appends to.
local H = require "helpers"
local quiver = H.quiver

local slow_child = [[
  local quiver = require "quiver"
  local c = quiver.open(os.getenv("DIR"))
  local log = os.getenv("LOG")
  local slow = quiver.memo("runtime.lua_slow", function(x)
    local f = assert(io.open(log, "a")) f:write("run\n") f:close()
    os.execute("sleep " .. os.getenv("SECS"))
    if os.getenv("FAIL") then error("on purpose") end
    return 2 * x
  end, {dedup = os.getenv("NODEDUP") == nil, wait_timeout = tonumber(os.getenv("WAIT"))})
  quiver.with_cache(c, function()
    local ok, r = pcall(slow, tonumber(os.getenv("X")))
    io.write(ok and tostring(r) or "error")
  end)
  c:close()
]]

local function runs(log)
  local f = io.open(log)
  if not f then return 0 end
  local n = 0
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

local function race(n, env)
  local kids = {}
  for i = 1, n do kids[i] = H.start(slow_child, env) end
  local outs = {}
  for i, kid in ipairs(kids) do
    local out, ok = kid.wait()
    assert.is_true(ok, out)
    outs[i] = out
  end
  return outs
end

describe("the call runtime", function()
  it("runs a slow call once for four processes that miss it together", function()
    local dir = H.tmpdir("rt-once")
    local log = dir .. "/log"
    local outs = race(4, {DIR = dir .. "/cache", LOG = log, SECS = "0.5", X = "21"})
    for _, out in ipairs(outs) do assert.are.equal("42", out) end
    assert.are.equal(1, runs(log))
  end)

  it("lets every waiter run a call whose holder failed, storing nothing", function()
    local dir = H.tmpdir("rt-fail")
    local log = dir .. "/log"
    local outs = race(3, {DIR = dir .. "/cache", LOG = log, SECS = "0.3", X = "1", FAIL = "1"})
    for _, out in ipairs(outs) do assert.are.equal("error", out) end
    assert.are.equal(3, runs(log))
    local c = quiver.open(dir .. "/cache")
    assert.is_false(c:contains(quiver.call_digest("runtime.lua_slow", nil, {1})))
    c:close()
  end)

  it("runs every miss with dedup = false", function()
    local dir = H.tmpdir("rt-nodedup")
    local log = dir .. "/log"
    race(3, {DIR = dir .. "/cache", LOG = log, SECS = "0.3", X = "2", NODEDUP = "1"})
    assert.are.equal(3, runs(log))
  end)

  it("stops waiting after wait_timeout and runs the call itself", function()
    local dir = H.tmpdir("rt-wait")
    local log = dir .. "/log"
    race(3, {DIR = dir .. "/cache", LOG = log, SECS = "0.8", X = "3", WAIT = "0.05"})
    assert.are.equal(3, runs(log))
  end)

  it("refuses a negative wait_timeout", function()
    assert.has_error(function() quiver.memo("t.neg", function() end, {wait_timeout = -1}) end)
  end)

  it("propagates the body's own error object", function()
    local c = quiver.memory()
    local err = setmetatable({}, {__tostring = function() return "mine" end})
    local m = quiver.memo("rt.raises", function() error(err) end)
    quiver.with_cache(c, function()
      local ok, got = pcall(m, 1)
      assert.is_false(ok)
      assert.are.equal(err, got)
    end)
  end)

  it("computes on a read-only cache and returns the result unstored", function()
    local dir = H.tmpdir("rt-ro")
    quiver.open(dir):close()
    local ro = quiver.open(dir, {readonly = true})
    local n = 0
    local m = quiver.memo("rt.ro", function(x) n = n + 1 return x + 1 end)
    quiver.with_cache(ro, function()
      assert.are.equal(2, m(1))
      assert.are.equal(2, m(1))
    end)
    assert.are.equal(2, n)
    assert.is_false(ro:contains(quiver.call_digest("rt.ro", nil, {1})))
    ro:close()
  end)
end)

describe("quiver.cfunction", function()
  it("memoizes a C function of the program's own libraries, libc's labs", function()
    local c = quiver.memory()
    local labs = quiver.cfunction("rt.labs", "1", nil, "labs", "i64(i64)")
    quiver.with_cache(c, function()
      assert.are.equal(5, labs(-5))
      assert.is_true(c:contains(quiver.call_digest("rt.labs", "1", {-5})))
    end)
  end)

  it("memoizes a function of a shared library given by path", function()
    local c = quiver.memory()
    local add = quiver.cfunction("rt.add", "1", H.fixture, "qvt_add", "i64(i64,i64)")
    quiver.with_cache(c, function() assert.are.equal(5, add(2, 3)) end)
    assert.are.equal(1, c:stats().entries)
  end)

  it("says what is missing: the library, the symbol, the signature", function()
    local ok, err = pcall(quiver.cfunction, "x", nil, "/no/such/lib.so", "f", "i64(i64)")
    assert.is_false(ok)
    assert.matches("cannot load /no/such/lib.so", err)
    ok, err = pcall(quiver.cfunction, "x", nil, H.fixture, "no_such_symbol", "i64(i64)")
    assert.is_false(ok)
    assert.matches("no C function 'no_such_symbol'", err)
    ok, err = pcall(quiver.cfunction, "x", nil, nil, "labs", "i64(nonsense)")
    assert.is_false(ok)
    assert.matches("QV_EINVAL", err)
    ok, err = pcall(quiver.cfunction, "x", nil, nil, "labs")
    assert.is_false(ok)
    assert.matches("expected a signature", err)
  end)
end)
