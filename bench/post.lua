-- wrk script for bench/pipeline.py's saturation phase (bench/loadgen.py starts wrk with it).
--
-- POST /v1/notifications with the same body as the httpx load (bench/loadgen.py, drive()),
-- to recipients drawn at random, without repeats within a POST, from the pre-created pool
-- PREFIX0 .. PREFIX<POOL-1>. Settings come from the environment:
--   CLARION_BENCH_KEY         API key (scope notify)
--   CLARION_BENCH_PREFIX      recipient id prefix, e.g. "bench-1234-"
--   CLARION_BENCH_POOL        pool size (ids PREFIX0 .. PREFIX<POOL-1>)
--   CLARION_BENCH_RECIPIENTS  recipients per POST (<= POOL)
-- done() prints one line for the harness to parse:
--   bench-json {"requests": written, "status": {"202": n, ...}, "duration_us": ..., ...}
-- "requests" counts request() calls (POSTs handed to a connection to write), "status" counts
-- the answers read, per HTTP status. Their difference is the POSTs in flight when wrk stopped.

local key = os.getenv("CLARION_BENCH_KEY")
local prefix = os.getenv("CLARION_BENCH_PREFIX")
local pool = tonumber(os.getenv("CLARION_BENCH_POOL"))
local per_post = tonumber(os.getenv("CLARION_BENCH_RECIPIENTS"))
assert(key and prefix and pool and per_post and per_post <= pool, "CLARION_BENCH_* not set")

wrk.method = "POST"
wrk.path = "/v1/notifications"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_id)
  requests = 0
  statuses = {}
end

local function recipients()
  local chosen, names = {}, {}
  while #names < per_post do -- ends: per_post <= pool
    local i = math.random(0, pool - 1)
    if not chosen[i] then
      chosen[i] = true
      names[#names + 1] = '"' .. prefix .. i .. '"'
    end
  end
  return table.concat(names, ",")
end

function request()
  requests = requests + 1
  local body = '{"recipients":[' .. recipients() .. '],"category":"bench","type":"load",'
    .. '"title":"Benchmark notification","body":"Sent by bench/pipeline.py"}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, rates)
  local written, counts = 0, {}
  for _, thread in ipairs(threads) do
    written = written + thread:get("requests")
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  print(string.format(
    'bench-json {"requests": %d, "status": {%s}, "duration_us": %d, "completed": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p90": %d, '
      .. '"p99": %d, "p99.9": %d}}',
    written, table.concat(parts, ", "), summary.duration, summary.requests,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)
  ))
end
