-- bench_lua: a Lua memo hit against a plain Lua table memo (the floor) and the
-- goal of DESIGN section 8 (<= 0.6 us), medians of repeats. Run it from
-- scripts/bench.sh, or: . build/env.sh && lua5.4 bench/bench_lua.lua [--quick]
-- A Python hit measured in the same run is printed beside it when bench.sh
-- hands it over in QV_PY_HIT_NS.
local quiver = require "quiver"
local core = require "quiver_core"

local quick = arg[1] == "--quick"
local calls = quick and 20000 or 300000
local repeats = quick and 3 or 9

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

-- ns per call of body(i) over `calls` calls, the median of `repeats` runs.
-- os.clock is this process's CPU time: a single-threaded loop is all CPU.
local function measure(body)
  local runs = {}
  for r = 1, repeats do
    local t0 = os.clock()
    for i = 1, calls do body(i) end
    runs[r] = (os.clock() - t0) * 1e9 / calls
  end
  return median(runs)
end

local tmp = (os.getenv("QUIVER_BUILD") or "/tmp") .. "/bench-tmp/lua"
os.execute("rm -rf '" .. tmp .. "' && mkdir -p '" .. tmp .. "'")

local function f(x) return x * 2 + 1 end

-- the floor: the memo a Lua programmer writes by hand
local seen = {}
local function table_memo(x)
  local r = seen[x]
  if r == nil then
    r = f(x)
    seen[x] = r
  end
  return r
end

local rows = {}
local function row(name, q, floor, goal, note)
  rows[#rows + 1] = {name = name, q = q, floor = floor, goal = goal, note = note or ""}
end

local floor_hot = measure(function() return table_memo(7) end)

local lmdb = quiver.open(tmp .. "/hit")
local mem = quiver.memory()
local memo = quiver.memo("bench.f", f, {version = "1"})

quiver.with_cache(lmdb, function()
  memo(7)
  row("1. Lua hit, f(int), hot key, LMDB", measure(function() return memo(7) end), floor_hot, 300,
      "floor: a plain Lua table memo")
  for i = 1, 1000 do memo(i) end
  for i = 1, 1000 do table_memo(i) end
  row("   1000 keys in turn, LMDB", measure(function(i) return memo(i % 1000 + 1) end),
      measure(function(i) return table_memo(i % 1000 + 1) end), nil, "the goal is for a hot key")
end)

quiver.with_cache(lmdb, function()
  -- DESIGN section 8: a hit whose argument is a 1 MB buffer <= 60 us
  local len = quiver.memo("bench.len", function(b) return #b end)
  local bytes, text = quiver.bytes(string.rep("\xff", 1 << 20)), string.rep("x", 1 << 20)
  len(bytes)
  len(text)
  local saved = calls
  calls = quick and 200 or 2000
  row("   hit, 1 MiB bytes argument, LMDB", measure(function() return len(bytes) end), nil, 60000,
      "hashed in place")
  row("   hit, 1 MiB text argument, LMDB", measure(function() return len(text) end), nil, 60000,
      "UTF-8 checked, then hashed")
  calls = saved
end)

quiver.with_cache(mem, function()
  memo(7)
  row("   hot key, memory cache", measure(function() return memo(7) end), floor_hot, 600)
end)

-- where the time goes: one SWIG call, and the fast paths on their own
row("   floor: one SWIG-wrapped call (qv_version)", measure(function() return core.qv_version() end), nil, nil,
    "DESIGN: about 42 ns")
row("   m:digest(7): encode, digest, hex", measure(function() return memo:digest(7) end), nil, nil)
local small = quiver.encode({x = 1, name = "alpha", list = {1, 2, 3}})
row("   decode {x=, name=, list={3}}", measure(function() return quiver.decode(small) end), nil, nil)

local py = tonumber(os.getenv("QV_PY_HIT_NS") or "")
if py then row("   Python hit, f(int), same run", py, nil, 600, "from the Python benchmark") end

-- a miss pays the body, encoding and a store (group-committed, fast durability)
local store = quiver.open(tmp .. "/miss", {durability = "fast"})
local misses = quiver.memo("bench.miss", f)
local n = 0
local miss_calls = quick and 2000 or 20000
quiver.with_cache(store, function()
  local t0 = os.clock()
  for _ = 1, miss_calls do
    n = n + 1
    misses(n)
  end
  row("   miss and store, fast durability", (os.clock() - t0) * 1e9 / miss_calls, nil, nil, "CPU time only")
end)

lmdb:close()
mem:close()
store:close()

local hdr = "%-44s %13s %13s %7s  %-12s %-6s %s\n"
io.write(string.format("bench_lua: %s, %d calls x %d repeats (medians)\n", _VERSION, calls, repeats))
io.write(string.format(hdr, "benchmark", "quiver ns/op", "floor ns/op", "ratio", "goal", "result", "notes"))
io.write(string.rep("-", 120), "\n")
for _, r in ipairs(rows) do
  local ratio = r.floor and string.format("%.2f", r.q / r.floor) or "-"
  local goal = r.goal and string.format("<= %d ns", r.goal) or "-"
  local result = r.goal and (r.q <= r.goal and "PASS" or "MISS") or ""
  io.write(string.format(hdr, r.name, string.format("%.1f", r.q), r.floor and string.format("%.1f", r.floor) or "-",
    ratio, goal, result, r.note))
end
