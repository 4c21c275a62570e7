-- Shared counters and dicts (quiver.counter, quiver.dict): the entries
-- Python's SafeCounter and SafeDict use, in one cache, from any process.
local quiver = H.quiver

-- Python, without the sanitizer the asan variant preloads (Python's own
-- allocations at exit would fail it).
local function python(code, ...)
  local args = ""
  for _, a in ipairs{...} do args = args .. " '" .. a:gsub("'", "'\\''") .. "'" end
  local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS python3 -c '" .. code:gsub("'", "'\\''") .. "'"
    .. args .. " 2>&1"))
  local out = p:read("a")
  assert.is_true(p:close(), out)
  return out
end

local child_bump = [[
  local quiver = require "quiver"
  local c = quiver.open(os.getenv("DIR"))
  local n = quiver.counter(c, "jobs")
  for _ = 1, tonumber(os.getenv("N")) do n:add("done") end
  c:close()
]]

describe("shared counters and dicts", function()
  it("counts, reads and clears", function()
    local c = quiver.open(H.tmpdir("counter"))
    local n = quiver.counter(c, "hits")
    assert.are.equal(0, n:get("a"))
    assert.are.equal(1, n:add("a"))
    assert.are.equal(6, n:add("a", 5))
    assert.are.equal(4, n:add("a", -2))
    assert.are.equal(3, n:add({1, "x"}, 3)) -- any value is a key
    assert.are.equal(3, n:get({1, "x"}))
    assert.are.equal(0, quiver.counter(c, "other"):get("a"))
    assert.are.same({{"a", 4}, {{1, "x"}, 3}}, n:items()) -- in the order of the keys' encodings
    assert.are.equal(2, n:clear())
    assert.are.same({}, n:items())
    assert.are.equal(0, n:get("a"))
    assert.has_error(function() n:add("a", 1.5) end, "counter:add: n must be an integer, got 1.5")
    assert.has_error(function() quiver.counter(c, "") end)
    assert.has_error(function() n:add(string.rep("k", 600)) end)
    c:close()
    assert.has_error(function() n:get("a") end, "QV_ECLOSED: the cache is closed")
  end)

  it("keeps values in a dict", function()
    local c = quiver.memory()
    local d = quiver.dict(c, "d")
    assert.is_nil(d:get("k"))
    d:set("k", {1, 2, x = "y"})
    assert.are.same({1, 2, x = "y"}, d:get("k"))
    d:set("k", "replaced")
    assert.are.equal("replaced", d:get("k"))
    assert.is_true(d:del("k"))
    assert.is_false(d:del("k"))
    d:set(1, true)
    d:set(2, false)
    assert.are.same({{1, true}, {2, false}}, d:items())
    assert.are.equal(2, d:clear())
    c:close()
  end)

  it("loses no increment from four processes at once", function()
    local dir = H.tmpdir("procs")
    local kids = {}
    for i = 1, 4 do kids[i] = H.start(child_bump, {DIR = dir, N = "300"}) end
    for i = 1, 4 do
      local out, ok = kids[i].wait()
      assert.is_true(ok, out)
    end
    local c = quiver.open(dir)
    assert.are.equal(1200, quiver.counter(c, "jobs"):get("done"))
    c:close()
  end)

  it("reads what Python's SafeCounter and SafeDict wrote, and Python reads Lua's", function()
    local dir = H.tmpdir("py")
    python([[
import sys, quiver
from quiver.parallel import SafeCounter, SafeDict
c = quiver.Cache.open(sys.argv[1])
SafeCounter.make("processes", cache=c, name="langs").increment("python", 40)
SafeDict.make("processes", cache=c, name="langs")["from"] = {"lang": "python", "n": [1, 2]}
]], dir)
    local c = quiver.open(dir)
    local n, d = quiver.counter(c, "langs"), quiver.dict(c, "langs")
    assert.are.equal(40, n:get("python"))
    assert.are.equal(42, n:add("python", 2))
    assert.are.same({lang = "python", n = {1, 2}}, d:get("from"))
    n:add("lua", 7)
    d:set("lua", {lang = "lua"})
    c:close()
    local out = python([[
import sys, quiver
from quiver.parallel import SafeCounter, SafeDict
c = quiver.Cache.open(sys.argv[1])
n = SafeCounter.make("processes", cache=c, name="langs")
print(n.get("python"), n.get("lua"), SafeDict.make("processes", cache=c, name="langs")["lua"]["lang"])
]], dir)
    assert.are.equal("42 7 lua\n", out)
  end)
end)
