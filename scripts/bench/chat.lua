-- wrk script: POST an OpenAI chat completion; BENCH_STREAM=1 asks for a
-- stream with a usage chunk. status_err counts responses >= 400. Prints one JSON line of exact figures at the end.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
-- BENCH_HEADERS="name: value;name: value" adds headers (Portkey's routing).
for pair in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^;]+") do
  local k, v = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end
local stream = os.getenv("BENCH_STREAM") == "1"
-- BENCH_MODEL picks the route (bench-bedrock: OpenAI -> Bedrock Converse).
local model = os.getenv("BENCH_MODEL") or "bench-model"
if stream then
  wrk.body = '{"model":"' .. model .. '","stream":true,"stream_options":{"include_usage":true},'
    .. '"messages":[{"role":"user","content":"Say hello."}]}'
else
  wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello."}]}'
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,'
    .. '"max_us":%d,"connect_err":%d,"read_err":%d,"write_err":%d,"timeout_err":%d,"status_err":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
