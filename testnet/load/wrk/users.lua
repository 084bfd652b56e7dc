-- Shared by the wrk scripts of this folder (loaded with dofile).

-- load_users reads a credentials file: one line per user,
-- "<user name> <Authorization header value>".
function load_users(path)
  local users = {}
  local f = assert(io.open(path, "r"), "credentials file " .. tostring(path))
  for line in f:lines() do
    local name, auth = line:match("^(%S+)%s+(.+)$")
    if name then users[#users + 1] = { name = name, auth = auth } end
  end
  f:close()
  assert(#users > 0, "no users in " .. path)
  return users
end

-- report_failure writes a non-200 answer's status and first bytes to stderr
-- (run.sh shows them).
function report_failure(what, status, body)
  if status ~= 200 then
    io.stderr:write(what .. ": status " .. status .. ": " .. body:sub(1, 200) .. "\n")
  end
end
