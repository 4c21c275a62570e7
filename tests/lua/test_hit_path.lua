-- The hit path's own encoder and small-result decoder (issue 10, the hit
-- numbers): a call of integers, strings, booleans and nils is keyed by bytes
-- written in memo.c, not by the general encoder the store uses, and a small
-- integer, nil or boolean result is pushed without the decoder. Both must
-- agree with the general path exactly: a call stored by the general path
-- hits through the fast one (without the miss that the call runtime's second
-- look, by the general encoding, would hide), no two arguments share a key,
-- and every result comes back with its value and type.
local quiver = H.quiver

local EDGES = {0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295, 4294967296, math.maxinteger,
               -1, -24, -25, -256, -257, -65536, -65537, -4294967296, -4294967297, math.mininteger,
               "", "a", "é", string.rep("x", 23), string.rep("x", 24), string.rep("y", 256),
               string.rep("z", 600), "\xff\xfe", "\xc3", true, false, 1.5, 2.0}

local function same(a, b)
  return a == b and math.type(a) == math.type(b) and type(a) == type(b)
end

describe("the hit path", function()
  it("hits, through its own encoder, each call the general path stored", function()
    local c = quiver.memory()
    local runs = 0
    local ident = quiver.memo("hit_path.ident", function(x) runs = runs + 1 return x end)
    quiver.with_cache(c, function()
      for _, v in ipairs(EDGES) do
        runs = 0
        assert.is_true(same(v, ident(v)))
        assert.are.equal(1, runs)
        local misses = c:stats().misses
        local got = ident(v)
        assert.is_true(same(v, got), "read " .. tostring(got) .. " for " .. tostring(v) .. ": two keys collide")
        assert.are.equal(1, runs)
        assert.are.equal(misses, c:stats().misses, tostring(v) .. " missed: the two encoders disagree")
      end
    end)
  end)

  it("keys nil, several arguments, a version and ignored positions alike", function()
    local c = quiver.open(H.tmpdir("hit_path"))
    local runs = 0
    local f = quiver.memo("hit_path.déjà", function(a, b, ctx, d)
      runs = runs + 1
      return {a, b, d}
    end, {version = "v2 é", ignore = {3}})
    quiver.with_cache(c, function()
      f(1, nil, "ignored", "x")
      local misses = c:stats().misses
      assert.are.same({1, nil, "x"}, f(1, nil, "other", "x"))
      assert.are.equal(misses, c:stats().misses)
      assert.are.equal(1, runs)
    end)
  end)

  it("gives small results back with their value and type", function()
    local c = quiver.memory()
    local result = quiver.memo("hit_path.result", function(i) return EDGES[i] end)
    quiver.with_cache(c, function()
      for i, v in ipairs(EDGES) do
        result(i)
        assert.is_true(same(v, result(i)), tostring(v))
      end
      local none = quiver.memo("hit_path.none", function() return nil end)
      none()
      assert.is_nil(none())
    end)
  end)
end)
