-- Futures from the C executor: C functions memoized through libffi run on
-- quiver's thread pool; their callbacks come back on the Lua thread.
local quiver = H.quiver

local function sleep(s)
  os.execute("sleep " .. s)
end

describe("futures", function()
  local slow = H.cfunction("t.slow_square", "1", "slow_square")

  it("runs a C call on the pool and waits for its result", function()
    local c = quiver.memory()
    local f = quiver.with_cache(c, function() return quiver.submit(slow, 7, 50) end)
    assert.are.equal(49, f:wait(10))
    assert.are.equal("done", f:state())
    assert.is_true(f:done())
    -- stored into the submitter's cache by the worker
    assert.is_true(c:contains(slow:digest(7, 50)))
    assert.are.equal(49, c:load(slow:digest(7, 50)).result)
  end)

  it("answers a hit with a completed future that never reaches the pool", function()
    local c = quiver.memory()
    local pool = quiver.pool(2)
    quiver.with_cache(c, function() assert.are.equal(64, pool:submit(slow, 8, 1):wait()) end)
    local before = pool:stats().completed
    local f = quiver.with_cache(c, function() return pool:submit(slow, 8, 1) end)
    assert.is_true(f:done())
    assert.are.equal(64, f:wait(0))
    assert.are.equal(before, pool:stats().completed)
  end)

  it("times out with QV_ETIMEOUT and can still be waited for", function()
    local f = quiver.with_cache(quiver.memory(), function() return quiver.submit(slow, 3, 400) end)
    local ok, err = pcall(f.wait, f, 0.01)
    assert.is_false(ok)
    assert.matches("^QV_ETIMEOUT: ", err)
    assert.are.equal(9, f:wait())
  end)

  it("delivers on_done callbacks on the Lua thread, from poll or wait only", function()
    local f = quiver.with_cache(quiver.memory(), function() return quiver.submit(slow, 5, 100) end)
    local seen = {}
    f:on_done(function(fut) seen[#seen + 1] = fut:wait(0) end)
    f:on_done(function(fut) seen[#seen + 1] = fut:state() end)
    sleep(0.5) -- the worker finished meanwhile: nothing ran behind our back
    assert.are.equal("done", f:state())
    assert.are.same({}, seen)
    assert.are.equal(2, quiver.poll())
    assert.are.same({25, "done"}, seen)
    assert.are.equal(0, quiver.poll())
  end)

  it("runs a callback at once when the future has already completed", function()
    local f = quiver.with_cache(quiver.memory(), function() return quiver.submit(slow, 6, 1) end)
    f:wait()
    local got
    f:on_done(function(fut) got = fut:wait() end)
    assert.are.equal(36, got)
  end)

  it("keeps the other callbacks queued when one raises", function()
    local c = quiver.memory()
    local a = quiver.with_cache(c, function() return quiver.submit(slow, 2, 200) end)
    local b = quiver.with_cache(c, function() return quiver.submit(slow, 3, 200) end)
    local ran = {}
    a:on_done(function() error("callback failed") end)
    b:on_done(function() ran[#ran + 1] = "b" end)
    while not (a:done() and b:done()) do sleep(0.05) end
    -- completion order decides which runs first; a's error leaves b's queued
    local ok, err = pcall(quiver.poll)
    assert.is_false(ok)
    assert.matches("callback failed", err)
    local pending = #ran == 0 and 1 or 0
    assert.are.equal(pending, quiver.poll())
    assert.are.same({"b"}, ran)
  end)

  it("reports cancellation as QV_ECANCELLED", function()
    local pool = quiver.pool(1)
    local c = quiver.memory()
    local first = quiver.with_cache(c, function() return pool:submit(slow, 10, 300) end)
    local queued = quiver.with_cache(c, function() return pool:submit(slow, 11, 300) end)
    assert.is_true(queued:cancel())
    assert.are.equal("cancelled", queued:state())
    local ok, err = pcall(queued.wait, queued, 5)
    assert.is_false(ok)
    assert.matches("^QV_ECANCELLED", err)
    assert.are.equal(100, first:wait())
    assert.is_false(first:cancel())
    pool = quiver.pool(2)
  end)

  it("refuses arguments the C signature cannot take, naming the status", function()
    local ok, err = pcall(quiver.submit, slow, "x", 1)
    assert.is_false(ok)
    assert.matches("^QV_ETYPE: ", err)
  end)

  it("calls a memoized C function directly, counting hits", function()
    local c = quiver.memory()
    local add = H.cfunction("shared.add", "1", "add")
    quiver.with_cache(c, function()
      assert.are.equal(3, add(1, 2))
      assert.are.equal(3, add(1, 2))
    end)
    assert.are.equal(1, add:stats().hits)
    assert.are.equal(1, add:stats().misses)
    -- the Lua memo of the same name and version reads what C stored
    local lua_add = quiver.memo("shared.add", function() error("must not run") end, {version = "1"})
    assert.are.equal(3, quiver.with_cache(c, lua_add, 1, 2))
  end)
end)
