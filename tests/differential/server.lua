-- The Lua side of the differential tests (test_differential.py): builds each
-- value as the native Lua value lua/README.md maps to it, from the
-- description server_c.c documents, and answers in the same protocol:
--   xNAMEHEX xVERSIONHEX|- DESCRIPTION xPYTHON-ENCODING-HEX
-- gives
--   ENCODING-HEX VALUE-DIGEST CALL-DIGEST MEMO-DIGEST eq|ne REENCODING-HEX   (or ERR message)
-- with batches ended by an empty line, answered once read.
local quiver = require "quiver"
local core = require "quiver_core"

local HEX, UNHEX = {}, {}
for i = 0, 255 do
  local c, h = string.char(i), string.format("%02x", i)
  HEX[c], UNHEX[h] = h, c
end
local function hex(s) return (s:gsub(".", HEX)) end
local function unhex(h) return (h:gsub("%x%x", UNHEX)) end

local null = quiver.null
local function nonnil(v) if v == nil then return null end return v end

-- The description at s[pos]: the value (nil for null) and the next position.
local parse
-- A decimal number; one beyond 2^63 - 1 (a tag) wraps, as Lua's integers
-- and hex literals do.
local function number(s, pos)
  local digits, nxt = s:match("^(%d+);()", pos)
  if not digits then error("description: a number without its ';' at " .. pos) end
  local n = 0
  for i = 1, #digits do n = n * 10 + (digits:byte(i) - 48) end
  return n, nxt
end

local function items(s, pos, n)
  local t = {n = n}
  for i = 1, n do t[i], pos = parse(s, pos) end
  return t, pos
end

function parse(s, pos)
  local c = s:sub(pos, pos)
  pos = pos + 1
  if c == "N" then return nil, pos
  elseif c == "T" then return true, pos
  elseif c == "F" then return false, pos
  elseif c == "i" then
    local dec, nxt = s:match("^(%-?%d+);()", pos)
    local n = tonumber(dec)
    -- Lua's own integers where they reach; beyond, quiver's bigint object.
    if math.type(n) ~= "integer" then n = quiver.bigint(dec) end
    return n, nxt
  elseif c == "d" then
    return (string.unpack(">d", unhex(s:sub(pos, pos + 15)))), pos + 16
  elseif c == "s" or c == "b" then
    local h, nxt = s:match("^(%x*);()", pos)
    local raw = unhex(h)
    if c == "b" then return quiver.bytes(raw), nxt end
    return quiver.text(raw), nxt
  elseif c == "l" or c == "U" then
    local n, t
    n, pos = number(s, pos)
    t, pos = items(s, pos, n)
    return setmetatable(t, c == "l" and core.mt.list or core.mt.tuple), pos
  elseif c == "S" then
    local n, t
    n, pos = number(s, pos)
    t, pos = items(s, pos, n)
    return quiver.set(t), pos
  elseif c == "m" then
    local n, k, v
    n, pos = number(s, pos)
    local m = quiver.map()
    for _ = 1, n do
      k, pos = parse(s, pos)
      v, pos = parse(s, pos)
      m[nonnil(k)] = nonnil(v)
    end
    return m, pos
  elseif c == "g" then
    local n, v
    n, pos = number(s, pos)
    v, pos = parse(s, pos)
    return quiver.tag(n, v), pos
  elseif c == "A" then
    local tag, ndim
    tag, pos = number(s, pos)
    ndim, pos = number(s, pos)
    local shape = quiver.list()
    for i = 1, ndim do shape[i], pos = number(s, pos) end
    local h, nxt = s:match("^(%x*);()", pos)
    return setmetatable({shape = shape, tag = tag, data = unhex(h)}, core.mt.ndarray), nxt
  end
  error("description: unknown token '" .. c .. "' at " .. (pos - 1))
end

-- Equality by content, the way a Lua program would compare what it built
-- with what it decoded: any NaN equals any NaN (the encoding keeps none of
-- a NaN's payload), -0.0 differs from 0.0, 1 from 1.0.
local eq
local function list_len(t) return t.n or #t end

-- Every entry of a has an equal one in b (keys that are tables match by
-- content, not identity).
local function same_entries(a, b, with_values)
  local na, nb = 0, 0
  for _ in pairs(b) do nb = nb + 1 end
  for ka, va in pairs(a) do
    na = na + 1
    local found = false
    for kb, vb in pairs(b) do
      if eq(ka, kb) and (not with_values or eq(va, vb)) then found = true break end
    end
    if not found then return false end
  end
  return na == nb
end

function eq(a, b)
  if a == null then a = nil end
  if b == null then b = nil end
  if a == nil or b == nil then return a == b end
  local ta = type(a)
  if ta ~= type(b) then return false end
  if ta == "number" then
    if math.type(a) ~= math.type(b) then return false end
    if a ~= a then return b ~= b end
    if a == 0 and math.type(a) == "float" then return 1 / a == 1 / b end
    return a == b
  end
  if ta ~= "table" then return a == b end
  local kind = quiver.kind(a)
  if kind ~= quiver.kind(b) then return false end
  if kind == "bytes" then return a.data == b.data
  elseif kind == "bigint" then return a.negative == b.negative and a.magnitude == b.magnitude
  elseif kind == "list" or kind == "tuple" then
    local n = list_len(a)
    if n ~= list_len(b) then return false end
    for i = 1, n do if not eq(a[i], b[i]) then return false end end
    return true
  elseif kind == "map" then return same_entries(a, b, true)
  elseif kind == "set" then return same_entries(a, b, false)
  elseif kind == "tag" then return a.tag == b.tag and eq(a.value, b.value)
  elseif kind == "ndarray" then
    if a.tag ~= b.tag or a.data ~= b.data or list_len(a.shape) ~= list_len(b.shape) then return false end
    for i = 1, list_len(a.shape) do if a.shape[i] ~= b.shape[i] then return false end end
    return true
  end
  return false
end

-- A memo of each name and version, whose m:digest(v) is the key of the
-- call m(v): the path a Lua program's calls take.
local memos = {}
local function memo(name, version)
  local key = name .. "\0" .. (version and "v" .. version or "-")
  local m = memos[key]
  if not m then
    m = quiver.memo(name, function(x) return x end, {version = version})
    memos[key] = m
  end
  return m
end

local function answer(line)
  local namehex, verhex, desc, theirs = line:match("^x(%x*) (%S+) (%S+) x(%x*)$")
  if not namehex then return "ERR a line needs 4 fields" end
  local name, version = unhex(namehex), verhex ~= "-" and unhex(verhex:sub(2)) or nil
  local ok, v, pos = pcall(parse, desc, 1)
  if not ok then return "ERR " .. tostring(v) end
  if pos ~= #desc + 1 then return "ERR description: trailing characters" end
  local ok2, out = pcall(function()
    local enc = quiver.encode(v)
    -- A value just under the nesting limit encodes, and its call, two
    -- levels deeper, is refused.
    local cok, cd = pcall(quiver.call_digest, name, version, quiver.list{v, n = 1}, quiver.map{kw = nonnil(v)})
    local mok, md = pcall(memo(name, version).digest, memo(name, version), v)
    local parts = {hex(enc), quiver.digest(v), cok and cd or "refused", mok and md or "refused"}
    local dok, back = pcall(quiver.decode, unhex(theirs), {exact = true})
    if not dok then
      parts[5], parts[6] = "decode-error", hex(tostring(back))
    else
      parts[5] = eq(v, back) and "eq" or "ne"
      local rok, re = pcall(quiver.encode, back)
      parts[6] = rok and hex(re) or "-"
    end
    return table.concat(parts, " ")
  end)
  if not ok2 then return "ERR " .. tostring(out) end
  return out
end

local out = {}
for line in io.lines() do
  if line == "" then
    out[#out + 1] = ""
    io.write(table.concat(out, "\n"))
    io.flush()
    out = {}
  else
    out[#out + 1] = (answer(line):gsub("\n", " "))
  end
end
