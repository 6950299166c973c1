-- wrk script for scripts/soak.sh: a fixed mix of requests, cycled per
-- connection, with a delay between requests so the total rate stays steady.
-- SOAK_DELAY_MS: pause of each connection between two requests.
local json = '{"role":"user","content":"Say hello."}'
local mix = {
  -- 10 slots: 4 JSON, 2 streamed, 1 Bedrock (translated + signed),
  -- 1 Anthropic Messages, 1 provider error (400), 1 unknown model (404).
  {"/v1/chat/completions", '{"model":"bench-model","messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-model","stream":true,"stream_options":{"include_usage":true},"messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-model","messages":[' .. json .. '],"max_tokens":64}'},
  {"/v1/chat/completions", '{"model":"bench-bedrock","messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-model","messages":[' .. json .. '],"temperature":0.2}'},
  {"/anthropic/v1/messages", '{"model":"bench-claude","max_tokens":64,"messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-error","messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-model","stream":true,"messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"no-such-model","messages":[' .. json .. ']}'},
  {"/v1/chat/completions", '{"model":"bench-model","messages":[' .. json .. '],"user":"soak"}'},
}
local i = 0
local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-soak",
                 ["anthropic-version"] = "2023-06-01"}

setup = function(thread)
  thread:set("id", tostring(math.random(0, 9)))
end

init = function(args)
  i = tonumber(id or "0")
end

request = function()
  i = i + 1
  local m = mix[(i % #mix) + 1]
  headers["x-user-id"] = "soak-" .. (i % 50)
  return wrk.format("POST", m[1], headers, m[2])
end

delay = function()
  return delay_ms
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"connect_err":%d,"read_err":%d,"write_err":%d,"timeout_err":%d,"status_err":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
