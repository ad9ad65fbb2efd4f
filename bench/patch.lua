-- wrk: PATCH BENCH_PREFIX<id>/ for the ids in BENCH_IDS in turn, each time with a new title
-- (so every request really writes); each wrk thread starts at its own place in the list.
local ids = {}
for id in string.gmatch(os.getenv("BENCH_IDS"), "%d+") do
  ids[#ids + 1] = id
end
local prefix = os.getenv("BENCH_PREFIX")
local threads = 0
local n = 0
local sent = 0
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread:set("start", threads * 97)
  threads = threads + 1
end

function init(args)
  n = start % #ids
end

function request()
  n = n % #ids + 1
  sent = sent + 1
  local body = '{"title": "patched ' .. sent .. '", "status": "C"}'
  return wrk.format("PATCH", prefix .. ids[n] .. "/", nil, body)
end
