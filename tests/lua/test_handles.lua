-- Handles the C module gives out: closing releases them once; any use after
-- is a clean error naming the handle, never freed memory (the asan variant
-- of this spec runs it under AddressSanitizer).
local quiver = H.quiver
local core = require "quiver_core"

local ZERO = string.rep("0", 32)

-- Close h twice, then check that use(h) raises QV_ECLOSED naming the handle.
local function closes_cleanly(h, name, use)
  assert.is_false(core.closed(h))
  core.close(h)
  core.close(h)
  assert.is_true(core.closed(h))
  local ok, err = pcall(use, h)
  assert.is_false(ok)
  assert.matches("^QV_ECLOSED: [%w_]+: the " .. name .. " handle is closed", err)
end

describe("raw handles", function()
  it("offers no raw destructor that would leave a handle pointing at freed memory", function()
    for _, name in ipairs {"qv_cache_close", "qv_fn_free", "qv_future_free", "qv_pool_free", "qv_iter_free",
                           "qv_ctx_free", "qv_ctx_push", "qv_ctx_pop", "qv_ctx_enter", "qv_executor_free",
                           "qv_executor_wrap", "qv_executor_submit_call", "qv_pool_executor"} do
      assert.is_nil(core[name], name)
    end
  end)

  it("closes a cache once; every use after is QV_ECLOSED", function()
    local _, h = core.qv_cache_open_memory()
    closes_cleanly(h, "qv_cache", function(x) return core.qv_cache_contains(x, ZERO) end)
    for _, use in ipairs {
      function() return core.qv_cache_path(h) end,
      function() return core.qv_cache_stat(h, 0) end,
      function() return core.qv_cache_query(h, nil) end,
      function() return core.qv_cache_load(h, ZERO) end,
      function() return core.ctx_push(h, nil) end,
    } do
      local ok, err = pcall(use)
      assert.is_false(ok)
      assert.matches("^QV_ECLOSED: .*qv_cache handle is closed", err)
    end
    assert.are.equal(0, quiver.depth())
  end)

  it("closes a C function once; calling it after is QV_ECLOSED", function()
    local _, fn = core.qv_fn_new_c("t.h.add", "1", core.c_symbol(H.fixture, "qvt_add"), "i64(i64,i64)")
    assert.are.equal("t.h.add", core.qv_fn_name(fn))
    closes_cleanly(fn, "qv_fn", function(x) return core.qv_fn_call(x, {1, 2}) end)
    local ok, err = pcall(core.qv_fn_digest, fn, {1, 2}, nil)
    assert.is_false(ok)
    assert.matches("qv_fn handle is closed", err)
  end)

  it("closes a future once; waiting on it after is QV_ECLOSED", function()
    local add = H.cfunction("t.h.fut", "1", "add")
    local f = quiver.with_cache(quiver.memory(), function() return quiver.submit(add, 1, 2) end)
    assert.are.equal(3, f:wait(10))
    local h = f._h
    closes_cleanly(h, "qv_future", function(x) return core.qv_future_wait(x, 0) end)
    for _, use in ipairs {core.qv_future_state, core.future_result, function(x) return core.future_notify(x, 1) end} do
      local ok, err = pcall(use, h)
      assert.is_false(ok)
      assert.matches("qv_future handle is closed", err)
    end
  end)

  it("closes an iterator once; reading it after is QV_ECLOSED", function()
    local _, c = core.qv_cache_open_memory()
    local _, it = core.qv_cache_query(c, nil)
    closes_cleanly(it, "qv_iter", core.qv_iter_next)
    core.close(c)
  end)

  it("closes a pool reference once; using it after is QV_ECLOSED", function()
    local _, p = core.qv_pool_shared(0, 0)
    local _, fn = core.qv_fn_new_c("t.h.pool", "1", core.c_symbol(H.fixture, "qvt_add"), "i64(i64,i64)")
    closes_cleanly(p, "qv_pool", function(x) return core.qv_pool_stat(x, 0) end)
    local ok, err = pcall(core.pool_submit, p, fn, {1, 2})
    assert.is_false(ok)
    assert.matches("qv_pool handle is closed", err)
    -- the shared pool itself lives on for other references
    local f = core.pool_submit(select(2, core.qv_pool_shared(0, 0)), fn, {1, 2})
    core.qv_future_wait(f, -1)
    core.close(fn)
  end)

  it("frees a handle once whatever order the collector finalizes in", function()
    for i = 1, 20 do
      -- marked for finalization before its handle, so finalized after it
      local holder = setmetatable({}, {__gc = function(self) core.close(self.h) end})
      holder.h = select(2, core.qv_cache_open_memory())
      if i % 2 == 0 then core.close(holder.h) end
    end
    collectgarbage()
    collectgarbage()
  end)

  it("hides the finalizer of the context a scope holds", function()
    local c = quiver.memory()
    local scope <close> = quiver.cache_scope(c)
    assert.are.equal("quiver.context", getmetatable(scope._frame))
    local m = quiver.memo("t.h.frame", function(x) return x end)
    m(1)
    assert.is_true(c:contains(m:digest(1)))
  end)

  it("refuses a handle closed by Lua code that ran while the arguments were converted", function()
    local _, fn = core.qv_fn_new_c("t.h.late", "1", core.c_symbol(H.fixture, "qvt_add"), "i64(i64,i64)")
    -- the argument list's length is read through its __index, which closes fn
    local args = setmetatable({1, 2}, {__index = function(_, k) if k == "n" then core.close(fn) end end})
    local ok, err = pcall(core.qv_fn_call, fn, args)
    assert.is_false(ok)
    assert.matches("^QV_ECLOSED: qv_fn_call: the qv_fn handle is closed", err)
    local _, p = core.qv_pool_shared(0, 0)
    local _, fn2 = core.qv_fn_new_c("t.h.late2", "1", core.c_symbol(H.fixture, "qvt_add"), "i64(i64,i64)")
    args = setmetatable({1, 2}, {__index = function(_, k) if k == "n" then core.close(fn2) end end})
    ok, err = pcall(core.pool_submit, p, fn2, args)
    assert.is_false(ok)
    assert.matches("^QV_ECLOSED: pool_submit: the qv_fn handle is closed", err)
    core.close(p)
  end)

  it("frees the arguments converted before one that cannot be", function()
    local _, fn = core.qv_fn_new_c("t.h.args", "1", core.c_symbol(H.fixture, "qvt_add"), "i64(i64,i64)")
    for _ = 1, 3 do
      -- args becomes a tree, then kwargs fails: the leak check (asan) sees the rest
      local ok, err = pcall(core.qv_fn_digest, fn, {1, 2}, {f = print})
      assert.is_false(ok)
      assert.matches("^QV_EENCODE: cannot encode a Lua function", err)
      ok, err = pcall(core.qv_fn_call_kw, fn, {1, 2}, {f = print})
      assert.is_false(ok)
      assert.matches("^QV_EENCODE", err)
    end
    assert.are.equal(3, select(2, core.qv_fn_call(fn, {1, 2})))
    core.close(fn)
  end)

  it("refuses what is not a handle", function()
    for _, v in ipairs {{}, "x", quiver.memo("t.h.m", print), io.stdout} do
      local ok, err = pcall(core.close, v)
      assert.is_false(ok)
      assert.matches("^QV_EINVAL: close: expected a quiver handle", err)
    end
    local _, c = core.qv_cache_open_memory()
    local ok, err = pcall(core.qv_iter_next, c)
    assert.is_false(ok)
    assert.matches("expected a qv_iter", err)
    core.close(c)
  end)
end)

describe("handle objects", function()
  it("make every use after close an error naming the object", function()
    local c = quiver.memory()
    c:close()
    c:close()
    local ok, err = pcall(c.contains, c, ZERO)
    assert.is_false(ok)
    assert.matches("^QV_ECLOSED: the cache is closed", err)

    local add = H.cfunction("t.h.obj", "1", "add")
    assert.are.equal(3, add(1, 2))
    add:close()
    add:close()
    ok, err = pcall(add, 1, 2)
    assert.is_false(ok)
    assert.matches("^QV_ECLOSED: .*qv_fn handle is closed", err)

    local f = quiver.with_cache(quiver.memory(), function() return quiver.submit(H.cfunction("t.h.o2", "1", "add"), 2, 2) end)
    assert.are.equal(4, f:wait(10))
    f:close()
    f:close()
    for _, method in ipairs {"wait", "state", "done", "cancel"} do
      ok, err = pcall(f[method], f)
      assert.is_false(ok, method)
      assert.matches("qv_future handle is closed", err)
    end

    local pool = quiver.pool()
    pool:close()
    pool:close()
    ok, err = pcall(pool.submit, pool, add)
    assert.is_false(ok)
    assert.matches("closed", err)
    assert.is_true(quiver.pool():stats().workers >= 0) -- other references still work
  end)

  it("releases a query's snapshot when it is read to the end", function()
    local c = quiver.memory()
    local m = quiver.memo("t.h.q", function(x) return x end)
    quiver.with_cache(c, function() m(1) m(2) end)
    local it = c:query {name = "t.h.q"}
    assert.is_not_nil(it())
    assert.is_not_nil(it())
    assert.is_nil(it())
    assert.is_nil(it()) -- and again, harmlessly
  end)
end)
