--- quiver: memoized function calls in one cache shared by every language.
--
--   local quiver = require "quiver"
--   local c = quiver.open("work/cache")            -- or quiver.memory()
--   local add = quiver.memo("shared.add", function(x, y) return x + y end, {version = "1"})
--   quiver.with_cache(c, function() print(add(1, 2)) end)
--
-- The C module quiver_core (SWIG, with the fast paths of bindings/lua.swg)
-- does the work; this file gives it the shape of a Lua library. Errors are
-- Lua errors whose message starts with the status name ("QV_EDECODE: ...").
-- The value mapping and the decoded shapes are described in lua/README.md.
local core = require "quiver_core"

local M = {}
local mt = core.mt

M.VERSION = core.qv_version()
M.null = core.null
M.ANY = core.ANY
M.encode = core.encode
M.digest = core.digest
M.call_digest = core.call_digest
M.bigint = core.bigint

-- ------------------------------------------------------------------ values

mt.bytes.__tostring = function(b) return b.data end
mt.bytes.__len = function(b) return #b.data end
mt.bytes.__eq = function(a, b) return a.data == b.data end
mt.bigint.__eq = function(a, b) return a.negative == b.negative and a.magnitude == b.magnitude end
mt.tag.__tostring = function(t) return string.format("quiver.tag(%d)", t.tag) end
mt.ndarray.__tostring = function(a) return string.format("quiver.ndarray(%s)", a.dtype) end
getmetatable(core.ANY).__tostring = function() return "quiver.ANY" end

--- The value encoded in data. A CBOR byte string becomes a Lua string, which
-- encodes again by its content (text when valid UTF-8); opts.exact keeps it
-- a quiver.bytes object instead, so that encode(decode(data, {exact = true}))
-- is data byte for byte.
function M.decode(data, opts)
  return core.decode(data, opts ~= nil and opts.exact)
end

--- s itself, checked to be text: a string encodes as CBOR text exactly when
-- it is valid UTF-8, so this says "text" and refuses anything else.
function M.text(s)
  if type(s) ~= "string" then error("quiver.text: expected a string, got " .. type(s), 2) end
  if not core.utf8_valid(s) then
    local _, at = utf8.len(s)
    error(string.format("QV_EINVAL: quiver.text: the string is not valid UTF-8%s; binary data goes in "
      .. "quiver.bytes(s)", at and (" (byte " .. at .. ")") or ""), 2)
  end
  return s
end

--- A string encoded as CBOR bytes even when it is valid UTF-8. It decodes
-- as a plain string (quiver.decode's exact option gives this object back).
function M.bytes(s)
  if type(s) ~= "string" then error("quiver.bytes: expected a string, got " .. type(s), 2) end
  return setmetatable({data = s}, mt.bytes)
end

--- Mark t (default: a new table) as a list: items 1..t.n (or #t).
function M.list(t)
  return setmetatable(t or {}, mt.list)
end

--- Mark t (default: a new table) as a map, even when it looks like a sequence.
function M.map(t)
  return setmetatable(t or {}, mt.map)
end

--- A set (CBOR tag 258) of the items of a sequence; as decoded: {[item] = true}.
function M.set(items)
  local s = {}
  for i = 1, (items and (items.n or #items) or 0) do
    local v = items[i]
    if v == nil then v = M.null end
    s[v] = true
  end
  return setmetatable(s, mt.set)
end

--- Any CBOR tag around a value.
function M.tag(number, value)
  return setmetatable({tag = number, value = value}, mt.tag)
end

--- Which quiver shape a value has: "list", "map", "bytes", "set", "tag",
-- "bigint", "ndarray", "memo", or nil for a plain Lua value.
function M.kind(v)
  local m = getmetatable(v)
  for name, t in pairs(mt) do
    if m == t then return name end
  end
  return nil
end

-- ------------------------------------------------------------------ caches

local Cache = {}
Cache.__index = Cache
Cache.__name = "quiver.cache"

local function handle(c)
  if type(c) ~= "table" or getmetatable(c) ~= Cache then error("quiver: expected a cache, got " .. type(c), 3) end
  local h = rawget(c, "_h")
  if not h then error("QV_ECLOSED: the cache is closed", 3) end
  return h
end

-- _path outlives the handle, so that a closed cache still says which it was.
local function new_cache(h)
  return setmetatable({_h = h, _path = core.qv_cache_path(h)}, Cache)
end

-- "lmdb <path>", "memory", "redis <url>" or "stack(<local>, <remote>)",
-- then the counts or "closed": how tostring shows a cache, and the cache a
-- memo would use now.
local function describe(path, entries, bytes)
  local kind = path == ":memory:" and "memory" or path:find("^stack%(") and path
    or path:find("://", 1, true) and ("redis " .. path) or ("lmdb " .. path)
  if not entries then return "quiver.cache(" .. kind .. ", closed)" end
  return string.format("quiver.cache(%s, %d entries, %d bytes)", kind, entries, bytes)
end

local durability = {safe = core.QV_DURABILITY_SAFE, durable = core.QV_DURABILITY_DURABLE,
                    fast = core.QV_DURABILITY_FAST}

local function check_count(fn, name, v, max)
  if v ~= nil and (math.type(v) ~= "integer" or v < 0 or (max and v > max)) then
    error(string.format("%s: %s must be a non-negative integer, got %s", fn, name, tostring(v)), 3)
  end
  return v
end

--- Open (creating it when missing) the LMDB cache in directory path, or the
-- remote tier a URL names: redis://[user:password@]host[:port][/db] or
-- unix:///path/to/redis.sock (then ?db=, prefix=, timeout_ms=). Any other
-- "scheme://" is refused: a URL is never taken as a directory.
-- opts: readonly, durability ("safe", "durable", "fast"), max_bytes,
-- map_size, inline_limit, timeout_ms (a remote tier's bound on connecting and
-- on each round trip; default the URL's, else 1000), secret (a string: sign
-- records and values with HMAC-SHA256 and read forged ones as misses;
-- default QUIVER_SECRET), allow_network_fs (open an LMDB cache on NFS, SMB,
-- Lustre, GPFS, CephFS..., refused otherwise: their locks do not hold between
-- machines). The path ":memory:" gives a private memory cache. A directory
-- this user cannot write opens read-only, with one warning.
function M.open(path, opts)
  if type(path) ~= "string" then error("quiver.open: expected a path or URL, got " .. type(path), 2) end
  opts = opts or {}
  local o = core.qv_cache_options()
  core.qv_cache_options_init(o, core.QV_CACHE_OPTIONS_VERSION)
  -- distinct bits: a sum is their union in every Lua
  o.flags = (opts.readonly and core.QV_CACHE_READONLY or 0)
    + (opts.allow_network_fs and core.QV_CACHE_ALLOW_NETWORK_FS or 0)
  if opts.durability then
    o.durability = durability[opts.durability] or error("quiver.open: unknown durability '"
      .. tostring(opts.durability) .. "' (safe, durable or fast)", 2)
  end
  if opts.max_bytes then o.max_bytes = opts.max_bytes end
  if opts.map_size then o.map_size = opts.map_size end
  if opts.inline_limit then o.inline_limit = opts.inline_limit end
  if check_count("quiver.open", "timeout_ms", opts.timeout_ms, 0xffffffff) then o.timeout_ms = opts.timeout_ms end
  if opts.secret ~= nil and (type(opts.secret) ~= "string" or opts.secret == "") then
    error("quiver.open: secret must be a non-empty string, got " .. type(opts.secret), 2)
  end
  return new_cache(core.cache_open(path, o, opts.secret))
end

--- A cache over two: reads try local, then remote, and copy remote hits into
-- local; stores go to local, then to remote. A memoized call through it runs
-- once across every process sharing the remote. When the remote is down it
-- goes on from local (one warning, on stderr) and retries later.
-- opts: async (write the remote from a bounded queue, flushed at close),
-- queue_limit (stores waiting before new ones are dropped; default 1024).
function M.stack(local_cache, remote, opts)
  opts = opts or {}
  local lh, rh = handle(local_cache), handle(remote)
  local o = core.qv_stack_options()
  o.version = core.QV_STACK_OPTIONS_VERSION
  if opts.async then o.flags = core.QV_STACK_ASYNC end
  if check_count("quiver.stack", "queue_limit", opts.queue_limit, 0xffffffff) then o.queue_limit = opts.queue_limit end
  local _, h = core.qv_cache_stack(lh, rh, o)
  local c = new_cache(h)
  c._tiers = {local_cache, remote}
  return c
end

--- A new cache in this process's memory.
function M.memory()
  local _, h = core.qv_cache_open_memory()
  return new_cache(h)
end

function Cache:path() return core.qv_cache_path(handle(self)) end

--- Whether a call (its digest, 32 hex characters) is stored.
function Cache:contains(hex)
  return (core.qv_cache_contains(handle(self), hex))
end

local function nonnull(v)
  if v == core.null then return nil end
  return v
end

-- The metadata key a Python memo writes the names of its positional
-- parameters under (FORMAT 6.6): read as rec.params, left out of rec.meta.
local PARAMS = "quiver.params"

-- The record of call hex as Lua sees it, from the core's map r.
local function record(hex, r)
  local meta, params = nonnull(r.meta) or M.map(), nil
  if meta[PARAMS] ~= nil then
    params = meta[PARAMS]
    local user = M.map()
    for k, v in pairs(meta) do
      if k ~= PARAMS then user[k] = v end
    end
    meta = user
  end
  return {
    digest = hex:lower(), name = r.name, version = nonnull(r.version), args = r.args, kwargs = r.kwargs,
    result = nonnull(r.result), meta = meta, metadata = meta, lang = r.lang, params = params,
    start_ns = r.start_ns, duration_ns = r.duration_ns, hits = r.hits or 0, last_hit_ns = r.last_hit_ns or 0,
  }
end

--- The stored call record: .name .version .args .kwargs .result .meta
-- .lang .start_ns .duration_ns .digest (and .metadata, Python's name for
-- .meta), .params (the parameter names of args, when a Python memo wrote
-- them; else nil), .hits and .last_hit_ns (hits are written in batches:
-- with a store, c:sync(), close; 0 from a remote tier); nil and a message
-- ("QV_NOTFOUND: ...") when the call is not stored, as io.open says a
-- missing file.
function Cache:load(hex)
  local found, r = core.qv_cache_load(handle(self), hex)
  if not found then return nil, "QV_NOTFOUND: the call " .. tostring(hex) .. " is not stored in " .. self._path end
  return record(hex, r)
end

-- Whether a stored value (decoded) passes one filter value: quiver.ANY
-- passes any value that is there (present: the argument or key exists, a
-- null included), a function is a predicate called with the stored value,
-- quiver.null asks for a stored nil, and any other value must be equal as a
-- decoded value is (so quiver.bytes("a") and "a" are the same filter, as a
-- stored byte string decodes to a string).
local function passes(stored, want, present)
  if want == core.ANY then return present end
  if stored == core.null then stored = nil end
  if type(want) == "function" then return not not want(stored) end
  if want == core.null then return stored == nil end
  return core.encode(stored) == core.encode(core.decode(core.encode(want)))
end

local function check_filter(t, who)
  for _, k in ipairs{"args", "kwargs", "meta"} do
    if t[k] ~= nil and type(t[k]) ~= "table" then
      error(string.format("%s: %s must be a table, got %s", who, k, type(t[k])), 3)
    end
  end
  for i in pairs(t.args or {}) do
    if type(i) ~= "string" and (math.type(i) ~= "integer" or i < 1) then
      error(who .. ": args are filtered by position or parameter name (args = {[1] = v} or {x = v}), got the key "
        .. tostring(i), 3)
    end
  end
  if t.where ~= nil and type(t.where) ~= "function" then error(who .. ": where must be a function", 3) end
end

local function matches(rec, t)
  for _, k in ipairs{"version", "lang", "result"} do
    if t[k] ~= nil and not passes(rec[k], t[k], true) then return false end
  end
  for i, v in pairs(t.args or {}) do
    -- a name is a position through the names the record holds, if any
    if type(i) == "string" then
      local pos
      for j, pname in ipairs(rec.params or {}) do
        if pname == i then pos = j break end
      end
      if not pos then return false end
      i = pos
    end
    if not passes(rec.args[i], v, i <= (rec.args.n or #rec.args)) then return false end
  end
  for k, v in pairs(t.kwargs or {}) do
    if not passes(rec.kwargs[k], v, rec.kwargs[k] ~= nil) then return false end
  end
  for k, v in pairs(t.meta or {}) do
    if not passes(rec.meta[k], v, rec.meta[k] ~= nil) then return false end
  end
  return t.where == nil or not not t.where(rec)
end

--- Iterate over stored call records that pass every filter given:
-- c:query{name=, version=, lang=, args={[position]=v, [parameter]=v},
-- kwargs={key=v}, meta={key=v}, result=v, where=function(rec)}; a
-- parameter name matches records that name their arguments (rec.params).
-- A filter value is a value (equal as decoded), a predicate
-- function(stored) -> boolean, quiver.ANY (any value, the argument or key
-- being there), or quiver.null (a stored nil); a field left out filters
-- nothing.
function Cache:query(t)
  t = t or {}
  check_filter(t, "query")
  if t.name ~= nil and type(t.name) ~= "string" then error("query: name must be a string", 2) end
  local _, iter = core.qv_cache_query(handle(self), t.name)
  local cache = self
  return function()
    if core.closed(iter) then return nil end
    while true do
      local more, hex = core.qv_iter_next(iter)
      if not more then
        core.close(iter) -- the snapshot goes as soon as it is read
        return nil
      end
      local rec = cache:load(hex)
      if rec and matches(rec, t) then return rec end
    end
  end
end

--- Counters and sizes, by name: hits, misses, entries, values, bytes, ...,
-- and for remote tiers and stacks remote_hits, remote_errors, dropped, forged.
function Cache:stats()
  local h, s = handle(self), {}
  for i = 0, core.QV_STAT_COUNT - 1 do
    local _, v = core.qv_cache_stat(h, i)
    s[core.qv_stat_name(i)] = v
  end
  return s
end

--- What every process counted, by function name: {name = {hits, misses,
--- stores, evictions, corrupt, saved_ns}}, kept in the cache (`quiver stats`
--- shows them). A handle writes its counts in batches; sync() writes them now.
function Cache:function_stats() return core.function_stats(handle(self)) end

--- Remove one call; false when it was not stored.
function Cache:evict(hex) return (core.qv_cache_evict(handle(self), hex)) end
--- Remove values no call uses; returns how many.
function Cache:gc() return select(2, core.qv_cache_gc(handle(self))) end
--- Check every entry (and remove bad ones with repair); returns how many were bad.
function Cache:verify(repair) return select(2, core.qv_cache_verify(handle(self), repair and 1 or 0)) end
function Cache:sync() core.qv_cache_sync(handle(self)) end

--- Release the handle; contexts still using the cache keep it open until
-- they end. Closing twice is allowed; any other use after close is an error.
function Cache:close()
  local h = rawget(self, "_h")
  if h then
    self._h = false
    core.close(h)
  end
end
Cache.__close = Cache.close
Cache.__gc = Cache.close

--- quiver.cache(lmdb <path>, <n> entries, <n> bytes), quiver.cache(memory, ...),
-- or quiver.cache(lmdb <path>, closed).
function Cache:__tostring()
  if not rawget(self, "_h") then return describe(self._path) end
  local s = self:stats()
  return describe(self._path, s.entries, s.bytes)
end

-- ---------------------------------------------------------------- contexts

-- The active cache and metadata belong to the running coroutine: each has a
-- stack of its own (kept by quiver_core), so one that yields inside
-- with_cache changes nothing for the others. A new coroutine starts from the
-- base context, the one outside every with_cache of this Lua state (what a
-- host program made active around it, else the default cache), never from
-- the context of the coroutine that created or resumed it: quiver.bind(fn)
-- carries a context into one.

-- Run fn(...) with frame pushed, popping it however fn ends.
local function run_pushed(frame, fn, ...)
  local r = table.pack(pcall(fn, ...))
  core.ctx_pop(frame)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- Run fn(...) with c as the active cache (memoized calls use it).
function M.with_cache(c, fn, ...)
  return run_pushed(core.ctx_push(handle(c), nil), fn, ...)
end

local function check_meta(t, who)
  if type(t) ~= "table" then error(who .. ": expected a table, got " .. type(t), 3) end
end

--- Run fn(...) with t's keys merged over the active metadata, which is
-- recorded with every call stored meanwhile.
function M.with_meta(t, fn, ...)
  check_meta(t, "quiver.with_meta")
  return run_pushed(core.ctx_push(nil, t), fn, ...)
end

-- A scope: a context pushed on the coroutine that made it, until its close
-- (by a to-be-closed variable, or called).
local Scope = {}
Scope.__index = Scope
Scope.__name = "quiver.scope"

--- Pop the scope's context (and any left pushed above it); closing again
-- does nothing.
function Scope:close()
  local frame = self._frame
  if frame then
    self._frame = nil
    core.ctx_pop(frame, self._co)
  end
end
Scope.__close = Scope.close

local function new_scope(frame)
  return setmetatable({_frame = frame, _co = coroutine.running()}, Scope)
end

--- c active until the scope closes: local scope <close> = quiver.cache_scope(c)
function M.cache_scope(c)
  return new_scope(core.ctx_push(handle(c), nil))
end

--- t merged over the active metadata until the scope closes:
-- local scope <close> = quiver.meta_scope{project = "p1"}
function M.meta_scope(t)
  check_meta(t, "quiver.meta_scope")
  return new_scope(core.ctx_push(nil, t))
end

--- fn bound to the active cache and metadata: calling the result runs fn
-- under them, wherever and whenever it is called (in any coroutine).
function M.bind(fn)
  local captured = core.ctx_capture()
  return function(...)
    return run_pushed(core.ctx_enter(captured), fn, ...)
  end
end

--- Contexts pushed in the running coroutine (0 outside every
-- with_cache/with_meta/scope).
M.depth = core.ctx_depth

-- ------------------------------------------------------------------- memos

local Memo = {}

--- The call digest of m(...), 32 hex characters.
Memo.digest = core.memo_digest
--- Whether the active cache holds m(...).
Memo.contains = core.memo_contains

--- The stored result of m(...) without running anything; on a miss nil and
-- a message ("QV_NOTFOUND: ..."), as Cache:load. A stored nil comes back
-- as nil alone: the message tells a miss.
function Memo:load(...)
  local found, v = core.memo_load(self, ...)
  if not found then return nil, "QV_NOTFOUND: " .. self.name .. ": no stored result for these arguments" end
  return v
end

--- Run m(...) even when stored, store the new result over the old one and
-- return it. The memoized calls made while it runs rerun too (each once).
Memo.rerun = core.memo_rerun
--- Remove m(...) from the active cache; whether it was stored.
Memo.evict = core.memo_evict
--- Remove every call stored under m's name (any version) from the active
-- cache; returns how many.
Memo.clear = core.memo_clear

--- c:query over the active cache, of this memo's name, with the same
-- filters; args may also name Lua parameters (args = {x = 1}), matched to
-- their positions. The records are read when it is called.
function Memo:query(t)
  local q = {}
  for k, v in pairs(t or {}) do q[k] = v end
  q.name = self.name
  if type(q.args) == "table" then
    local args, fn = {}, self.fn
    for k, v in pairs(q.args) do
      if type(k) == "string" then
        local pos
        for i = 1, math.huge do
          local pname = debug.getlocal(fn, i)
          if not pname then break end
          if pname == k then pos = i break end
        end
        if not pos then error(string.format("query: %s has no parameter named '%s'", self.name, k), 2) end
        -- the stored arguments leave the ignored positions out
        local skip = select(6, core.memo_info(self))
        if pos <= 64 and skip >> (pos - 1) & 1 == 1 then
          error(string.format("query: %s ignores its parameter '%s': it is not stored", self.name, k), 2)
        end
        local before = pos > 64 and skip or skip & ((1 << (pos - 1)) - 1)
        while before ~= 0 do
          pos, before = pos - 1, before & (before - 1)
        end
        k = pos
      end
      args[k] = v
    end
    q.args = args
  end
  check_filter(q, "query")
  local entries, i = core.memo_records(self), 0
  return function()
    while true do
      i = i + 1
      local e = entries[i]
      if not e then return nil end
      local rec = record(e[1], e[2])
      if matches(rec, q) then return rec end
    end
  end
end

--- Calls this memo answered from the cache, and calls that ran the body.
function Memo:stats()
  local _, _, _, hits, misses = core.memo_info(self)
  return {hits = hits, misses = misses}
end

mt.memo.__index = function(m, k)
  if k == "name" then return (core.memo_info(m)) end
  if k == "version" then return (select(2, core.memo_info(m))) end
  if k == "fn" then return (select(3, core.memo_info(m))) end
  return Memo[k]
end
--- quiver.memo(<name>, version <v>, cache=<the cache a call would use now>).
mt.memo.__tostring = function(m)
  local name, version = core.memo_info(m)
  -- a default cache that cannot be opened is said here, not raised
  local ok, path, entries, bytes = pcall(core.ctx_cache)
  return string.format("quiver.memo(%s%s, cache=%s)", name, version and (", version " .. version) or "",
    ok and describe(path, entries, bytes) or ("unavailable: " .. tostring(path)))
end

-- Argument positions to leave out of the key, as a bitmask: opts.ignore
-- holds positions or parameter names (found with debug.getlocal).
local function skip_mask(fn, ignore)
  local mask = 0
  for _, what in ipairs(ignore or {}) do
    local pos = math.type(what) == "integer" and what or nil
    if not pos then
      for i = 1, math.huge do
        local pname = debug.getlocal(fn, i)
        if not pname then break end
        if pname == what then pos = i break end
      end
    end
    if not pos then error("quiver.memo: no parameter named '" .. tostring(what) .. "' to ignore", 3) end
    if pos < 1 or pos > 64 then error("quiver.memo: can ignore positions 1..64 only", 3) end
    mask = mask | (1 << (pos - 1))
  end
  return mask
end

--- A memoized fn: calls with equal arguments (by canonical encoding) are
-- answered from the active cache. opts: version (text), ignore (parameter
-- names or positions left out of the key), dedup (default true: when several
-- threads or processes miss the same call at once, one runs it and the
-- others wait for its result; false: each runs it), wait_timeout (the
-- longest such wait in seconds, then the waiter runs it; default 10
-- minutes). Lua passes positional arguments and an empty kwargs map, so
-- add(1, 2) shares an entry with Python's add(1, 2) of the same name and
-- version.
function M.memo(name, fn, opts)
  if type(name) ~= "string" then error("quiver.memo: expected a name, got " .. type(name), 2) end
  if type(fn) ~= "function" then error("quiver.memo: expected a function, got " .. type(fn), 2) end
  opts = opts or {}
  if opts.version ~= nil and type(opts.version) ~= "string" then
    error("quiver.memo: version must be a string", 2)
  end
  if opts.wait_timeout ~= nil and type(opts.wait_timeout) ~= "number" then
    error("quiver.memo: wait_timeout must be a number of seconds", 2)
  end
  return core.memo_new(name, opts.version, fn, skip_mask(fn, opts.ignore), opts.dedup ~= false, opts.wait_timeout)
end

-- ------------------------------------------------------------- C functions

local CFunction = {}
CFunction.__index = CFunction
CFunction.__name = "quiver.cfunction"

--- A C function memoized under name and version through libffi: symbol
-- from the shared library at path library (nil: the program and the
-- libraries it has loaded, libc among them), described by a signature such
-- as "i64(i64,i64)" (quiver.h's qv_fn_new_c). Callable from Lua, and
-- runnable on the pool, since it needs no Lua state. The library is never
-- unloaded.
function M.cfunction(name, version, library, symbol, signature)
  if type(signature) ~= "string" then error("quiver.cfunction: expected a signature such as \"f64(f64)\"", 2) end
  local _, fn = core.qv_fn_new_c(name, version, core.c_symbol(library, symbol), signature)
  return setmetatable({_fn = fn, name = name, version = version, signature = signature}, CFunction)
end

function CFunction:__call(...)
  local _, r = core.qv_fn_call(self._fn, table.pack(...))
  return r
end

function CFunction:digest(...)
  return (select(2, core.qv_fn_digest(self._fn, table.pack(...), nil)))
end

--- Release the function now (the collector would later); calling it after
-- is the error QV_ECLOSED.
function CFunction:close() core.close(self._fn) end

function CFunction:stats()
  local s = {}
  for k, i in pairs{hits = core.QV_FN_STAT_HITS, misses = core.QV_FN_STAT_MISSES,
                    saved_ns = core.QV_FN_STAT_SAVED_NS} do
    s[k] = select(2, core.qv_fn_stat(self._fn, i))
  end
  return s
end

-- ----------------------------------------------------------------- futures

-- Futures complete on pool threads, where no Lua code may run (this state
-- has one thread). Their callbacks are queued in C and delivered here, on
-- the Lua thread, by quiver.poll() and fut:wait().
local Future = {}
Future.__index = Future
Future.__name = "quiver.future"

local callbacks, next_id, ready = {}, 0, {}
local state_names = {[core.QV_FUTURE_PENDING] = "pending", [core.QV_FUTURE_DONE] = "done",
                     [core.QV_FUTURE_FAILED] = "failed", [core.QV_FUTURE_CANCELLED] = "cancelled"}

--- Run the on_done callbacks of futures completed so far; returns how many
-- ran. A callback's error propagates; the others stay queued for next time.
local polling = false

local function deliver()
  for _, id in ipairs(core.completed()) do ready[#ready + 1] = id end
  local n = 0
  while #ready > 0 do
    local id = table.remove(ready, 1)
    local entry = callbacks[id]
    callbacks[id] = nil
    n = n + 1
    entry.fn(entry.future)
  end
  return n
end

function M.poll()
  -- a callback that waits on a future polls too: the outer loop delivers
  if polling then return 0 end
  polling = true
  local ok, n = pcall(deliver)
  polling = false
  if not ok then error(n, 0) end
  return n
end

--- "pending", "done", "failed" or "cancelled".
function Future:state() return state_names[core.qv_future_state(self._h)] end
function Future:done() return core.qv_future_state(self._h) ~= core.QV_FUTURE_PENDING end

--- Cancel while pending: true, or false when it had already completed.
function Future:cancel()
  local ok, err = pcall(core.qv_future_cancel, self._h)
  if ok then return true end
  if err:match("^QV_EMISUSE") then return false end
  error(err, 2)
end

--- Release the future now (the collector would later); any use after is
-- the error QV_ECLOSED. Callbacks registered with on_done still run.
function Future:close() core.close(self._h) end

--- Wait (at most timeout seconds; nil: forever) and return the result.
-- Errors: QV_ETIMEOUT when it is not done in time; the failure's status when
-- the call failed; QV_ECANCELLED when cancelled. Delivers callbacks first.
function Future:wait(timeout)
  local ns = timeout and math.floor(timeout * 1e9) or -1
  local ok, err = pcall(core.qv_future_wait, self._h, ns)
  M.poll()
  if not ok then error(err, 0) end
  return core.future_result(self._h)
end

--- Call fn(fut) on the Lua thread once fut completes: from quiver.poll() or
-- a wait, or at once when it already has.
function Future:on_done(fn)
  if type(fn) ~= "function" then error("on_done: expected a function, got " .. type(fn), 2) end
  next_id = next_id + 1
  callbacks[next_id] = {future = self, fn = fn}
  core.future_notify(self._h, next_id)
  if self:done() then M.poll() end
  return self
end

local function new_future(h) return setmetatable({_h = h}, Future) end

local Pool = {}
Pool.__index = Pool
Pool.__name = "quiver.pool"

--- The process-wide thread pool (resized to workers when given; 0: one per CPU).
-- Only C functions run on it: Lua functions cannot (one Lua state, one thread).
function M.pool(workers)
  local _, h = core.qv_pool_shared(workers or 0, 0)
  return setmetatable({_h = h}, Pool)
end

--- Run cf(...) on a worker, memoized into the submitter's active cache; a
-- hit is answered at once with a completed future and never reaches the pool.
function Pool:submit(cf, ...)
  if getmetatable(cf) ~= CFunction then error("submit: expected a quiver.cfunction", 2) end
  return new_future(core.pool_submit(self._h, cf._fn, table.pack(...)))
end

--- Drop this reference to the shared pool (queued work still runs); any
-- use after is the error QV_ECLOSED.
function Pool:close() core.close(self._h) end

function Pool:stats()
  local s = {}
  for k, i in pairs{workers = core.QV_POOL_STAT_WORKERS, target = core.QV_POOL_STAT_TARGET,
                    queued = core.QV_POOL_STAT_QUEUED, completed = core.QV_POOL_STAT_COMPLETED,
                    started = core.QV_POOL_STAT_STARTED} do
    s[k] = select(2, core.qv_pool_stat(self._h, i))
  end
  return s
end

--- quiver.submit(cf, ...): Pool:submit on the shared pool.
function M.submit(cf, ...)
  return M.pool():submit(cf, ...)
end


--- Shared counters and dicts: named entries beside a cache that every process
-- and language opening it sees (Python's SafeCounter and SafeDict under the
-- same name, C's qv_counter_* and qv_dict_*). Keys are any value, keyed by
-- quiver.encode (so "a" here is Python's "a"); each change is one LMDB write
-- transaction, atomic across processes. A memory cache keeps them in this
-- process; a remote tier or a stack refuses them.
local Counter = {}
Counter.__index = Counter
Counter.__name = "quiver.counter"
local Dict = {}
Dict.__index = Dict
Dict.__name = "quiver.dict"

local function shared(kind, c, name)
  handle(c)
  if type(name) ~= "string" or #name == 0 or #name > 255 then
    error("quiver." .. kind .. ": name must be a string of 1 to 255 bytes, got " .. tostring(name), 3)
  end
  return {_c = c, _name = name}
end

--- quiver.counter(cache, name): c:add(key, n) adds n (default 1) and returns
-- the new count; c:get(key) the count (0 when never added to); c:items(),
-- c:clear().
function M.counter(c, name) return setmetatable(shared("counter", c, name), Counter) end

function Counter:add(key, n)
  if n == nil then n = 1 end
  if math.type(n) ~= "integer" then error("counter:add: n must be an integer, got " .. tostring(n), 2) end
  return (select(2, core.qv_counter_add(handle(self._c), self._name, M.encode(key), n)))
end

function Counter:get(key)
  return (select(2, core.qv_counter_get(handle(self._c), self._name, M.encode(key))))
end

--- Remove every key; returns how many there were.
function Counter:clear() return (select(2, core.qv_counter_clear(handle(self._c), self._name))) end

-- {key, value} pairs, a snapshot, in the order of the keys' encodings.
local function items(fn, self, value)
  local out = {}
  for i, pair in ipairs(select(2, fn(handle(self._c), self._name))) do
    out[i] = {M.decode(pair[1]), value(pair[2])}
  end
  return out
end

--- Every key with its count: a list of {key, count} pairs.
function Counter:items() return items(core.qv_counter_items, self, function(n) return n end) end

--- quiver.dict(cache, name): d:set(key, value), d:get(key) (nil when
-- absent), d:del(key) (false when absent), d:items(), d:clear().
function M.dict(c, name) return setmetatable(shared("dict", c, name), Dict) end

function Dict:set(key, value)
  core.qv_dict_set(handle(self._c), self._name, M.encode(key), M.encode(value))
end

function Dict:get(key)
  local found, data = core.qv_dict_get(handle(self._c), self._name, M.encode(key))
  if not found then return nil end
  return M.decode(data)
end

function Dict:del(key) return (core.qv_dict_del(handle(self._c), self._name, M.encode(key))) end

function Dict:clear() return (select(2, core.qv_dict_clear(handle(self._c), self._name))) end

--- Every key with its value: a list of {key, value} pairs.
function Dict:items() return items(core.qv_dict_items, self, M.decode) end

return M
