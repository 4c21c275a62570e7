-- Queries (issue 12): c:query and m:query filter stored records by name,
-- argument position (or a Lua parameter's name), kwargs, metadata and
-- result, with values, predicates, quiver.ANY and quiver.null.
local quiver = H.quiver

local function collect(iter)
  local out = {}
  for rec in iter do out[#out + 1] = rec end
  return out
end

local function results(iter)
  local out = {}
  for rec in iter do out[#out + 1] = rec.result end
  table.sort(out)
  return out
end

-- A cache holding q.area(w, h) for a few shapes, each under metadata.
local function filled()
  local c = quiver.memory()
  local area = quiver.memo("q.area", function(w, h) return w * h end)
  local label = quiver.memo("q.label", function(s) return s end)
  quiver.with_cache(c, function()
    quiver.with_meta({project = "p1", size = 1}, function()
      area(1, 2)
      area(3, 4)
    end)
    quiver.with_meta({project = "p2"}, function() area(5, 6) end)
    label("x")
    label(quiver.bytes("\0\1"))
    label(nil)
  end)
  return c, area, label
end

describe("c:query", function()
  it("filters by name, argument position, metadata and result", function()
    local c = filled()
    assert.are.equal(6, #collect(c:query()))
    assert.are.same({2, 12, 30}, results(c:query{name = "q.area"}))
    assert.are.same({12}, results(c:query{name = "q.area", args = {[1] = 3}}))
    assert.are.same({2, 12}, results(c:query{meta = {project = "p1"}}))
    assert.are.same({2, 12}, results(c:query{meta = {size = 1}}))
    assert.are.same({30}, results(c:query{name = "q.area", result = 30}))
    assert.are.same({}, results(c:query{name = "q.area", args = {[1] = 3, [2] = 5}}))
    c:close()
  end)

  it("takes predicates as filter values, and where= for the whole record", function()
    local c = filled()
    assert.are.same({12, 30}, results(c:query{name = "q.area", args = {[2] = function(h) return h > 2 end}}))
    assert.are.same({2, 30}, results(c:query{name = "q.area", result = function(r) return r < 5 or r > 20 end}))
    assert.are.same({30}, results(c:query{where = function(rec) return rec.meta.project == "p2" end}))
    -- a predicate sees nil for a stored null
    local seen = {}
    for _ in c:query{name = "q.label", args = {[1] = function(v) seen[#seen + 1] = v == nil return true end}} do end
    table.sort(seen, function(a, b) return tostring(a) < tostring(b) end)
    assert.are.same({false, false, true}, seen)
    c:close()
  end)

  it("has quiver.ANY, any value that is there, and quiver.null, which asks for a stored nil", function()
    local c = filled()
    assert.are.equal("quiver.ANY", tostring(quiver.ANY))
    assert.are.same({2, 12, 30}, results(c:query{name = "q.area", args = {[1] = quiver.ANY, [2] = quiver.ANY}}))
    assert.are.same({}, results(c:query{name = "q.area", args = {[3] = quiver.ANY}}))
    assert.are.same({}, results(c:query{name = "q.area", meta = {x = quiver.ANY}}))
    -- a stored null is there: label(nil) passes
    assert.are.equal(3, #collect(c:query{name = "q.label", args = {[1] = quiver.ANY}, result = quiver.ANY}))
    local nulls = collect(c:query{name = "q.label", args = {[1] = quiver.null}})
    assert.are.equal(1, #nulls)
    assert.is_nil(nulls[1].result)
    assert.are.equal(1, #collect(c:query{name = "q.label", result = quiver.null}))
    assert.are.same({2, 12}, results(c:query{meta = {project = "p1", size = quiver.ANY}}))
    assert.are.same({30}, results(c:query{name = "q.area", meta = {size = quiver.null}}))
    -- the wildcard is no value: it cannot be an argument
    local ok, err = pcall(quiver.encode, quiver.ANY)
    assert.is_false(ok)
    assert.matches("QV_EENCODE", err)
    c:close()
  end)

  it("compares byte strings as they decode: to strings", function()
    local c = filled()
    local by_bytes = collect(c:query{name = "q.label", args = {[1] = quiver.bytes("\0\1")}})
    assert.are.equal(1, #by_bytes)
    assert.are.equal("\0\1", by_bytes[1].result)
    assert.are.equal(1, #collect(c:query{name = "q.label", args = {[1] = "\0\1"}}))
    c:close()
  end)

  it("refuses filters it cannot apply", function()
    local c = filled()
    local ok, err = pcall(c.query, c, {args = {[0] = 1}})
    assert.is_false(ok)
    assert.matches("by position or parameter name", err)
    -- Lua memos write no parameter names: a name matches none of their records
    assert.are.same({}, results(c:query{name = "q.area", args = {w = 1}}))
    ok, err = pcall(c.query, c, {meta = "p1"})
    assert.is_false(ok)
    assert.matches("meta must be a table", err)
    c:close()
  end)

  it("filters on kwargs of calls Python stored", function()
    local dir = H.tmpdir("pykw")
    local py = [[
import sys, quiver
@quiver.memo(name="q.py_scale", version="1")
def scale(x, *, factor=1):
    return x * factor
with quiver.cache(quiver.Cache.open(sys.argv[1])):
    print(scale(2, factor=3), scale(2, factor=5), scale(4, factor=1))
]]
    local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS python3 -c '" .. py:gsub("'", "'\\''") .. "' "
      .. dir .. " 2>&1"))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local c = quiver.open(dir)
    assert.are.same({4, 6, 10}, results(c:query{name = "q.py_scale"}))
    assert.are.same({10}, results(c:query{name = "q.py_scale", kwargs = {factor = 5}}))
    assert.are.same({4, 6, 10}, results(c:query{name = "q.py_scale", kwargs = {factor = quiver.ANY}}))
    assert.are.same({4, 6}, results(c:query{name = "q.py_scale", kwargs = {factor = function(f) return f < 4 end}}))
    assert.are.same({6}, results(c:query{name = "q.py_scale", args = {[1] = 2}, kwargs = {factor = 3}}))
    -- Python writes its parameter names (FORMAT 6.6): filter by them, read them as rec.params
    assert.are.same({6, 10}, results(c:query{name = "q.py_scale", args = {x = 2}}))
    for rec in c:query{name = "q.py_scale"} do
      assert.are.same({"x"}, rec.params)
      assert.is_nil(rec.meta["quiver.params"])
    end
    c:close()
  end)
end)

describe("m:query", function()
  it("queries the active cache for the memo's name, by position or parameter name", function()
    local c, area, label = filled()
    quiver.with_cache(c, function()
      assert.are.same({2, 12, 30}, results(area:query()))
      assert.are.same({12}, results(area:query{args = {w = 3}}))
      assert.are.same({12}, results(area:query{args = {h = 4}}))
      assert.are.same({30}, results(area:query{args = {[1] = 5}, meta = {project = "p2"}}))
      assert.are.same({2, 12}, results(area:query{args = {w = function(w) return w < 5 end}}))
      assert.are.equal(3, #collect(label:query()))
      local ok, err = pcall(area.query, area, {args = {depth = 1}})
      assert.is_false(ok)
      assert.matches("q.area has no parameter named 'depth'", err)
    end)
    -- another cache: nothing there
    quiver.with_cache(quiver.memory(), function() assert.are.same({}, results(area:query())) end)
    c:close()
  end)

  it("counts positions as stored when the memo ignores some", function()
    local c = quiver.memory()
    local f = quiver.memo("q.ign", function(log, a, verbose, b) return a - b end, {ignore = {"log", 3}})
    quiver.with_cache(c, function()
      f(print, 10, true, 1)
      f(print, 20, false, 5)
      assert.are.same({15}, results(f:query{args = {b = 5}}))
      assert.are.same({9}, results(f:query{args = {a = 10}}))
      assert.are.same({9}, results(f:query{args = {[1] = 10}}))
      local ok, err = pcall(f.query, f, {args = {verbose = true}})
      assert.is_false(ok)
      assert.matches("q.ign ignores its parameter 'verbose'", err)
    end)
    c:close()
  end)

  it("gives the records with digests that load them", function()
    local c, area = filled()
    quiver.with_cache(c, function()
      for rec in area:query{args = {w = 1}} do
        assert.are.equal(area:digest(1, 2), rec.digest)
        assert.are.equal(2, c:load(rec.digest).result)
        assert.are.equal("lua", rec.lang)
      end
    end)
    c:close()
  end)
end)
