-- The Lua part of the tour: the same shared.score, computed in Lua.
--
--   lua5.4 examples/tour.lua FIRST LAST
--
-- What Python or C stored under shared.score comes back as a hit; what Lua
-- computes is stored for them. The cache is QUIVER_CACHE's.
local quiver = require "quiver"

local function score(n)
  local s = 0
  for i = 0, 299999 do s = s + (i * n) % 7 end
  return s
end
local memo_score = quiver.memo("shared.score", score, {version = "1"})

local first, last = math.tointeger(tonumber(arg[1])), math.tointeger(tonumber(arg[2]))
local cache <close> = quiver.open(assert(os.getenv("QUIVER_CACHE"), "set QUIVER_CACHE"))
quiver.with_cache(cache, function()
  local saved_ns, sum = 0, 0
  local t0 = os.clock()
  for n = first, last do
    local rec = cache:load(memo_score:digest(n))
    if rec then saved_ns = saved_ns + rec.duration_ns end
    sum = sum + memo_score(n)
  end
  local st = memo_score:stats()
  print(("lua     score(%d..%d) in one Lua state: sum %d, %.2f s"):format(first, last, sum, os.clock() - t0))
  print(("lua     %3d calls, %3d hits, %3d misses, %.3f s saved (cache %s)"):format(
    st.hits + st.misses, st.hits, st.misses, saved_ns / 1e9, cache:path()))
end)
