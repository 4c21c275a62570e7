-- The leak soak in Lua (leaks.sh runs it; leak.py is its twin and says why
-- anonymous memory is the measure).
--
--   lua5.4 leak.lua DIR CALLS
--
-- CALLS memoized calls on an LMDB cache in DIR: misses that store, hits on a
-- hot set, futures of a C function on the thread pool, with_cache and
-- with_meta entered and left around every batch, and a second handle opened
-- and closed every 1000 calls. Fails when anonymous resident memory grew by
-- more than 10% after the warm-up (a fifth of the calls), descriptors grew at
-- all, or reader slots grew past the 16 an environment pools.
local quiver = require "quiver"
local sys = require "soak_sys"

local HOT, HANDLE_EVERY, GROWTH, SHARDS = 1000, 1000, 0.10, 16

local path, calls = arg[1], math.tointeger(tonumber(arg[2] or ""))
if not path or not calls then
  io.stderr:write("usage: leak.lua DIR CALLS\n")
  os.exit(2)
end

local record = quiver.memo("soak.leak", function(n, kind)
  return {n = n, kind = kind, pad = ("x"):rep(n % 400)}
end, {version = "1"})
local labs = quiver.cfunction("soak.leak.labs", "1", nil, "labs", "i64(i64)")

local function probe()
  collectgarbage("collect")
  collectgarbage("collect")
  sys.trim()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident, shared = f:read("a"):match("(%d+) (%d+) (%d+)")
  f:close()
  local fds = sys.fd_count()
  local p = assert(io.popen(("%q %d %q"):format(os.getenv("QV_SOAK_READERS"), sys.getpid(), path)))
  local readers = math.tointeger(tonumber((p:read("l") or ""):match("^%d+")))
  assert(p:close() and readers, "soak_readers failed")
  local page = sys.page_size()
  return {rss = resident * page, anon = (resident - shared) * page, fds = fds, readers = readers}
end

local rng_state = 15
local function random() -- a fixed sequence, the same on every run
  rng_state = (rng_state * 6364136223846793005 + 1442695040888963407)
  return ((rng_state >> 11) & ((1 << 53) - 1)) / (1 << 53)
end

local function calls_of(c, first, last)
  for i = first, last - 1 do
    local r = random()
    if r < 0.15 then
      record(i, "distinct")
    elseif r < 0.20 then
      local fut = quiver.submit(labs, -(i % 5000))
      assert(fut:wait() == i % 5000)
      fut:close()
    else
      record(math.floor(random() * HOT), "hot")
    end
    if i % HANDLE_EVERY == HANDLE_EVERY - 1 then
      local other = quiver.open(path, {durability = "fast"})
      quiver.with_cache(other, record, math.floor(random() * HOT), "hot")
      other:close()
    end
  end
end

local function run(c, first, last)
  for batch = first, last - 1, 100 do
    local stop = math.min(batch + 100, last)
    quiver.with_cache(c, function()
      if batch // 100 % 7 == 0 then
        quiver.with_meta({batch = batch // 100 % 10}, calls_of, c, batch, stop)
      else
        calls_of(c, batch, stop)
      end
    end)
  end
end

local function mib(n) return ("%.1f"):format(n / 2 ^ 20) end

local c = quiver.open(path, {durability = "fast"})
local warm = calls // 5
local t0 = sys.now()
run(c, 0, warm)
local before = probe()
run(c, warm, calls)
local after = probe()
local s = c:stats()
c:close()
local growth = after.anon / before.anon - 1
local bad = {}
if growth > GROWTH then
  bad[#bad + 1] = ("anonymous memory grew %+.1f%% after the warm-up (limit %+.0f%%)"):format(growth * 100, GROWTH * 100)
end
-- Reader slots: a thread's first read takes the pooled transaction of its
-- shard (QV_SHARDS, 16), and the pool retires idle workers and starts new
-- ones, each on the next shard; so up to 16 slots is the design, not a leak.
local allowed = {fds = before.fds, readers = math.max(before.readers, SHARDS)}
for _, k in ipairs{"fds", "readers"} do
  if after[k] > allowed[k] then
    bad[#bad + 1] = ("%s grew from %d to %d (at most %d)"):format(k == "fds" and "open descriptors" or "reader slots",
      before[k], after[k], allowed[k])
  end
end
print(("lua: %d calls (%d stores, %d hits) in %.1f s; rss %s -> %s MiB, anon %s -> %s MiB (%+.1f%%, limit %+.0f%%) after %d warm-up calls; fds %d -> %d; reader slots %d -> %d: %s"):format(
  calls, s.stores, s.hits, sys.now() - t0, mib(before.rss), mib(after.rss), mib(before.anon),
  mib(after.anon), growth * 100, GROWTH * 100, warm, before.fds, after.fds, before.readers, after.readers,
  #bad == 0 and "ok" or "FAILED"))
for _, b in ipairs(bad) do io.stderr:write("lua: ", b, "\n") end
os.exit(#bad == 0 and 0 or 1)
