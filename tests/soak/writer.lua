-- The Lua writer of the kill loops (writer.c has the protocol).
--
--   lua5.4 writer.lua CACHE DURABILITY W LOG
--
-- Stores soak.kill(W, i) for i = 0, 1, ... until killed; after each store a
-- second call must hit, and only then is "W i" appended to LOG and fsync'd
-- (through soak_sys: standard Lua has no fsync).
local quiver = require "quiver"
local sys = require "soak_sys"

local RUN_SECONDS = 60 -- a writer nobody kills stops by itself

local path, durability, w, log = arg[1], arg[2], math.tointeger(tonumber(arg[3] or "")), arg[4]
if not log or not w then
  io.stderr:write("usage: writer.lua CACHE safe|durable|fast W LOG\n")
  os.exit(2)
end

-- The result of soak.kill(w, i) in every writer: "w:i:" and 1 to 1500 letters.
local function value(i)
  local letters = {}
  for k = 0, (w * 31 + i * 7919) % 1500 do letters[#letters + 1] = string.char(97 + (w + i + k) % 26) end
  return ("%d:%d:"):format(w, i) .. table.concat(letters)
end

local hits_only = false
local kill_value = quiver.memo("soak.kill", function(_, i)
  if hits_only then
    io.stderr:write(("writer.lua: soak.kill(%d, %d) was stored, yet ran again\n"):format(w, i))
    os.exit(4)
  end
  return value(i)
end, {version = "1"})

local c = quiver.open(path, {durability = durability})
local stop = sys.now() + RUN_SECONDS
quiver.with_cache(c, function()
  local i = 0
  while sys.now() < stop do
    kill_value(w, i)
    hits_only = true
    local got = kill_value(w, i)
    hits_only = false
    if got ~= value(i) then
      io.stderr:write(("writer.lua: soak.kill(%d, %d) hit with a wrong value\n"):format(w, i))
      os.exit(3)
    end
    assert(sys.append_sync(log, ("%d %d\n"):format(w, i)))
    i = i + 1
  end
end)
c:close()
