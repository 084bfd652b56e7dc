-- wrk script: GET storage/bookmarks?full=1&limit=100 (100 records of 300
-- bytes each, prefilled by run.sh), the users of a credentials file taken
-- in turn: the get100 mix of hce load, driven from outside the server's
-- process. Usage: wrk -t2 -c16 -d20s -s get100.lua URL -- CREDS

local users = {}
local n = 0

function init(args)
  local f = assert(io.open(args[1], "r"), "credentials file")
  for line in f:lines() do
    local name, auth = line:match("^(%S+)%s+(.+)$")
    if name then users[#users + 1] = { name = name, auth = auth } end
  end
  f:close()
  assert(#users > 0, "no users in " .. args[1])
  n = math.random(0, #users - 1)
end

function request()
  n = n + 1
  local u = users[(n % #users) + 1]
  return wrk.format("GET", "/1.1/" .. u.name .. "/storage/bookmarks?full=1&limit=100",
    { ["Authorization"] = u.auth })
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("get100: status " .. status .. ": " .. body:sub(1, 200) .. "\n")
  end
end
