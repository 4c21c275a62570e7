-- The Lua worker of the interop tests (see worker_c.c for the protocol).
--
--   lua5.4 worker.lua compute|hits FIRST LAST [SEED]
--
-- The cache is QUIVER_CACHE's. SEED shuffles the order of the calls. With
-- QV_INTEROP_LOG each run of the body appends "lua N" to that file;
-- QV_INTEROP_SLEEP_MS makes it slow (Lua has no sleep: it spins on os.clock).
local quiver = require "quiver"

local mode, first, last, seed = arg[1], math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3])), arg[4]
if (mode ~= "compute" and mode ~= "hits") or not first or not last then
  io.stderr:write("usage: worker.lua compute|hits FIRST LAST [SEED]\n")
  os.exit(2)
end

local runs = 0
local square = quiver.memo("interop.square", function(n, tag)
  runs = runs + 1
  if mode == "hits" then
    io.stderr:write(("worker.lua: the body ran for (%d, %q) in hits mode\n"):format(n, tag))
    os.exit(3)
  end
  local ms = tonumber(os.getenv("QV_INTEROP_SLEEP_MS") or "")
  if ms then
    local until_ = os.clock() + ms / 1000
    repeat until os.clock() >= until_
  end
  local log = os.getenv("QV_INTEROP_LOG")
  if log then
    local f = assert(io.open(log, "a"))
    f:write(("lua %d\n"):format(n))
    f:close()
  end
  return n * n + #tag
end, {version = "1"})

local keys = {}
for n = first, last do keys[#keys + 1] = n end
if seed then
  math.randomseed(math.tointeger(tonumber(seed)))
  for i = #keys, 2, -1 do
    local j = math.random(i)
    keys[i], keys[j] = keys[j], keys[i]
  end
end
local sum = 0
for _, n in ipairs(keys) do sum = sum + square(n, "alpha") end
print(('{"lang": "lua", "runs": %d, "sum": %d, "digest": "%s"}'):format(runs, sum, square:digest(first, "alpha")))
