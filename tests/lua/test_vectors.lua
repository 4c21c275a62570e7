-- The shared vectors and the project's own, byte for byte: decode/encode/digest of every encoding,
-- the same values built from native Lua values, the call digests, and every
-- invalid input refused with an error.
local quiver = H.quiver

local PICKLE = "pickle"

-- Whether v holds a byte string that is valid UTF-8: decoded as a plain
-- string, it would encode again as text.
local function text_like_bytes(v)
  if quiver.kind(v) == "bytes" then return pcall(quiver.text, v.data) end
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if text_like_bytes(k) or text_like_bytes(x) then return true end
  end
  return false
end

-- Decoding without {exact = true} gives strings for byte strings: the same
-- bytes again unless one of them is valid UTF-8 (then text in their place),
-- and the same value as the exact decoding otherwise.
local plain_same, plain_differs = 0, 0
local function check_plain(enc, exact)
  local plain = quiver.decode(enc)
  if text_like_bytes(exact) then
    plain_differs = plain_differs + 1
  else
    assert.are.equal(H.hex(enc), H.hex(quiver.encode(plain)))
    plain_same = plain_same + 1
  end
end

describe("values.tsv", function()
  for _, row in ipairs(H.tsv("values.tsv")) do
    local enc, digest, name = H.unhex(row[1]), row[2], row[3]
    if name == PICKLE then
      it("refuses to decode a Python pickle, naming it", function()
        local ok, err = pcall(quiver.decode, enc)
        assert.is_false(ok)
        assert.matches("QV_ETYPE", err)
        assert.matches("pickle", err)
        assert.matches("0x51560002", err)
      end)
    else
      it("decodes, re-encodes and digests " .. name, function()
        local v = quiver.decode(enc, {exact = true})
        assert.are.equal(H.hex(enc), H.hex(quiver.encode(v)))
        assert.are.equal(digest, quiver.digest(v))
        check_plain(enc, v)
      end)
    end
  end
end)

-- The project's own vectors (tests/vectors, beside this spec's directory): the
-- tags quiver gives meaning to for Python types decode as tagged values.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local function project_tsv()
  local saved = H.vectors
  H.vectors = here .. "/../vectors"
  local rows = H.tsv("values.tsv")
  H.vectors = saved
  return rows
end

describe("the project's values.tsv", function()
  local rows = project_tsv()
  it("has a vector of every type", function()
    assert.is_true(#rows >= 30)
  end)
  for _, row in ipairs(rows) do
    local enc, digest, name = H.unhex(row[1]), row[2], row[3]
    it("decodes, re-encodes and digests " .. name, function()
      local v = quiver.decode(enc, {exact = true})
      check_plain(enc, v)
      local head = enc:byte(1)
      if head >= 0xc0 and head <= 0xdb then
        local n = head & 0x1f
        if n >= 24 then
          n = 0
          for b = 2, 1 + (1 << ((head & 0x1f) - 24)) do n = n << 8 | enc:byte(b) end
        end
        assert.are.equal("tag", quiver.kind(v))
        assert.are.equal(n, v.tag)
      end
      assert.are.equal(H.hex(enc), H.hex(quiver.encode(v)))
      assert.are.equal(digest, quiver.digest(v))
    end)
  end
end)

describe("decoding without the exact option", function()
  it("ran on vectors of both kinds above", function()
    assert.is_true(plain_same > 20)
    assert.is_true(plain_differs > 0)
  end)

  it("gives a byte string as a string, which re-encodes by its content", function()
    assert.are.equal("\0\1", quiver.decode(quiver.encode(quiver.bytes("\0\1"))))
    assert.are.equal("60", H.hex(quiver.encode(quiver.decode(H.unhex("40")))))
    assert.are.equal("42ff00", H.hex(quiver.encode(quiver.decode(H.unhex("42ff00")))))
    assert.are.equal("bytes", quiver.kind(quiver.decode(H.unhex("40"), {exact = true})))
  end)
end)

describe("values.json from native Lua values", function()
  for _, case in ipairs(H.load_json("values.json")) do
    it("encodes " .. case.name, function()
      local v = H.native(case.value)
      assert.are.equal(case.cbor, H.hex(quiver.encode(v)))
      assert.are.equal(case.digest, quiver.digest(v))
    end)
  end
end)

describe("calls", function()
  for _, row in ipairs(H.tsv("calls.tsv")) do
    local name, version, args, kwargs, digest = row[1], row[2], row[3], row[4], row[5]
    if version == "\\N" then version = nil end
    it("call_digest of " .. name .. " with args " .. args, function()
      local a, k = quiver.decode(H.unhex(args), {exact = true}), quiver.decode(H.unhex(kwargs), {exact = true})
      assert.are.equal(digest, quiver.call_digest(name, version, a, k))
    end)
  end

  for _, case in ipairs(H.load_json("calls.json")) do
    it("call_digest from native values: " .. case.name .. " " .. case.args_cbor, function()
      local args = H.native({list = case.args})
      local kwargs = H.native({map = case.kwargs})
      local version = case.version ~= H.json_null and case.version or nil
      assert.are.equal(case.digest, quiver.call_digest(case.name, version, args, kwargs))
    end)
  end

  it("a Lua memo's positional call has Python's digest for add(1, 2)", function()
    local add = quiver.memo("shared.add", function(x, y) return x + y end)
    local add1 = quiver.memo("shared.add", function(x, y) return x + y end, {version = "1"})
    assert.are.equal("d2aec93101298c8daf75589ce9ce1f83", add:digest(1, 2))
    assert.are.equal("dff12a2d48c1bcdf495cb3ea7e70ba6f", add1:digest(1, 2))
    assert.are.equal("3bf24889604587768f4602a607c7f86f", add:digest(2, 1))
  end)

  it("a built-in C function memoized by qv_fn_new_c digests like a Lua memo", function()
    local cadd = H.cfunction("shared.add", "1", "add")
    assert.are.equal("dff12a2d48c1bcdf495cb3ea7e70ba6f", cadd:digest(1, 2))
  end)
end)

describe("truncated vectors", function()
  it("refuses every proper prefix of every valid encoding", function()
    local refused = 0
    for _, row in ipairs(H.tsv("values.tsv")) do
      local enc = H.unhex(row[1])
      for n = 0, #enc - 1 do
        local ok, err = pcall(quiver.decode, enc:sub(1, n))
        assert.is_false(ok, row[3] .. " prefix " .. n)
        assert.matches("^QV_EDECODE: ", err)
        refused = refused + 1
      end
    end
    assert.is_true(refused > 1000)
  end)
end)

describe("invalid.tsv", function()
  for _, row in ipairs(H.tsv("invalid.tsv")) do
    local enc, why = H.unhex(row[1]), row[2]
    it("refuses " .. why, function()
      local ok, err = pcall(quiver.decode, enc)
      assert.is_false(ok)
      assert.matches("^QV_EDECODE: ", err)
    end)
  end
end)
