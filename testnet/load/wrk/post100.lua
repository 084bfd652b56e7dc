-- wrk script: POST of 100 WBOs (300-byte payloads) to storage/history,
-- 100 distinct ids drawn from a pool of 800 per request, the users of a
-- credentials file taken in turn (the post100 mix of hce load, driven from
-- outside the server's process). Usage:
--   wrk -t2 -c16 -d20s -s post100.lua URL -- CREDS
-- CREDS has one line per user: "<user name> <Authorization header value>".
-- Against `hce load baseline` the same requests measure the minimal handler.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "users.lua")

local users = {}
local bodies = {}
local n = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  users = load_users(args[1])
  -- Bodies are built once per thread: the driver's own cost per request
  -- stays small and equal for both servers.
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  math.randomseed(tonumber(args[2] or "1") * 1000 + (id or 0))
  for b = 1, 128 do
    local pool = {}
    for i = 0, 799 do pool[#pool + 1] = i end
    local parts = {}
    for i = 1, 100 do
      local j = math.random(i, #pool)
      pool[i], pool[j] = pool[j], pool[i]
      local pay = {}
      for k = 1, 300 do
        local c = math.random(1, 64)
        pay[k] = alphabet:sub(c, c)
      end
      parts[i] = string.format('{"id":"h%d","sortindex":%d,"payload":"%s"}', pool[i], i, table.concat(pay))
    end
    bodies[b] = "[" .. table.concat(parts, ",") .. "]"
  end
  n = math.random(0, #users - 1)
end

function request()
  n = n + 1
  local u = users[(n % #users) + 1]
  local body = bodies[(n % #bodies) + 1]
  return wrk.format("POST", "/1.1/" .. u.name .. "/storage/history",
    { ["Authorization"] = u.auth, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  report_failure("post100", status, body)
end
