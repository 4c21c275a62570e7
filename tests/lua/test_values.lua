-- How Lua values map to the canonical encoding (DESIGN section 3) and what
-- decoding gives back.
local quiver = H.quiver
local enc = function(v) return H.hex(quiver.encode(v)) end

describe("encoding Lua values", function()
  it("keeps integers and floats apart", function()
    assert.are.equal("01", enc(1))
    assert.are.equal("f93c00", enc(1.0))
    assert.are_not.equal(quiver.digest(1), quiver.digest(1.0))
    assert.are.equal("f5", enc(true))
    assert.are_not.equal(quiver.digest(true), quiver.digest(1))
  end)

  it("passes 64-bit integers exactly (no double in between)", function()
    assert.are.equal("1b7fffffffffffffff", enc(math.maxinteger))
    assert.are.equal("3b7fffffffffffffff", enc(math.mininteger))
    assert.are.equal("1b0020000000000001", enc(9007199254740993))
    assert.are.equal(9007199254740993, quiver.decode(quiver.encode(9007199254740993)))
    assert.are.equal("integer", math.type(quiver.decode(quiver.encode(9007199254740993))))
  end)

  it("writes NaN as f97e00 and keeps -0.0", function()
    assert.are.equal("f97e00", enc(0 / 0))
    assert.are.equal("f97e00", enc(-(0 / 0)))
    assert.are.equal("f98000", enc(-0.0))
  end)

  it("encodes strings as text when valid UTF-8, else as bytes", function()
    assert.are.equal("6161", enc("a"))
    assert.are.equal("62c3bc", enc("\xc3\xbc"))
    assert.are.equal("41ff", enc("\xff"))
    assert.are.equal("42c328", enc("\xc3\x28"))
    assert.are.equal("43eda080", enc("\xed\xa0\x80")) -- a surrogate is not UTF-8
  end)

  it("forces bytes with quiver.bytes", function()
    assert.are.equal("4161", enc(quiver.bytes("a")))
    assert.are.equal("40", enc(quiver.bytes("")))
  end)

  it("makes sequences lists and other tables maps", function()
    assert.are.equal("83010203", enc({1, 2, 3}))
    assert.are.equal("a0", enc({}))
    assert.are.equal("80", enc(quiver.list {}))
    assert.are.equal("a201020304", enc({[1] = 2, [3] = 4}))
    assert.are.equal("a26161016162820203", enc({b = {2, 3}, a = 1}))
    assert.are.equal("a2010a020b", enc(quiver.map {10, 11}))
    assert.are.equal("a301010202617803", enc({1, 2, x = 3}))
  end)

  it("keeps nils inside a list whose n says how long it is", function()
    assert.are.equal("8301f603", enc(quiver.list(table.pack(1, nil, 3))))
    assert.are.equal("82f6f6", enc(quiver.list {n = 2}))
    assert.are.equal("81f6", enc({quiver.null}))
    assert.are.equal("a16161f6", enc({a = quiver.null}))
  end)

  it("sorts map keys by their encodings (RFC 8949), whatever the table order", function()
    local m = {b = 1, [1000] = 2, [-1] = 3, aa = 4, [true] = 7, [1.5] = 8}
    m[quiver.bytes("x")] = 5
    m[quiver.null] = 6
    assert.are.equal("a81903e802200341780561620162616104f507f606f93e0008", enc(m))
  end)

  it("encodes sets in canonical order and bignums from decimal", function()
    assert.are.equal("d9010283010203", enc(quiver.set {3, 1, 2}))
    assert.are.equal("c249010000000000000000", enc(quiver.bigint("18446744073709551616")))
    assert.are.equal("3bffffffffffffffff", enc(quiver.bigint("-18446744073709551616")))
    assert.are.equal(42, quiver.bigint("42"))
    assert.are.equal("18446744073709551615", tostring(quiver.bigint("18446744073709551615")))
    assert.are.equal("-1267650600228229401496703205376", tostring(quiver.bigint("-1267650600228229401496703205376")))
  end)

  it("encodes equal set elements once, so that the set decodes again", function()
    -- distinct Lua tables, equal values: one element each
    local s = quiver.set {quiver.bytes("a"), quiver.list {1}, quiver.bytes("a"), quiver.list {1}, {x = 1}, {x = 1}}
    local want = "d90102" .. "83" .. "4161" .. "8101" .. "a1617801"
    assert.are.equal(want, enc(s))
    local back = quiver.decode(quiver.encode(s), {exact = true})
    assert.are.equal("set", quiver.kind(back))
    assert.are.equal(want, enc(back))
    assert.are.equal(quiver.digest(quiver.decode(H.unhex(want), {exact = true})), quiver.digest(s))
    -- inside maps, lists and sets, and as a map key
    local nested = quiver.map {[quiver.set {quiver.bytes("k"), quiver.bytes("k")}] =
      quiver.list {quiver.set {quiver.set {2, 1}, quiver.set {1, 2}}}}
    assert.are.equal("a1" .. "d9010281416b" .. "81" .. "d9010281" .. "d90102820102", enc(nested))
    assert.are.equal(enc(nested), enc(quiver.decode(quiver.encode(nested), {exact = true})))
  end)

  it("keys a memoized call on a set however its equal elements repeat", function()
    local c = quiver.memory()
    local runs = 0
    local m = quiver.memo("t.setarg", function(s) runs = runs + 1 return s end)
    quiver.with_cache(c, function()
      local r = m(quiver.set {quiver.bytes("a"), quiver.bytes("a")})
      assert.are.equal("d901028141" .. "61", enc(r))
      m(quiver.set {quiver.bytes("a")})
    end)
    assert.are.equal(1, runs)
  end)

  it("refuses what has no encoding, with the status in the message", function()
    local ok, err = pcall(quiver.encode, print)
    assert.is_false(ok)
    assert.matches("^QV_EENCODE: cannot encode a Lua function", err)
    ok, err = pcall(quiver.encode, {co = coroutine.create(print)})
    assert.matches("QV_EENCODE: cannot encode a Lua thread", err)
    local cycle = {}
    cycle[1] = cycle
    ok, err = pcall(quiver.encode, cycle)
    assert.is_false(ok)
    assert.matches("QV_EENCODE: nesting deeper than", err)
  end)
end)

describe("decoding", function()
  it("marks lists and maps so that they re-encode identically", function()
    local l = quiver.decode(H.unhex("80"))
    assert.are.equal("list", quiver.kind(l))
    assert.are.equal("80", enc(l))
    local m = quiver.decode(H.unhex("a201020304"))
    assert.are.equal("map", quiver.kind(m))
    assert.are.equal(2, m[1])
    assert.are.equal(4, m[3])
    local seq = quiver.decode(H.unhex("a2010a020b")) -- {1: 10, 2: 11} looks like a sequence
    assert.are.equal("a2010a020b", enc(seq))
  end)

  it("gives bytes and text as strings, and bytes as quiver.bytes objects when exact", function()
    assert.are.equal("a", quiver.decode(H.unhex("4161")))
    assert.are.equal("\1\255", quiver.decode(H.unhex("4201ff")))
    assert.are.equal("", quiver.decode(H.unhex("40")))
    -- inside lists, maps and sets too
    local l = quiver.decode(H.unhex("824161a1416242ff00"))
    assert.are.equal("a", l[1])
    assert.are.equal("\255\0", l[2].b)
    assert.is_true(quiver.decode(H.unhex("d90102814178")).x)
    local b = quiver.decode(H.unhex("4161"), {exact = true})
    assert.are.equal("bytes", quiver.kind(b))
    assert.are.equal("a", tostring(b))
    assert.are.equal("a", b.data)
    assert.are.equal(1, #b)
    assert.are.equal(quiver.bytes("a"), b)
    assert.are.equal("a", quiver.decode(H.unhex("6161")))
  end)

  it("decodes null as nil, and as quiver.null where a table cannot hold nil", function()
    assert.is_nil(quiver.decode(H.unhex("f6")))
    local l = quiver.decode(H.unhex("8301f603"))
    assert.are.equal(3, l.n)
    assert.is_nil(l[2])
    local m = quiver.decode(H.unhex("a16161f6"))
    assert.are.equal(quiver.null, m.a)
  end)

  it("decodes integers beyond 64 signed bits and bignums as bigint objects", function()
    local big = quiver.decode(H.unhex("1bffffffffffffffff"))
    assert.are.equal("bigint", quiver.kind(big))
    assert.are.equal("18446744073709551615", tostring(big))
    assert.are.equal("-18446744073709551617", tostring(quiver.decode(H.unhex("c349010000000000000000"))))
  end)

  it("decodes sets as tables of keys", function()
    local s = quiver.decode(H.unhex("d9010283010203"))
    assert.are.equal("set", quiver.kind(s))
    assert.is_true(s[1] and s[2] and s[3])
    assert.is_nil(s[4])
  end)

  it("decodes tuples as lists (that re-encode as tuples)", function()
    local t = quiver.decode(H.unhex("da5156000182016161"))
    assert.are.equal(1, t[1])
    assert.are.equal("a", t[2])
    assert.are.equal(2, #t)
  end)

  it("decodes typed arrays (tag 40) to shape, dtype, order and data", function()
    local a = quiver.decode(H.unhex("d82882820202d84e5001000000020000000300000004000000"))
    assert.are.equal("ndarray", quiver.kind(a))
    assert.are.same({2, 2}, {a.shape[1], a.shape[2]})
    assert.are.equal("int32", a.dtype)
    assert.are.equal("little", a.order)
    assert.are.equal(78, a.tag)
    local x1, x2, x3, x4 = string.unpack("<i4<i4<i4<i4", a.data)
    assert.are.same({1, 2, 3, 4}, {x1, x2, x3, x4})
    local bare = quiver.decode(H.unhex("d85650000000000000f03f0000000000000040"))
    assert.are.equal("tag", quiver.kind(bare))
    assert.are.equal(86, bare.tag)
  end)

  it("refuses a float map key that a Lua table would turn into an integer", function()
    local ok, err = pcall(quiver.decode, H.unhex("a1f93c0001")) -- {1.0: 1}
    assert.is_false(ok)
    assert.matches("QV_EDECODE", err)
  end)

  it("refuses a Python pickle anywhere in a value, after checking the whole input", function()
    local ok, err = pcall(quiver.decode, H.unhex("8201da515600024580054b2a2e")) -- [1, pickle]
    assert.is_false(ok)
    assert.matches("^QV_ETYPE: cannot decode a Python pickle %(tag 0x51560002%)", err)
    ok, err = pcall(quiver.decode, H.unhex("8301da515600024580054b2a2e")) -- truncated around it
    assert.matches("^QV_EDECODE: ", err)
  end)

  it("accepts the data of a quiver.bytes object", function()
    assert.are.equal(1, quiver.decode(quiver.bytes("\x01")))
  end)
end)

describe("text or bytes", function()
  it("encodes a plain string by its content: text when valid UTF-8, else bytes", function()
    assert.are.equal("6161", enc("a"))
    assert.are.equal("62c3a9", enc("é"))
    assert.are.equal("4161", enc(quiver.bytes("a")))
    assert.are.equal("41ff", enc("\255"))
    assert.are.equal("42c3a9", enc(quiver.bytes("é")))
  end)

  it("has quiver.text, which says text and refuses anything else", function()
    assert.are.equal("é", quiver.text("é"))
    assert.are.equal("", quiver.text(""))
    assert.are.equal("62c3a9", enc(quiver.text("é")))
    assert.are.equal("6200" .. "01", enc(quiver.text("\0\1")))
    for _, bad in ipairs{"a\255", "\xc3", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80"} do
      local ok, err = pcall(quiver.text, bad)
      assert.is_false(ok, H.hex(bad))
      assert.matches("^QV_EINVAL: quiver.text: the string is not valid UTF%-8", err)
      assert.matches("quiver.bytes", err)
    end
    local ok, err = pcall(quiver.text, "a\255")
    assert.matches("byte 2", err)
    ok, err = pcall(quiver.text, 5)
    assert.is_false(ok)
    assert.matches("expected a string, got number", err)
  end)

  it("round-trips a byte string as a string, and as quiver.bytes when exact", function()
    assert.are.equal("\0\1", quiver.decode(quiver.encode(quiver.bytes("\0\1"))))
    local s = "\255\254"
    assert.are.equal(enc(s), enc(quiver.decode(quiver.encode(s)))) -- not UTF-8: bytes again
    local utf = quiver.decode(quiver.encode(quiver.bytes("ab")))
    assert.are.equal("6261" .. "62", enc(utf)) -- valid UTF-8: text now
    assert.are.equal("426162", enc(quiver.bytes(utf))) -- wrap it again to keep bytes
    assert.are.equal("426162", enc(quiver.decode(quiver.encode(quiver.bytes("ab")), {exact = true})))
    -- the text and the bytes of one string, as keys of one map or set, are one Lua string: the
    -- bytes key stays a quiver.bytes object, and both entries stay
    local m = quiver.decode(H.unhex("a2" .. "416101" .. "616102"))
    assert.are.equal(2, m.a)
    local n = 0
    for k, v in pairs(m) do
      n = n + 1
      if k ~= "a" then
        assert.are.equal("bytes", quiver.kind(k))
        assert.are.equal(1, v)
      end
    end
    assert.are.equal(2, n)
    assert.are.equal("a2416101616102", enc(m))
    local set = quiver.decode(H.unhex("d90102" .. "82" .. "4161" .. "6161"))
    assert.is_true(set.a)
    assert.are.equal("d90102824161" .. "6161", enc(set))
    -- a typed array keeps its payload bytes in either mode
    local ta = quiver.decode(H.unhex("d840426162"))
    assert.are.equal("bytes", quiver.kind(ta.value))
    assert.are.equal("d840426162", enc(ta))
  end)

  it("gives a memo's byte string result as a string on a hit", function()
    local c = quiver.memory()
    local f = quiver.memo("values.rawbytes", function() return quiver.bytes("\0\1") end)
    quiver.with_cache(c, function()
      assert.are.equal("bytes", quiver.kind(f())) -- the body's own value
      assert.are.equal("\0\1", f())               -- from the cache
      assert.are.equal("\0\1", f:load())
    end)
    assert.are.equal("\0\1", c:load(f:digest()).result)
    c:close()
  end)
end)
