-- wrk script: GET <prefix><customer>/<suffix> for customers drawn at random (seeded),
-- with the shop's API key; prints the latency distribution as one JSON line when done.
--
--   RECSITE_BENCH_API_KEY=<key> wrk -t1 -c1 -d10s --latency -s bench/wrk/recommendations.lua \
--       http://127.0.0.1:8000 -- /api/v1/recommendations/ 100000 1 '?k=10'
--
-- Arguments: path prefix, number of customers (ids c-0 .. c-<n-1>), seed, suffix.
-- Each wrk thread draws its own seeded sequence, so two runs send the same requests.

local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
end

function init(args)
   prefix = args[1] or "/api/v1/recommendations/"
   customers = tonumber(args[2] or "1000")
   suffix = args[4] or "?k=10"
   who = args[5] or "c-"  -- the customer ids' prefix: "c-" the model's customers, "v-" visitors it folds
   math.randomseed(tonumber(args[3] or "1") * 1000003 + id)
   local key = os.getenv("RECSITE_BENCH_API_KEY")
   if key == nil or key == "" then
      error("set RECSITE_BENCH_API_KEY to the shop's API key")
   end
   headers = { ["Authorization"] = "Api-Key " .. key, ["Host"] = "127.0.0.1" }
end

function request()
   local customer = math.random(0, customers - 1)
   return wrk.format("GET", prefix .. who .. customer .. "/" .. suffix, headers)
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   -- latency is in microseconds; report milliseconds
   io.write(string.format(
      '{"requests": %d, "seconds": %.3f, "requests_per_second": %.1f, '
         .. '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "p99_9_ms": %.3f, '
         .. '"mean_ms": %.3f, "stdev_ms": %.3f, "max_ms": %.3f, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, latency.mean / 1000, latency.stdev / 1000, latency.max / 1000,
      e.connect, e.read, e.write, e.status, e.timeout))
end
