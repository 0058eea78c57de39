-- POSTs pre-built JSON bodies in turn, so no two consecutive requests are the same.
--
-- wrk -t1 -c8 -d15s --latency -s rotate.lua URL -- PATH BODIES_FILE [count-versions]
--   PATH         request path, e.g. /invocations or /predict
--   BODIES_FILE  one JSON request body per line
--   count-versions  also read every response and count it by HTTP status and by "model_version"
--                   (slower: only for the promotion run)
-- A body holding "@@" gets it replaced, request by request, with a growing counter ("0000000042-"), and "1999-12-31T23:59:59"
-- with a growing event time (2013-01-01 plus one second a request): each request then carries fresh record ids
-- and a later event time, as real traffic does.
-- At the end it prints one line "BENCH_JSON {...}" with exact figures for the harness to parse.

local bodies = {}
local next_body = 0
local sent = 0
local fresh_ids = false
local request_path = "/"
local threads = {}

-- Filled per thread when counting (read back in done() through thread:get).
statuses = {}
versions = {}

function setup(thread)
   table.insert(threads, thread)
end

local function count_response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   local version = body and string.match(body, '"model_version"%s*:%s*"?([%w%.%-]+)"?') or "none"
   versions[version] = (versions[version] or 0) + 1
end

function init(args)
   request_path = args[1] or "/"
   local file = args[2]
   if file == nil then
      error("usage: -- PATH BODIES_FILE [count-versions]")
   end
   for line in io.lines(file) do
      if #line > 0 then
         table.insert(bodies, line)
      end
   end
   if #bodies == 0 then
      error("no request bodies in " .. file)
   end
   fresh_ids = string.find(bodies[1], "@@", 1, true) ~= nil
   wrk.headers["Content-Type"] = "application/json"
   if args[3] == "count-versions" then
      response = count_response
   end
end

function request()
   next_body = next_body % #bodies + 1
   local body = bodies[next_body]
   if fresh_ids then
      sent = sent + 1
      body = string.gsub(body, "@@", string.format("%010d-", sent))
      body = string.gsub(body, "1999%-12%-31T23:59:59", os.date("!%Y-%m-%dT%H:%M:%S", 1356998400 + sent))
   end
   return wrk.format("POST", request_path, nil, body)
end

local function merge(into, from)
   for key, value in pairs(from or {}) do
      into[key] = (into[key] or 0) + value
   end
end

local function encode(counts)
   local parts = {}
   for key, value in pairs(counts) do
      table.insert(parts, string.format('"%s":%d', key, value))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local all_statuses, all_versions = {}, {}
   for _, thread in ipairs(threads) do
      merge(all_statuses, thread:get("statuses"))
      merge(all_versions, thread:get("versions"))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d},'
         .. '"statuses":%s,"versions":%s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      encode(all_statuses), encode(all_versions)))
end
