"""Observability end to end: known traffic through aigw run (real Envoy and
the filter), then Envoy's /stats/prometheus and the access log must show
exactly what the fake providers reported, with the right labels; aigw run
prints one line per request."""
import json
import os
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from conftest import anthropic_config, basic_config, write_yaml
from fakes import anthropic_sse
from yaml_builders import ai_service_backend, backend, fqdn, loopback, route, security_policy


def broken_backend(port):
    """An OpenAI backend at 127.0.0.1:port named broken, serving broken-model."""
    return backend("broken", "OpenAI", loopback(port)) + route("broken-route", {"broken-model": "broken"})


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(gw):
    """Prometheus samples as (name, frozenset of labels) -> value."""
    with urllib.request.urlopen(gw.admin + "/stats/prometheus") as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return text, samples


def find(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def wait_for(gw, check, timeout=20):
    """Histograms reach the admin endpoint at Envoy's stats flush (5 s)."""
    deadline = time.time() + timeout
    while True:
        text, samples = scrape(gw)
        try:
            check(samples)
            return text, samples
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def traffic(tmp_path, providers, gateway):
    good = providers(name="alpha")
    broken = providers(lambda req: (500, {"content-type": "application/json"},
                                    b'{"error":{"message":"boom"}}'), name="broken")
    config = write_yaml(tmp_path, "gw.yaml",
                        basic_config(good.port, model="test-model") + broken_backend(broken.port))
    gw = gateway([config])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        client.chat.completions.create(model="test-model", messages=messages)
    list(client.chat.completions.create(model="test-model", messages=messages, stream=True))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=messages)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken-model", messages=messages)
    return gw


OK = dict(gen_ai_operation_name="chat", gen_ai_provider_name="openai",
          gen_ai_request_model="test-model", gen_ai_response_model="test-model",
          aigw_backend="default/backend")


def test_prometheus_metrics_match_provider_usage(traffic):
    gw = traffic

    def complete(s):
        assert find(s, "gen_ai_server_request_duration_milliseconds_count", **OK) == 3
        assert find(s, "gen_ai_server_time_to_first_token_milliseconds_count", **OK) == 1

    text, s = wait_for(gw, complete)
    # Exact token sums: the fake reports 11 in, 7 out, 18 total, 2 cached, 3 reasoning.
    for token, per_request in [("input", 11), ("output", 7), ("total", 18), ("cached_input", 2),
                               ("reasoning", 3), ("cache_creation_input", 0)]:
        assert find(s, "aigw_token_usage_total", gen_ai_token_type=token, **OK) == 3 * per_request, token
    assert find(s, "aigw_requests_total", **OK) == 3
    # Successful requests carry no error_type.
    ok_series = [ls for (n, ls) in s if n == "aigw_requests_total" and ("gen_ai_request_model", "test-model") in ls]
    assert ok_series and all(k != "error_type" for ls in ok_series for k, _ in ls)
    assert find(s, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **OK) == 3
    assert find(s, "gen_ai_client_token_usage_count", gen_ai_token_type="output", **OK) == 3
    # Unknown model: refused by the filter, bounded label, no provider.
    assert find(s, "aigw_requests_total", gen_ai_request_model="other", error_type="404",
                gen_ai_operation_name="chat") == 1
    assert "no-such-model" not in text
    # Upstream 500.
    assert find(s, "aigw_requests_total", gen_ai_request_model="broken-model", error_type="500",
                gen_ai_provider_name="openai", aigw_backend="default/broken") == 1
    # Envoy cut every label out of the names.
    assert ";" not in text and "req_model=" not in text


def test_access_log_has_model_backend_and_tokens(traffic):
    gw = traffic
    entries = gw.access_log(count=5)
    ok = [e for e in entries if e["request_model"] == "test-model"]
    assert len(ok) == 3
    for e in ok:
        assert e["status"] == 200
        assert e["backend"] == "default/backend"
        assert e["provider"] == "openai"
        assert e["response_model"] == "test-model"
        assert (e["input_tokens"], e["output_tokens"], e["total_tokens"]) == ("11", "7", "18")
    streamed = [e for e in ok if e["time_to_first_token_ms"] is not None]
    assert len(streamed) == 1 and int(streamed[0]["time_to_first_token_ms"]) >= 0
    broken = [e for e in entries if e["request_model"] == "broken-model"]
    assert broken[0]["status"] == 500 and broken[0]["backend"] == "default/broken"


def test_traceparent_reaches_the_provider(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port))])
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions", method="POST",
        data=json.dumps({"model": "test-model", "messages": []}).encode(),
        headers={"content-type": "application/json", "traceparent": parent, "tracestate": "k=v"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    sent = provider.requests[-1].headers
    assert sent["traceparent"] == parent and sent["tracestate"] == "k=v"


def traffic_lines(gw, count, timeout=10):
    pattern = re.compile(r"^\d\d:\d\d:\d\d \d{3} /v1/chat/completions .* ms", re.M)
    deadline = time.time() + timeout
    while True:
        lines = pattern.findall(gw.output())
        if len(lines) >= count or time.time() > deadline:
            return lines
        time.sleep(0.2)


def test_aigw_run_prints_one_line_per_request(traffic):
    lines = traffic_lines(traffic, 5)
    assert len(lines) == 5, traffic.output()
    ok = [l for l in lines if " 200 " in l]
    assert len(ok) == 3
    assert all("test-model -> default/backend tokens in 11 out 7" in l for l in ok)
    assert sum("first token" in l for l in ok) == 1
    assert any(" 404 /v1/chat/completions - " in l for l in lines)
    assert any(" 500 /v1/chat/completions broken-model -> default/broken" in l for l in lines)


def test_traffic_quiet(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port))],
                 extra_args=["--traffic", "quiet"])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="test-model", messages=[])
    gw.access_log(count=1)
    time.sleep(0.5)
    assert traffic_lines(gw, 1, timeout=0) == []


class Collector:
    """An OTLP/HTTP collector that keeps what it is sent (chunked or not)."""

    def __init__(self):
        self.requests = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                collector.requests.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def test_otlp_tracing_has_genai_attributes_and_no_content(tmp_path, providers, gateway, collector):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port))],
                 extra_args=["--otlp-endpoint", f"http://127.0.0.1:{collector.port}"])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    secret = "do-not-record-this-prompt-7f3a"
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions", method="POST",
        data=json.dumps({"model": "test-model", "messages": [{"role": "user", "content": secret}]}).encode(),
        headers={"content-type": "application/json",
                 "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    # The provider sees the same trace, with Envoy's span as the parent.
    assert trace_id in provider.requests[-1].headers["traceparent"]
    deadline = time.time() + 20
    while not collector.requests and time.time() < deadline:
        time.sleep(0.2)
    assert collector.requests, "no spans were exported"
    assert collector.requests[0][0] == "/v1/traces"
    body = b"".join(b for _, b in collector.requests)
    assert bytes.fromhex(trace_id) in body
    for attribute in (b"gen_ai.request.model", b"test-model", b"gen_ai.usage.input_tokens",
                      b"gen_ai.provider.name", b"default/backend"):
        assert attribute in body, attribute
    assert secret.encode() not in body


# --- Several providers at once: every label set must add up to what the fakes reported ---

ANTHROPIC_USAGE = {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 3,
                   "cache_creation_input_tokens": 5}
BEDROCK_USAGE = (17, 9)
PROVIDER_KEY = "sk-ant-provider-secret"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDAIGWTEST", "AWS_SECRET_ACCESS_KEY": "aigw/test+secret/key",
       "AWS_SESSION_TOKEN": "session-token-for-test"}


def anthropic_dated(request):
    """A native Anthropic API that answers with a dated variant of the model
    asked for (as the real one does), and 529 overloaded for claude-busy."""
    body = request.json()
    if body["model"] == "claude-busy":
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return 529, {"content-type": "application/json"}, json.dumps(error).encode()
    model = body["model"] + "-20250514"
    if not body.get("stream"):
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                  "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
                  "stop_sequence": None, "usage": ANTHROPIC_USAGE}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
    events = [
        {"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant",
                                              "model": model, "content": [], "stop_reason": None,
                                              "stop_sequence": None,
                                              "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    return 200, {"content-type": "text/event-stream"}, anthropic_sse(events)


BEDROCK_POLICY = security_policy("bedrock-policy", "bedrock", "AWSCredentials", "awsCredentials: {region: us-west-2}")
NOVA = "amazon.nova-pro-v1:0"
CLAUDE_ON_BEDROCK = "anthropic.claude-3-haiku-20240307-v1:0"
BEDROCK_CLAUDE = (ai_service_backend("bedrock-claude", "AWSAnthropic", backend="bedrock", version="bedrock-2023-05-31")
                  + security_policy("bedrock-claude-policy", "bedrock-claude", "AWSCredentials",
                                    "awsCredentials: {region: us-west-2}"))


@pytest.fixture
def mixed(tmp_path, providers, gateway):
    """Known traffic through five providers' wire formats at once, with
    streams and failures; returns the gateway."""
    from fake_bedrock import HOST, FakeBedrock, make_test_ca

    gpt = providers(name="openai")
    claude = providers(anthropic_dated, name="anthropic")
    broken = providers(lambda req: (500, {"content-type": "application/json"},
                                    b'{"error":{"message":"boom"}}'), name="broken")
    tls = make_test_ca(str(tmp_path))
    bedrock = FakeBedrock(tls[1], tls[2], AWS["AWS_ACCESS_KEY_ID"], AWS["AWS_SECRET_ACCESS_KEY"],
                          AWS["AWS_SESSION_TOKEN"], usage=BEDROCK_USAGE)
    config = (anthropic_config(claude.port, PROVIDER_KEY)
              + backend("gpt", "OpenAI", loopback(gpt.port)) + route("gpt-route", {"gpt-test": "gpt"})
              + route("haiku-route", {"claude-haiku": "claude"}) + route("busy-route", {"claude-busy": "claude"})
              + broken_backend(broken.port)
              + backend("bedrock", "AWSBedrock", fqdn(HOST, 443))
              + BEDROCK_POLICY + route("nova-route", {NOVA: "bedrock"})
              + BEDROCK_CLAUDE + route("claude-bedrock-route", {CLAUDE_ON_BEDROCK: "bedrock-claude"}))
    gw = gateway([write_yaml(tmp_path, "gw.yaml", config)], resolve=[f"{HOST}:443=127.0.0.1:{bedrock.port}"],
                 extra_args=["--extra-ca", tls[0]], env=AWS)
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    ant = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="x", max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    # OpenAI passthrough: 2 plain, 1 stream (the filter asks for the usage chunk).
    for _ in range(2):
        oai.chat.completions.create(model="gpt-test", messages=hi)
    list(oai.chat.completions.create(model="gpt-test", messages=hi, stream=True))
    # Anthropic native: 1 plain, 2 streams.
    ant.messages.create(model="claude-sonnet", max_tokens=16, messages=hi)
    for _ in range(2):
        with ant.messages.stream(model="claude-sonnet", max_tokens=16, messages=hi) as s:
            assert "".join(s.text_stream) == "Hello"
    # OpenAI client -> Anthropic backend: 1 plain, 1 stream without the usage chunk.
    oai.chat.completions.create(model="claude-haiku", messages=hi)
    list(oai.chat.completions.create(model="claude-haiku", messages=hi, stream=True))
    # OpenAI client -> Bedrock Converse: 1 plain, 1 stream.
    oai.chat.completions.create(model=NOVA, messages=hi)
    list(oai.chat.completions.create(model=NOVA, messages=hi, stream=True))
    # OpenAI client -> Claude on Bedrock (InvokeModel, binary event stream): 1 plain, 1 stream.
    oai.chat.completions.create(model=CLAUDE_ON_BEDROCK, messages=hi)
    list(oai.chat.completions.create(model=CLAUDE_ON_BEDROCK, messages=hi, stream=True))
    # The Anthropic SDK -> Claude on Bedrock: 1 stream (event stream decoded to Anthropic SSE).
    with ant.messages.stream(model=CLAUDE_ON_BEDROCK, max_tokens=16, messages=hi) as s:
        assert "".join(s.text_stream) == "Hello from Bedrock"
    # Failures: an OpenAI backend's 500 and Anthropic's 529 (native client).
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="broken-model", messages=hi)
    with pytest.raises(anthropic.APIStatusError):
        ant.messages.create(model="claude-busy", max_tokens=16, messages=hi)
    yield gw
    bedrock.close()


# (provider, request model, response model, backend) -> requests, streams, per-request tokens
# (input, output, total, cached_input, cache_creation_input, reasoning).
EXPECTED = [
    ("openai", "gpt-test", "gpt-test", "default/gpt", 3, 1, (11, 7, 18, 2, 0, 3)),
    # Anthropic's input counts the whole prompt: 9 uncached + 3 read + 5 written.
    ("anthropic", "claude-sonnet", "claude-sonnet-20250514", "default/claude", 3, 2, (17, 4, 21, 3, 5, 0)),
    ("anthropic", "claude-haiku", "claude-haiku-20250514", "default/claude", 2, 1, (17, 4, 21, 3, 5, 0)),
    ("aws.bedrock", NOVA, None, "default/bedrock", 2, 1, (17, 9, 26, 0, 0, 0)),
    ("aws.bedrock", CLAUDE_ON_BEDROCK, CLAUDE_ON_BEDROCK, "default/bedrock-claude", 3, 2, (17, 9, 26, 0, 0, 0)),
]
TOKEN_TYPES = ("input", "output", "total", "cached_input", "cache_creation_input", "reasoning")


def test_metrics_per_provider_and_model_equal_what_the_fakes_reported(mixed):
    gw = mixed

    def labels(provider, req, resp, backend_name):
        ls = dict(gen_ai_operation_name="chat", gen_ai_provider_name=provider,
                  gen_ai_request_model=req, aigw_backend=backend_name)
        if resp:
            ls["gen_ai_response_model"] = resp
        return ls

    def complete(s):
        for provider, req, resp, be, requests, streams, _ in EXPECTED:
            ls = labels(provider, req, resp, be)
            assert find(s, "gen_ai_server_request_duration_milliseconds_count", **ls) == requests, ls
            assert find(s, "gen_ai_server_time_to_first_token_milliseconds_count", **ls) == streams, ls

    text, s = wait_for(gw, complete)
    dump = "\n".join(l for l in text.splitlines() if l.startswith(("aigw_requests_total", "aigw_token")))
    for provider, req, resp, be, requests, streams, tokens in EXPECTED:
        ls = labels(provider, req, resp, be)
        assert find(s, "aigw_requests_total", **ls) == requests, (ls, dump)
        series = [dict(k) for (n, k) in s if n == "aigw_requests_total"
                  and ("gen_ai_request_model", req) in k]
        assert all("error_type" not in k for k in series), series
        if resp is None:  # Converse answers name no model: the label is left out.
            assert all("gen_ai_response_model" not in k for k in series), series
        for token, per_request in zip(TOKEN_TYPES, tokens):
            assert find(s, "aigw_token_usage_total", gen_ai_token_type=token, **ls) == requests * per_request, \
                (provider, req, token, dump)
        for token, per_request in zip(("input", "output"), tokens):
            assert find(s, "gen_ai_client_token_usage_count", gen_ai_token_type=token, **ls) == requests
            # Envoy's histogram sums are approximate (log-linear buckets).
            assert find(s, "gen_ai_client_token_usage_sum", gen_ai_token_type=token, **ls) == \
                pytest.approx(requests * per_request, rel=0.05)
        # Streams: time to first token and time per output token (output > 1 token).
        assert find(s, "gen_ai_server_time_to_first_token_milliseconds_count", **ls) == streams
        assert find(s, "gen_ai_server_time_per_output_token_milliseconds_count", **ls) == streams
    # Failures carry the provider, the bounded model and the status as error_type.
    assert find(s, "aigw_requests_total", gen_ai_provider_name="openai", gen_ai_request_model="broken-model",
                error_type="500", aigw_backend="default/broken") == 1
    assert find(s, "aigw_requests_total", gen_ai_provider_name="anthropic", gen_ai_request_model="claude-busy",
                error_type="529", aigw_backend="default/claude") == 1
    assert find(s, "aigw_token_usage_total", gen_ai_request_model="broken-model") == 0
    assert find(s, "gen_ai_server_time_to_first_token_milliseconds_count", error_type="529") == 0
    # In all: 13 answered, 2 failed.
    assert find(s, "aigw_requests_total") == 15
    assert find(s, "aigw_requests_total", error_type="500") + find(s, "aigw_requests_total", error_type="529") == 2


README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_names_exactly_the_metrics_envoy_exports(mixed):
    """The README's table of Prometheus names and its label list are the
    names /stats/prometheus shows, no more and no less."""
    text, s = wait_for(mixed, lambda s: find(s, "gen_ai_server_time_per_output_token_milliseconds_count") > 0)
    with open(README) as f:
        readme = f.read()
    section = readme[readme.index("## Observe it"):readme.index("## How it works")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    ours = {n for (n, _) in s if n.startswith(("gen_ai_", "aigw_"))}
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith("gen_ai_") and
                re.search(r"_(bucket|sum|count)$", n) else n for n in ours}
    assert documented == exported, (documented, exported)
    # Histograms are histograms; counters are counters.
    for name in documented:
        kind = re.search(rf"^# TYPE {name} (\w+)$", text, re.M)
        assert kind, name
        row = re.search(rf"^\| `{name}` \| (\w+)", section, re.M).group(1)
        assert kind.group(1) == row, (name, kind.group(1), row)
    labels = {k for (n, ls) in s if n in ours for k, _ in ls} - {"le"}
    for label in labels:
        assert f"`{label}`" in section, label


# --- OTLP over gRPC: a collector written with grpcio and opentelemetry-proto ---

class GrpcCollector:
    """An OTLP/gRPC trace collector (TraceService/Export) that keeps the
    decoded ExportTraceServiceRequests and their raw bytes."""

    def __init__(self):
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

        self.requests = []
        collector = self

        class Service(pb_grpc.TraceServiceServicer):
            def Export(self, request, context):
                collector.requests.append(request)
                return pb.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self):
        return [span for request in self.requests for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def close(self):
        self.server.stop(0)


def attribute_values(span):
    """OTLP attributes as name -> Python value (strings, ints, ...)."""
    out = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@pytest.fixture
def grpc_collector():
    c = GrpcCollector()
    yield c
    c.close()


def test_otlp_grpc_spans_have_genai_attributes_and_no_content(tmp_path, providers, gateway, grpc_collector):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port))],
                 extra_args=["--otlp-endpoint", f"grpc://127.0.0.1:{grpc_collector.port}"])
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    secret = "do-not-record-this-prompt-grpc-91b2"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
    client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": secret}])
    list(client.chat.completions.create(model="test-model", stream=True,
                                        messages=[{"role": "user", "content": secret}]))
    assert trace_id in provider.requests[-1].headers["traceparent"]
    deadline = time.time() + 20
    while len(grpc_collector.spans()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    spans = [s for s in grpc_collector.spans() if s.trace_id == bytes.fromhex(trace_id)]
    assert len(spans) == 2, grpc_collector.spans()
    for span in spans:
        assert span.parent_span_id == bytes.fromhex("b7ad6b7169203331")
        attributes = attribute_values(span)
        assert attributes["gen_ai.request.model"] == "test-model", attributes
        assert attributes["gen_ai.response.model"] == "test-model"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["aigw.backend"] == "default/backend"
        assert attributes["gen_ai.usage.input_tokens"] == "11"
        assert attributes["gen_ai.usage.output_tokens"] == "7"
        assert all(secret not in str(v) for v in attributes.values())
    resource = grpc_collector.requests[0].resource_spans[0].resource
    assert attribute_values(resource)["service.name"] == "aigw"
    assert all(secret.encode() not in r.SerializeToString() for r in grpc_collector.requests)


def test_access_log_per_provider_equals_what_the_fakes_reported(mixed):
    time.sleep(0.5)  # the last entries are written as the streams end
    entries = mixed.access_log(count=15)
    assert len(entries) == 15
    for provider, req, resp, be, requests, streams, tokens in EXPECTED:
        mine = [e for e in entries if e["request_model"] == req]
        assert len(mine) == requests, (req, mine)
        for e in mine:
            assert (e["status"], e["provider"], e["backend"]) == (200, provider, be), e
            assert e["response_model"] == resp, e
            assert (int(e["input_tokens"]), int(e["output_tokens"]), int(e["total_tokens"])) == tokens[:3], e
            assert int(e["cached_input_tokens"] or 0) == tokens[3], e
        assert sum(e["time_to_first_token_ms"] is not None for e in mine) == streams, (req, mine)
    failed = {e["request_model"]: (e["status"], e["provider"], e["backend"])
              for e in entries if e["status"] >= 400}
    assert failed == {"broken-model": (500, "openai", "default/broken"),
                      "claude-busy": (529, "anthropic", "default/claude")}
