-- Cache handles: LMDB directories and memory caches, shared by processes,
-- their methods, and what happens after close.
local quiver = H.quiver

local child_add = [[
  local quiver = require "quiver"
  local c = quiver.open(os.getenv("DIR"))
  local runs = 0
  local add = quiver.memo("shared.add", function(x, y) runs = runs + 1 return x + y end, {version = "1"})
  local from, to = tonumber(os.getenv("FROM")), tonumber(os.getenv("TO"))
  quiver.with_cache(c, function()
    for i = from, to do assert(add(i, i) == 2 * i) end
  end)
  io.write(runs)
  c:close()
]]

describe("caches", function()
  it("opens an LMDB directory (absolute path) and a memory cache", function()
    local dir = H.tmpdir("open")
    local c = quiver.open(dir)
    assert.are.equal(dir, c:path())
    assert.matches("^quiver.cache%(", tostring(c))
    c:close()
    local m = quiver.memory()
    assert.are.equal(":memory:", m:path())
    m:close()
  end)

  it("shares results between processes through one LMDB directory", function()
    local dir = H.tmpdir("procs")
    local out, ok = H.spawn(child_add, {DIR = dir, FROM = "1", TO = "50"})
    assert.is_true(ok, out)
    assert.are.equal("50", out)
    -- a second process finds every call stored: no body runs
    out, ok = H.spawn(child_add, {DIR = dir, FROM = "1", TO = "50"})
    assert.is_true(ok, out)
    assert.are.equal("0", out)
    -- and this one reads them too
    local c = quiver.open(dir)
    local add = quiver.memo("shared.add", function() error("must not run") end, {version = "1"})
    quiver.with_cache(c, function()
      for i = 1, 50 do assert.are.equal(2 * i, add(i, i)) end
    end)
    assert.are.equal(50, c:stats().entries)
    c:close()
  end)

  it("writes a process's counts when it ends in os.exit without closing", function()
    -- os.exit closes nothing: the core's exit handler writes what the
    -- handle counted (totals, the limitless cache's size), as close would
    local dir = H.tmpdir("exit")
    local out, ok = H.spawn(child_add:gsub("c:close%(%)", "os.exit(0)"), {DIR = dir, FROM = "1", TO = "30"})
    assert.is_true(ok, out)
    assert.are.equal("30", out)
    local c = quiver.open(dir)
    local s = c:stats()
    assert.are.equal(30, s.total_stores)
    assert.are.equal(30, s.total_misses)
    local counted = s.bytes
    assert.is_true(counted > 0)
    c:gc()
    assert.are.equal(counted, c:stats().bytes)
    c:close()
  end)

  it("keeps every result when processes write overlapping keys at once", function()
    local dir = H.tmpdir("concurrent")
    local kids = {}
    for k = 0, 3 do
      kids[#kids + 1] = H.start(child_add, {DIR = dir, FROM = tostring(k * 25 + 1), TO = tostring(k * 25 + 100)})
    end
    local runs = 0
    for _, kid in ipairs(kids) do
      local out, ok = kid.wait()
      assert.is_true(ok, out)
      runs = runs + tonumber(out)
    end
    assert.are.equal(175, runs) -- each key once: a process missing a key another runs waits for it
    local c = quiver.open(dir)
    assert.are.equal(175, c:stats().entries)
    for i = 1, 175 do
      local rec = c:load(quiver.call_digest("shared.add", "1", {i, i}))
      assert.are.equal(2 * i, rec.result)
    end
    c:close()
  end)

  it("loads records with name, version, args, kwargs, result, meta and timing", function()
    local c = quiver.memory()
    local f = quiver.memo("t.rec", function(x, s) return {x = x, s = s} end, {version = "2"})
    quiver.with_cache(c, function()
      quiver.with_meta({project = "p"}, function() f(4, "four") end)
    end)
    local rec = c:load(f:digest(4, "four"))
    assert.are.equal("t.rec", rec.name)
    assert.are.equal("2", rec.version)
    assert.are.equal(4, rec.args[1])
    assert.are.equal("four", rec.args[2])
    assert.are.equal("map", quiver.kind(rec.kwargs))
    assert.is_nil(next(rec.kwargs))
    assert.are.equal(4, rec.result.x)
    assert.are.equal("p", rec.meta.project)
    assert.are.equal("lua", rec.lang)
    assert.is_true(rec.start_ns > 0)
    assert.is_true(rec.duration_ns >= 0)
    assert.is_nil(c:load(quiver.call_digest("t.rec", "2", {5, "five"})))
  end)

  it("counts each call's hits, written with the next store or sync", function()
    local c = quiver.memory()
    local f = quiver.memo("t.hits", function(x) return x end)
    quiver.with_cache(c, function()
      f(1)
      assert.are.equal(0, c:load(f:digest(1)).hits)
      f(1)
      f(1)
      c:sync()
    end)
    local rec = c:load(f:digest(1))
    assert.are.equal(2, rec.hits)
    assert.is_true(rec.last_hit_ns > 0)
    c:close()
  end)

  it("keeps counts by function: hits, misses, stores and the time hits saved", function()
    local c = quiver.memory()
    local slow = quiver.memo("t.fnstats", function(x)
      local t = os.clock() + 0.002
      while os.clock() < t do end
      return x
    end)
    quiver.with_cache(c, function()
      for _, x in ipairs({1, 2, 1, 1}) do slow(x) end
    end)
    c:sync()
    local s = c:function_stats()["t.fnstats"]
    assert.are.same({2, 2, 2, 0, 0}, {s.misses, s.stores, s.hits, s.evictions, s.corrupt})
    assert.is_true(s.saved_ns >= 2 * 2000000)
    c:close()
  end)

  it("queries by name, version, arguments and metadata", function()
    local c = quiver.memory()
    local f = quiver.memo("t.q", function(x) return x * x end, {version = "1"})
    local g = quiver.memo("t.other", function(x) return -x end)
    quiver.with_cache(c, function()
      for i = 1, 5 do f(i) end
      quiver.with_meta({tag = "odd"}, function() f(7) f(9) end)
      g(1)
    end)
    local function count(t)
      local n = 0
      for _ in c:query(t) do n = n + 1 end
      return n
    end
    assert.are.equal(8, count())
    assert.are.equal(7, count {name = "t.q"})
    assert.are.equal(0, count {name = "t.q", version = "2"})
    assert.are.equal(1, count {name = "t.q", args = {3}})
    assert.are.equal(2, count {name = "t.q", meta = {tag = "odd"}})
    for rec in c:query {name = "t.other"} do assert.are.equal(-1, rec.result) end
  end)

  it("reports stats, evicts, verifies and collects", function()
    local c = quiver.memory()
    local f = quiver.memo("t.stats", function(x) return string.rep("x", x) end)
    quiver.with_cache(c, function()
      f(1000)
      f(1000)
      f(2)
    end)
    local s = c:stats()
    assert.are.equal(1, s.hits)
    assert.are.equal(2, s.misses)
    assert.are.equal(2, s.entries)
    assert.are.equal(2, s.stores)
    assert.is_true(s.bytes > 1000)
    assert.are.equal("integer", math.type(s.map_size))
    assert.is_true(c:evict(f:digest(1000)))
    assert.is_false(c:evict(f:digest(1000)))
    assert.are.equal(1, c:stats().entries)
    assert.are.equal(0, c:verify())
    assert.are.equal("integer", math.type(c:gc()))
  end)

  it("makes use after close an error, not a crash", function()
    local c = quiver.memory()
    c:close()
    c:close() -- closing twice is allowed
    for _, call in ipairs {
      function() c:contains(string.rep("0", 32)) end,
      function() c:stats() end,
      function() c:load(string.rep("0", 32)) end,
      function() quiver.with_cache(c, print) end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("QV_ECLOSED: the cache is closed", err)
    end
    assert.are.equal("quiver.cache(memory, closed)", tostring(c))
  end)

  it("keeps a cache closed inside with_cache alive until the context ends", function()
    local c = quiver.memory()
    local f = quiver.memo("t.alive", function(x) return x end)
    quiver.with_cache(c, function()
      c:close()
      assert.are.equal(1, f(1))
      assert.are.equal(1, f(1))
      assert.is_true(f:contains(1))
    end)
  end)

  it("closes with to-be-closed variables and the collector", function()
    local dir = H.tmpdir("close")
    do
      local c <close> = quiver.open(dir)
      assert.is_true(c:stats().map_size > 0)
    end
    -- nothing holds the directory: another process can open and write it
    local out, ok = H.spawn(child_add, {DIR = dir, FROM = "1", TO = "3"})
    assert.is_true(ok, out)
    for _ = 1, 100 do quiver.memory() end
    collectgarbage()
    collectgarbage()
  end)

  it("refuses bad input with clear errors", function()
    local c = quiver.memory()
    local ok, err = pcall(c.contains, c, "not hex")
    assert.is_false(ok)
    assert.matches("^QV_EINVAL: ", err)
    ok, err = pcall(quiver.open, "/proc/quiver-cannot-be-here/x")
    assert.is_false(ok)
    assert.matches("^QV_E", err)
    assert.has_error(function() quiver.open(H.tmpdir("d"), {durability = "sometimes"}) end)
    local ro = H.tmpdir("ro")
    quiver.open(ro):close()
    local r = quiver.open(ro, {readonly = true, durability = "fast"})
    assert.is_false(r:contains(string.rep("a", 32)))
    r:close()
  end)
end)
