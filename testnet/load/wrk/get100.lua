-- wrk script: GET storage/bookmarks?full=1&limit=100 (100 records of 300
-- bytes each, prefilled by run.sh), the users of a credentials file taken
-- in turn: the get100 mix of hce load, driven from outside the server's
-- process. Usage: wrk -t2 -c16 -d20s -s get100.lua URL -- CREDS

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "users.lua")

local users = {}
local n = 0

function init(args)
  users = load_users(args[1])
  n = math.random(0, #users - 1)
end

function request()
  n = n + 1
  local u = users[(n % #users) + 1]
  return wrk.format("GET", "/1.1/" .. u.name .. "/storage/bookmarks?full=1&limit=100",
    { ["Authorization"] = u.auth })
end

function response(status, headers, body)
  report_failure("get100", status, body)
end
