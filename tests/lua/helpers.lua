-- Shared by the specs (busted --helper): the vectors, a small JSON reader,
-- scratch directories and child lua5.4 processes.
local H = {}
_G.H = H

H.quiver = require "quiver"
H.lua = os.getenv("QV_LUA") or "lua5.4"
H.vectors = os.getenv("QV_VECTORS") or error("QV_VECTORS is not set: run the specs through ctest")

function H.unhex(s)
  return (s:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

function H.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function H.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Lines of a TSV file as lists of fields.
function H.tsv(name)
  local rows = {}
  for line in H.read(H.vectors .. "/" .. name):gmatch("[^\n]+") do
    local row = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do row[#row + 1] = field end
    rows[#rows + 1] = row
  end
  return rows
end

-- ------------------------------------------------------------ JSON reader

-- Enough JSON for the vectors: objects, arrays, strings (with \u escapes and
-- surrogate pairs), numbers, true, false, null (H.json_null).
H.json_null = setmetatable({}, {__name = "json.null"})

function H.json(text)
  local pos = 1
  local value

  local function fail(what)
    error(string.format("JSON: %s at byte %d", what, pos), 0)
  end

  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or #text + 1
  end

  local function utf8char(cp)
    return utf8.char(cp)
  end

  local escapes = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}

  local function string_()
    pos = pos + 1
    local out = {}
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then
        pos = pos + 1
        return table.concat(out)
      elseif c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        if e == "u" then
          local cp = tonumber(text:sub(pos + 2, pos + 5), 16) or fail("bad \\u escape")
          pos = pos + 6
          if cp >= 0xd800 and cp <= 0xdbff and text:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(text:sub(pos + 2, pos + 5), 16)
            if lo and lo >= 0xdc00 and lo <= 0xdfff then
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00)
              pos = pos + 6
            end
          end
          out[#out + 1] = utf8char(cp)
        else
          out[#out + 1] = escapes[e] or fail("bad escape")
          pos = pos + 2
        end
      else
        local stop = text:find('["\\]', pos) or #text + 1
        out[#out + 1] = text:sub(pos, stop - 1)
        pos = stop
      end
    end
  end

  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = string_()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return string_()
    elseif text:sub(pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif text:sub(pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif text:sub(pos, pos + 3) == "null" then
      pos = pos + 4
      return H.json_null
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos) or fail("unexpected character")
      pos = pos + #num
      return tonumber(num)
    end
  end

  local v = value()
  skip()
  if pos <= #text then fail("trailing characters") end
  return v
end

-- ---------------------------------------------------- typed vector values

local floats = {nan = 0 / 0, inf = math.huge, ["-inf"] = -math.huge}

-- The native Lua value for a typed value of values.json / calls.json.
function H.native(t)
  local q = H.quiver
  local kind, v = next(t)
  if kind == "null" then return nil
  elseif kind == "bool" then return v
  elseif kind == "int" then return q.bigint(v)
  elseif kind == "float" then
    local x = floats[v] or tonumber(v)
    if math.type(x) == "integer" then x = x + 0.0 end -- ("-0.0" + 0.0 would be 0.0)
    return x
  elseif kind == "text" then return v
  elseif kind == "bytes" then return q.bytes(H.unhex(v))
  elseif kind == "list" then
    local l = {n = #v}
    for i, item in ipairs(v) do l[i] = H.native(item) end
    return q.list(l)
  elseif kind == "map" then
    local m = {}
    for _, pair in ipairs(v) do
      local key, val = H.native(pair[1]), H.native(pair[2])
      if key == nil then key = q.null end
      if val == nil then val = q.null end
      m[key] = val
    end
    return q.map(m)
  elseif kind == "tag" then
    local number, content = v[1], v[2]
    if number == 258 then
      local items = H.native(content)
      return q.set(items)
    end
    return q.tag(number, H.native(content))
  end
  error("unknown typed value " .. tostring(kind))
end

function H.load_json(name)
  return H.json(H.read(H.vectors .. "/" .. name))
end

-- -------------------------------------------------------------- processes

local tmp_root = os.getenv("QV_TEST_TMP") or "/tmp/quiver-lua-tests"
local counter = 0

-- A fresh, empty directory for one test (specs run in parallel under ctest:
-- the random part keeps their directories apart).
function H.tmpdir(tag)
  counter = counter + 1
  local dir = string.format("%s/%s-%d-%d-%d", tmp_root, tag or "t", os.time(), counter, math.random(1, 1 << 30))
  os.execute("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "'")
  return dir
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Run a Lua chunk in a child lua5.4 process (the same LUA_PATH/LUA_CPATH),
-- with env a table of environment variables; returns its stdout and whether
-- it exited with 0.
function H.spawn(code, env)
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  local p = assert(io.popen(prefix .. shell_quote(H.lua) .. " -e " .. shell_quote(code) .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

-- Start a child without waiting; returns a handle whose :wait() gives
-- (stdout, ok). Children run at the same time as each other.
function H.start(code, env)
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  local p = assert(io.popen(prefix .. shell_quote(H.lua) .. " -e " .. shell_quote(code) .. " 2>&1"))
  return {wait = function()
    local out = p:read("a")
    return out, p:close()
  end}
end

-- The fixture library's C functions (tests/lua/fixture.c), memoized.
H.fixture = os.getenv("QV_LUA_FIXTURE") or error("QV_LUA_FIXTURE is not set: run the specs through ctest")
local signatures = {add = "i64(i64,i64)", slow_square = "i64(i64,i64)", scale = "f64(f64,f64)"}
function H.cfunction(name, version, cname)
  return H.quiver.cfunction(name, version, H.fixture, "qvt_" .. cname, signatures[cname])
end

-- ------------------------------------------------------------ redis-server

-- A real redis-server for the remote tier's specs, on a free loopback port
-- (and a unix socket in its own directory), with no persistence: H.redis()
-- starts one and waits until it answers PING; :stop() kills it, :start()
-- starts it again on the same port. Call :stop() from finally() so that a
-- failing spec stops it too; `timeout` ends it anyway after 290 s (ctest's
-- limit is 300), should busted itself die.
local Redis = {}
Redis.__index = Redis

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  return out, p:close()
end

function Redis:cli(...)
  local words = {}
  for i, w in ipairs({...}) do words[i] = shell_quote(tostring(w)) end
  return (sh("redis-cli -p " .. self.port .. " " .. table.concat(words, " ") .. " 2>/dev/null"):gsub("%s+$", ""))
end

-- Through the unix socket, which is this server's alone (another test's may
-- hold a port this one tried).
function Redis:ping()
  return (sh("redis-cli -s " .. shell_quote(self.socket) .. " ping 2>/dev/null"):gsub("%s+$", "")) == "PONG"
end

function Redis:start()
  for _ = 1, 10 do
    local port = self.port or math.random(20000, 60000)
    local pid = sh(string.format("timeout 290 redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no "
      .. "--unixsocket %s --unixsocketperm 700 --dir %s --logfile %s/redis.log >/dev/null 2>&1 & echo $!",
      port, shell_quote(self.socket), shell_quote(self.dir), shell_quote(self.dir)))
    self.pid = tonumber(pid)
    self.port = port
    for _ = 1, 500 do
      if self:ping() then return self end
      sh("sleep 0.02")
    end
    self:stop()
    self.port = nil
  end
  error("redis-server did not start")
end

function Redis:stop()
  if self.pid then
    -- (timeout passes the signal on; the exited process may stay a zombie,
    -- so the wait is for the server to stop answering, not for the pid)
    sh("kill " .. self.pid .. " 2>/dev/null")
    self.pid = nil
    for _ = 1, 250 do
      if not self:ping() then return end
      sh("sleep 0.02")
    end
    error("redis-server on port " .. self.port .. " did not stop")
  end
end

function H.redis()
  local dir = H.tmpdir("redis")
  local r = setmetatable({dir = dir, socket = dir .. "/redis.sock"}, Redis)
  r:start()
  r.url = "redis://127.0.0.1:" .. r.port .. "/0"
  r.unix_url = "unix://" .. r.socket
  return r
end

return H
