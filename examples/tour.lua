-- The Lua part of the tour: the same shared.score, computed in Lua.
--
--   lua5.4 examples/tour.lua FIRST LAST
--
-- What Python or C stored under shared.score comes back as a hit; what Lua
-- computes is stored for them. No cache is named: the memo uses the default
-- one, the same as Python's and C's (QUIVER_CACHE, else ~/.cache/quiver).
local quiver = require "quiver"

local function score(n)
  local s = 0
  for i = 0, 299999 do s = s + (i * n) % 7 end
  return s
end
local memo_score = quiver.memo("shared.score", score, {version = "1"})

local first, last = math.tointeger(tonumber(arg[1])), math.tointeger(tonumber(arg[2]))
local t0 = os.clock()
local sum = 0
for n = first, last do sum = sum + memo_score(n) end
local st = memo_score:stats()
print(("lua     score(%d..%d) in one Lua state: sum %d, %.2f s"):format(first, last, sum, os.clock() - t0))
print(("lua     %3d calls, %3d hits, %3d misses (%s)"):format(st.hits + st.misses, st.hits, st.misses,
  tostring(memo_score)))
