-- What a memo does besides being called (issue 12): m:rerun (recursive, as
-- Python's), m:evict, m:clear, and the one answer for a miss from m:load and
-- c:load: nil and a message.
local quiver = H.quiver

describe("m:rerun", function()
  it("runs a stored call again and stores the new result over the old", function()
    local c = quiver.memory()
    local n = 0
    local f = quiver.memo("ops.tick", function(x) n = n + 1 return x + n end)
    quiver.with_cache(c, function()
      assert.are.equal(11, f(10))
      assert.are.equal(11, f(10))
      assert.are.equal(12, f:rerun(10))
      assert.are.equal(12, f(10))
      assert.are.equal(12, f:load(10))
      assert.are.equal(23, f:rerun(20)) -- never stored: runs and stores
      assert.are.equal(23, f(20))
    end)
    assert.are.equal(3, n)
    assert.are.same({hits = 3, misses = 3}, f:stats())
    assert.are.equal(12, c:load(f:digest(10)).result)
    c:close()
  end)

  it("reruns the memoized calls made inside it, each once", function()
    local c = quiver.memory()
    local runs = {}
    local fib
    fib = quiver.memo("ops.fib", function(k)
      runs[k] = (runs[k] or 0) + 1
      if k < 2 then return k end
      return fib(k - 1) + fib(k - 2)
    end)
    local other = quiver.memo("ops.other", function() runs.other = (runs.other or 0) + 1 return 0 end)
    quiver.with_cache(c, function()
      other()
      assert.are.equal(6765, fib(20))
      for k = 0, 20 do assert.are.equal(1, runs[k], k) end
      assert.are.equal(6765, fib:rerun(20))
      -- every call inside ran again, once each (not 2^20 times)
      for k = 0, 20 do assert.are.equal(2, runs[k], k) end
      assert.are.equal(1, runs.other)
      -- a rerun of an inner call reruns only what is below it
      assert.are.equal(55, fib:rerun(10))
      assert.are.equal(3, runs[10])
      assert.are.equal(2, runs[11])
      -- and after the rerun, calls hit again
      fib(20)
      assert.are.equal(2, runs[20])
    end)
    c:close()
  end)

  it("stores what the inner calls return now", function()
    local c = quiver.memory()
    local base = 1
    local inner = quiver.memo("ops.inner", function(x) return x * base end)
    local outer = quiver.memo("ops.outer", function(x) return inner(x) + 1 end)
    quiver.with_cache(c, function()
      assert.are.equal(3, outer(2))
      base = 10
      assert.are.equal(3, outer(2))
      assert.are.equal(21, outer:rerun(2))
      assert.are.equal(20, inner(2))
      assert.are.equal(20, inner:load(2))
    end)
    c:close()
  end)

  it("ends its rerun when the body raises, and stores nothing for it", function()
    local c = quiver.memory()
    local fail = false
    local runs = 0
    local inner = quiver.memo("ops.inner2", function(x) runs = runs + 1 return x end)
    local outer = quiver.memo("ops.outer2", function(x)
      inner(x)
      if fail then error("boom") end
      return x
    end)
    quiver.with_cache(c, function()
      outer(1)
      fail = true
      local ok, err = pcall(outer.rerun, outer, 1)
      assert.is_false(ok)
      assert.matches("boom", err)
      assert.are.equal(2, runs)
      assert.are.equal(1, outer:load(1)) -- the old result stays
      fail = false
      outer(1)
      inner(1)
      assert.are.equal(2, runs) -- the rerun is over: these hit
      -- an argument with no encoding raises before anything runs
      ok, err = pcall(outer.rerun, outer, print)
      assert.is_false(ok)
      assert.matches("QV_EENCODE", err)
      inner(1)
      assert.are.equal(2, runs)
    end)
    c:close()
  end)

  it("computes on a read-only cache without storing", function()
    local dir = H.tmpdir("rerun-ro")
    local n = 0
    local f = quiver.memo("ops.ro", function(x) n = n + 1 return n end)
    local rw = quiver.open(dir)
    quiver.with_cache(rw, function() f(1) end)
    rw:close()
    local ro = quiver.open(dir, {readonly = true})
    quiver.with_cache(ro, function()
      assert.are.equal(2, f:rerun(1))
      assert.are.equal(1, f(1))
    end)
    ro:close()
  end)
end)

describe("m:evict and m:clear", function()
  it("evicts one call from the active cache", function()
    local c = quiver.memory()
    local n = 0
    local f = quiver.memo("ops.ev", function(x, y) n = n + 1 return x + y end)
    quiver.with_cache(c, function()
      f(1, 2)
      f(3, 4)
      assert.is_true(f:evict(1, 2))
      assert.is_false(f:evict(1, 2))
      assert.is_false(f:contains(1, 2))
      assert.is_true(f:contains(3, 4))
      f(1, 2)
    end)
    assert.are.equal(3, n)
    c:close()
  end)

  it("clears every call of the name, any version, and nothing else", function()
    local c = quiver.memory()
    local v1 = quiver.memo("ops.cl", function(x) return x end, {version = "1"})
    local v2 = quiver.memo("ops.cl", function(x) return x end, {version = "2"})
    local keep = quiver.memo("ops.keep", function(x) return x end)
    quiver.with_cache(c, function()
      for i = 1, 5 do v1(i) end
      v2(1)
      keep(1)
      assert.are.equal(6, v2:clear())
      assert.are.equal(0, v1:clear())
      assert.is_false(v1:contains(3))
      assert.is_true(keep:contains(1))
    end)
    assert.are.equal(1, c:stats().entries)
    c:close()
  end)

  it("works on an LMDB cache, and gc then takes the values", function()
    local c = quiver.open(H.tmpdir("clear"))
    local big = quiver.memo("ops.big", function(i) return string.rep("x", 10000) .. i end)
    quiver.with_cache(c, function()
      for i = 1, 4 do big(i) end
      assert.are.equal(4, big:clear())
    end)
    c:gc()
    local s = c:stats()
    assert.are.equal(0, s.entries)
    assert.are.equal(0, s.values)
    c:close()
  end)
end)

describe("a miss from load", function()
  it("is nil and a message, from m:load and c:load alike", function()
    local c = quiver.memory()
    local f = quiver.memo("ops.ld", function(x) if x == 0 then return nil end return x end)
    quiver.with_cache(c, function()
      local v, err = f:load(1)
      assert.is_nil(v)
      assert.matches("^QV_NOTFOUND: ops.ld: no stored result", err)
      local rec, err2 = c:load(f:digest(1))
      assert.is_nil(rec)
      assert.matches("^QV_NOTFOUND: the call " .. f:digest(1) .. " is not stored", err2)
      -- the idiom: assert turns the miss into an error with the message
      local ok, msg = pcall(function() return assert(f:load(1)) end)
      assert.is_false(ok)
      assert.matches("QV_NOTFOUND", msg)
      -- a stored nil is a hit: nil and no message
      f(0)
      assert.are.equal(1, select("#", f:load(0)))
      assert.is_nil(f:load(0))
      f(1)
      assert.are.equal(1, select("#", f:load(1)))
      assert.are.equal(1, f:load(1))
      assert.are.equal(1, select("#", c:load(f:digest(1))))
      assert.is_nil(c:load(f:digest(0)).result)
    end)
    -- a bad digest is still an error, not a miss
    assert.has_error(function() c:load("zz") end)
    c:close()
  end)
end)
