"""Failover across providers through a real Envoy: backendRef priorities,
the default AI retry policy and BackendTrafficPolicy retry/timeouts. Every
attempt is rewritten afresh from the client's original request for the
backend it lands on (OpenAI passthrough, OpenAI with a model override,
Anthropic native, Bedrock signed anew), and the client sees one answer in
its own API shape with the usage of the attempt that answered."""
import json
import os
import socket
import time
import urllib.request

import anthropic
import openai
import pytest

from conftest import counters, free_port, write_yaml
from fake_bedrock import HOST, FakeBedrock, make_test_ca
from fakes import openai_echo
from test_anthropic import anthropic_fake

AWS = {"AWS_ACCESS_KEY_ID": "AKIDAIGWTEST", "AWS_SECRET_ACCESS_KEY": "aigw/test+secret/key"}
CLIENT_KEY = "client-key-must-not-leak"
PROVIDER_KEY = "sk-provider-secret"
MODEL = "m"
USER = [{"role": "user", "content": "hi"}]

HEAD = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: aigw
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Secret
metadata: {name: key}
stringData: {apiKey: %s}
""" % PROVIDER_KEY


def backend_yaml(name, schema, port, host=None):
    endpoint = (f"{{fqdn: {{hostname: {host}, port: 443}}}}" if host
                else f"{{ip: {{address: 127.0.0.1, port: {port}}}}}")
    text = f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{endpoint}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
"""
    policy = {"OpenAI": ("APIKey", "apiKey"), "Anthropic": ("AnthropicAPIKey", "anthropicAPIKey")}.get(schema)
    if policy:
        text += f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}-key}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: {policy[0]}
  {policy[1]}: {{secretRef: {{name: key}}}}
"""
    elif schema in ("AWSAnthropic", "AWSBedrock"):
        text += f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}-aws}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: AWSCredentials
  awsCredentials: {{region: us-west-2}}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: {name}-tls}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: {name}}}]
  validation: {{wellKnownCACertificates: System, hostname: {host}}}
"""
    return text


def config(backends, policy="", model=MODEL):
    """backends: [(name, schema, port, priority, extra ref fields)]"""
    text = HEAD
    refs = []
    for name, schema, port, priority, extra in backends:
        text += backend_yaml(name, schema, port, HOST if schema.startswith("AWS") else None)
        refs.append(f"{{name: {name}, priority: {priority}{extra}}}")
    text += f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: {model}}}]}}]
    backendRefs: [{", ".join(refs)}]
"""
    if policy:
        text += f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: resilience}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
{policy}"""
    return text


def status(code, headers=None, body=None):
    payload = body if body is not None else json.dumps(
        {"error": {"message": f"provider failed with {code}", "type": "server_error"}}).encode()

    def respond(request):
        return code, {"content-type": "application/json", **(headers or {})}, payload
    return respond


def hang(seconds, then):
    def respond(request):
        time.sleep(seconds)
        return then(request)
    return respond


@pytest.fixture
def tls(tmp_path):
    return make_test_ca(str(tmp_path))


@pytest.fixture
def bedrock(tls):
    made = []

    def make(**kwargs):
        fake = FakeBedrock(tls[1], tls[2], access_key=AWS["AWS_ACCESS_KEY_ID"],
                           secret_key=AWS["AWS_SECRET_ACCESS_KEY"], **kwargs)
        made.append(fake)
        return fake
    yield make
    for f in made:
        f.close()


def start(gateway, tmp_path, text, bedrock_fake=None, tls=None):
    kwargs = {}
    if bedrock_fake:
        kwargs = {"resolve": [f"{HOST}:443=127.0.0.1:{bedrock_fake.port}"],
                  "extra_args": ["--extra-ca", tls[0]], "env": AWS}
    return gateway([write_yaml(tmp_path, "gw.yaml", text)], **kwargs)


def oai(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def claude(gw):
    return anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def last_log(gw):
    return gw.access_log()[-1]


def assert_usage(gw, input_tokens, output_tokens):
    log = last_log(gw)
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == (
        str(input_tokens), str(output_tokens), str(input_tokens + output_tokens)), log


def assert_no_secrets(sent):
    text = json.dumps(sent.headers)
    assert CLIENT_KEY not in text


# --- OpenAI to OpenAI: body rewritten on one attempt, passed through on the other


@pytest.mark.parametrize("override_on", ["primary", "secondary"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_500_fails_over_with_the_original_request(tmp_path, providers, gateway, override_on, stream):
    primary = providers(status(500), name="primary")
    secondary = providers(name="secondary")
    extra = {"primary": ", modelNameOverride: primary-model", "secondary": ""}
    extra2 = {"primary": "", "secondary": ", modelNameOverride: secondary-model"}
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, extra[override_on]),
        ("secondary", "OpenAI", secondary.port, 1, extra2[override_on]),
    ]))
    expected_model = "secondary-model" if override_on == "secondary" else MODEL
    if stream:
        chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.usage for c in chunks), "the gateway's usage chunk reached the client"
    else:
        r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
        text = r.choices[0].message.content
        assert r.usage.total_tokens == 18
    assert text == f"secondary answered {expected_model}"
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    first, second = primary.requests[0], secondary.requests[0]
    assert first.json()["model"] == ("primary-model" if override_on == "primary" else MODEL)
    assert second.json()["model"] == expected_model
    assert second.path == "/v1/chat/completions"
    assert second.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert second.json()["messages"] == USER
    if stream:
        assert second.json()["stream_options"] == {"include_usage": True}
    for sent in (first, second):
        assert_no_secrets(sent)
        assert "x-aigw-endpoint" not in sent.headers
    assert_usage(gw, 11, 7)
    assert str(last_log(gw)["status"]) == "200"


def test_one_provider_falls_back_to_another_model(tmp_path, providers, gateway):
    """Two backendRefs to the same AIServiceBackend with different
    modelNameOverrides: each attempt sends its own rule's model."""
    echo = openai_echo("provider")

    def respond(request):
        if request.json()["model"] == "big-model":
            return status(503)(request)
        return echo(request)
    provider = providers(respond, name="provider")
    text = config([("provider", "OpenAI", provider.port, 0, ", modelNameOverride: big-model")])
    one_ref = "[{name: provider, priority: 0, modelNameOverride: big-model}]"
    assert one_ref in text
    text = text.replace(one_ref, one_ref[:-1] + ", {name: provider, priority: 1, modelNameOverride: small-model}]")
    gw = start(gateway, tmp_path, text)
    r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
    assert r.choices[0].message.content == "provider answered small-model"
    assert [q.json()["model"] for q in provider.requests] == ["big-model", "small-model"]
    assert last_log(gw)["backend"] == "default/provider"
    metrics = urllib.request.urlopen(gw.admin + "/stats/prometheus").read().decode()
    assert 'aigw_backend="default/provider"' in metrics
    assert "#small-model" not in metrics and "#big-model" not in metrics


def test_refused_connection_fails_over(tmp_path, providers, gateway):
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", free_port(), 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ]))
    for _ in range(3):
        r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
        assert r.choices[0].message.content == f"secondary answered {MODEL}"
    assert len(secondary.requests) == 3
    assert_usage(gw, 11, 7)


# --- Across schemas: Anthropic native <-> Claude on Bedrock (SigV4 per attempt)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_500_fails_over_to_bedrock_signed_anew(tmp_path, providers, gateway, bedrock, tls, stream):
    primary = providers(status(500, body=json.dumps(
        {"type": "error", "error": {"type": "api_error", "message": "overloaded"}}).encode()), name="anthropic")
    fake = bedrock(usage=(13, 8))
    gw = start(gateway, tmp_path, config([
        ("anthropic", "Anthropic", primary.port, 0, ""),
        ("bedrock", "AWSAnthropic", 0, 1, ", modelNameOverride: anthropic.claude-3-haiku-20240307-v1:0"),
    ]), fake, tls)
    if stream:
        with claude(gw).messages.stream(model=MODEL, max_tokens=64, messages=USER) as s:
            text = "".join(s.text_stream)
    else:
        text = claude(gw).messages.create(model=MODEL, max_tokens=64, messages=USER).content[0].text
    assert text == "Hello from Bedrock"
    assert len(primary.requests) == 1 and len(fake.requests) == 1
    assert primary.requests[0].path == "/v1/messages"
    assert fake.signature_checks == [(True, "ok")]
    sent = fake.requests[0]
    action = "invoke-with-response-stream" if stream else "invoke"
    assert sent.path == f"/model/anthropic.claude-3-haiku-20240307-v1%3A0/{action}"
    assert "model" not in sent.json() and sent.json()["messages"] == USER
    assert "x-api-key" not in sent.headers and "anthropic-version" not in sent.headers
    assert_usage(gw, 13, 8)


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_500_fails_over_to_anthropic_with_the_original_request(
        tmp_path, providers, gateway, bedrock, tls, stream):
    fake = bedrock()
    secondary = providers(anthropic_fake, name="anthropic")
    gw = start(gateway, tmp_path, config([
        ("bedrock", "AWSAnthropic", 0, 0, ", modelNameOverride: anthropic.claude-3-haiku-20240307-v1:0"),
        ("anthropic", "Anthropic", secondary.port, 1, ""),
    ], policy="""  retry:
    numRetries: 1
    retryOn: {triggers: [connect-failure, reset], httpStatusCodes: [403, 500]}
"""), fake, tls)
    # Make Bedrock refuse every request (a key it does not know): 403.
    fake.credentials = type(fake.credentials)("AKIDOTHER", "x", None)
    if stream:
        with claude(gw).messages.stream(model=MODEL, max_tokens=16, messages=USER) as s:
            text = "".join(s.text_stream)
    else:
        text = claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER).content[0].text
    assert text == "Hello from Anthropic"
    assert len(fake.requests) == 1 and len(secondary.requests) == 1
    sent = secondary.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.json()["model"] == MODEL and sent.json()["messages"] == USER
    assert sent.json().get("stream", False) == stream
    assert "anthropic_version" not in sent.json()
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert "anthropic-version" in sent.headers
    for h in ("x-amz-date", "x-amz-content-sha256", "x-amz-security-token"):
        assert h not in sent.headers, h
    assert not sent.headers.get("authorization", "").startswith("AWS4")
    assert_usage(gw, 12, 4)


# --- Timeouts


def test_hang_before_headers_is_retried_after_the_per_try_timeout(tmp_path, providers, gateway):
    primary = providers(hang(5, openai_echo("primary")), name="primary")
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ], policy="""  retry:
    numRetries: 1
    perRetry: {timeout: 1s}
"""))
    started = time.time()
    r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
    assert r.choices[0].message.content == f"secondary answered {MODEL}"
    assert time.time() - started < 4
    assert_usage(gw, 11, 7)


def test_request_timeout_in_the_clients_shape(tmp_path, providers, gateway):
    primary = providers(hang(5, openai_echo("primary")), name="primary")
    gw = start(gateway, tmp_path, config([("primary", "OpenAI", primary.port, 0, "")],
                                         policy="  timeout: {http: {requestTimeout: 1s}}\n"))
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw).chat.completions.create(model=MODEL, messages=USER)
    assert e.value.status_code == 504
    assert e.value.body["code"] == "upstream_timeout"


# --- Everything fails


@pytest.mark.parametrize("schema", ["OpenAI", "Anthropic"])
def test_all_backends_down_is_a_503_in_the_clients_shape(tmp_path, gateway, schema):
    gw = start(gateway, tmp_path, config([
        ("primary", schema, free_port(), 0, ""),
        ("secondary", schema, free_port(), 1, ""),
    ]))
    if schema == "OpenAI":
        with pytest.raises(openai.APIStatusError) as e:
            oai(gw).chat.completions.create(model=MODEL, messages=USER)
        assert e.value.body["code"] == "upstream_unavailable"
    else:
        with pytest.raises(anthropic.APIStatusError) as e:
            claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER)
        assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "api_error"
    assert e.value.status_code == 503
    assert PROVIDER_KEY not in json.dumps(e.value.body) and "127.0.0.1" not in json.dumps(e.value.body)
    assert "URX" in last_log(gw)["response_flags"] or "UF" in last_log(gw)["response_flags"]


def test_all_backends_500_is_the_last_upstream_answer(tmp_path, providers, gateway):
    primary = providers(status(500), name="primary")
    secondary = providers(status(502), name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ]))
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw).chat.completions.create(model=MODEL, messages=USER)
    assert e.value.status_code == 502
    assert e.value.body["message"] == "provider failed with 502"
    assert len(primary.requests) == 1 and len(secondary.requests) == 1


# --- 429 with retry-after: out of rotation for that long


def test_429_fails_over_to_the_next_priority(tmp_path, providers, gateway):
    primary = providers(status(429, {"retry-after": "3"}), name="primary")
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ]))
    for _ in range(3):
        r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
        assert r.choices[0].message.content == f"secondary answered {MODEL}"
    assert len(secondary.requests) == 3
    assert_usage(gw, 11, 7)
    # Out of rotation while it cools down: the primary got the first request
    # only; later attempts reached it as an empty GET / (no prompt, no
    # credential) that Envoy retries on the secondary.
    assert [(q.method, q.path) for q in primary.requests] == [("POST", "/v1/chat/completions")] + [("GET", "/")] * 2
    for q in primary.requests[1:]:
        assert q.body == b"" and "authorization" not in {k.lower() for k in q.headers}


def test_429_everywhere_answers_locally_until_retry_after(tmp_path, providers, gateway):
    """Every backend asked to slow down: no provider is called again until
    the first retry-after is over; the client gets 429 and the time left."""
    a = providers(status(429, {"retry-after": "30"}), name="a")
    b = providers(status(429, {"retry-after": "2"}), name="b")
    gw = start(gateway, tmp_path, config([
        ("a", "OpenAI", a.port, 0, ""),
        ("b", "OpenAI", b.port, 1, ""),
    ]))
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as e:
            oai(gw).chat.completions.create(model=MODEL, messages=USER)
        assert 1 <= int(e.value.response.headers["retry-after"]) <= 2
    assert e.value.body["code"] == "rate_limit_exceeded"
    assert (len(a.requests), len(b.requests)) == (1, 1)
    with pytest.raises(anthropic.APIStatusError) as e:
        claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER)
    assert e.value.status_code == 429 and e.value.body["type"] == "error"
    time.sleep(2.2)
    b.respond = openai_echo("b")
    r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
    assert r.choices[0].message.content == f"b answered {MODEL}"
    # a is still cooling but b is not, so the request went on: a was called
    # (Envoy does not retry an upstream filter's local answer) and the retry
    # policy failed over to b.
    assert (len(a.requests), len(b.requests)) == (2, 2)


# --- Streams: held until the first content event, so early failures fail over


def sse(events):
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]


ROLE_CHUNK = {"id": "c0", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
WORD_CHUNK = {"id": "c0", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
              "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]}


def error_first(request):
    return 200, {"content-type": "text/event-stream"}, sse(
        [ROLE_CHUNK, {"error": {"message": "overloaded", "type": "server_error"}}])


def stall_before_first_event(request):
    def chunks():
        yield b": connected\n\n"
        time.sleep(5)
        yield from sse([WORD_CHUNK])
    return 200, {"content-type": "text/event-stream"}, chunks()


def cut_before_first_event(request):
    def chunks():
        yield sse([ROLE_CHUNK])[0]
        raise ConnectionAbortedError("cut")
    return 200, {"content-type": "text/event-stream"}, chunks()


def cut_after_content(request):
    def chunks():
        yield from sse([ROLE_CHUNK, WORD_CHUNK])
        time.sleep(0.2)
        raise ConnectionAbortedError("cut")
    return 200, {"content-type": "text/event-stream"}, chunks()


@pytest.mark.parametrize("failure", ["error_first", "stall", "cut_before_first_event"])
def test_stream_failing_before_its_first_token_fails_over(tmp_path, providers, gateway, failure):
    respond = {"error_first": error_first, "stall": stall_before_first_event,
               "cut_before_first_event": cut_before_first_event}[failure]
    primary = providers(respond, name="primary")
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ], policy="""  retry:
    numRetries: 1
    retryOn: {triggers: [connect-failure, reset, retriable-status-codes], httpStatusCodes: [502, 503]}
    perRetry: {timeout: 2s}
"""))
    started = time.time()
    chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"secondary answered {MODEL}"
    assert "partial" not in text
    assert time.time() - started < 4.5
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert_usage(gw, 11, 7)


@pytest.mark.parametrize("direct", [True, False])
def test_stream_error_first_with_no_backend_left_is_an_error_in_the_clients_shape(
        tmp_path, providers, gateway, direct):
    only = providers(error_first, name="only")
    text = config([("only", "OpenAI", only.port, 0, "")])
    gw = gateway([write_yaml(tmp_path, "gw.yaml", text)], extra_args=[] if direct else ["--no-direct"])
    with pytest.raises(openai.APIStatusError) as e:
        list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert e.value.status_code == 502
    assert e.value.body["code"] == "upstream_response_error"
    if direct:
        # The listener's filter serves a rule with one backend itself: a
        # broken answer is the client's 502 at once, with no retry.
        assert len(only.requests) == 1
    else:
        # Through the upstream role the 502 is an attempt's: the default
        # policy retried once.
        assert len(only.requests) == 2


def test_stream_cut_after_content_is_not_retried(tmp_path, providers, gateway):
    primary = providers(cut_after_content, name="primary")
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ]))
    received = []
    with pytest.raises(openai.APIError):
        for c in oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True):
            received.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(received) == "partial"
    assert len(secondary.requests) == 0


def stops_after_content(request):
    """Ends the body cleanly but without a finish reason or [DONE]."""
    return 200, {"content-type": "text/event-stream"}, sse([ROLE_CHUNK, WORD_CHUNK])


def test_stream_that_just_stops_ends_with_an_error_event(tmp_path, providers, gateway):
    primary = providers(stops_after_content, name="primary")
    gw = start(gateway, tmp_path, config([("primary", "OpenAI", primary.port, 0, "")]))
    received = []
    with pytest.raises(openai.APIError) as e:
        for c in oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True):
            received.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(received) == "partial"
    assert "ended before the answer was complete" in str(e.value)


def test_anthropic_stream_that_just_stops_ends_with_an_error_event(tmp_path, providers, gateway):
    def stops(request):
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": "partial"}})]
        body = [f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events]
        return 200, {"content-type": "text/event-stream"}, body
    primary = providers(stops, name="primary")
    gw = start(gateway, tmp_path, config([("primary", "Anthropic", primary.port, 0, "")]))
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0)
    text = []
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(model=MODEL, max_tokens=16, messages=USER) as stream:
            for piece in stream.text_stream:
                text.append(piece)
    assert "".join(text) == "partial"
    assert "ended before the answer was complete" in str(e.value)


def stalls_after_content(request):
    def chunks():
        yield from sse([ROLE_CHUNK, WORD_CHUNK])
        time.sleep(4)
        yield from sse([{**WORD_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
        yield b"data: [DONE]\n\n"
    return 200, {"content-type": "text/event-stream"}, chunks()


def test_stream_idle_timeout_of_the_client_traffic_policy(tmp_path, providers, gateway):
    primary = providers(stalls_after_content, name="primary")
    text = config([("primary", "OpenAI", primary.port, 0, "")]) + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: client}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  timeout: {http: {streamIdleTimeout: 1s}}
"""
    gw = start(gateway, tmp_path, text)
    received, began = [], time.time()
    with pytest.raises(openai.APIError):
        for c in oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True):
            received.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(received) == "partial"
    assert time.time() - began < 3.5, "the stream must be cut after 1 s without data, not wait for the provider"
    idle = [int(v) for k, v in counters(gw.admin).items() if k.endswith("downstream_rq_idle_timeout")]
    assert sum(idle) >= 1


# --- A 200 whose body is not what the API promises


def malformed(request):
    return 200, {"content-type": "application/json"}, b'{"choices": [{"message": '


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_body_fails_over(tmp_path, providers, gateway, stream):
    primary = providers(malformed, name="primary")
    secondary = providers(name="secondary")
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("secondary", "OpenAI", secondary.port, 1, ""),
    ], policy="""  retry:
    retryOn: {triggers: [connect-failure, reset], httpStatusCodes: [502]}
"""))
    if stream:
        # A JSON answer to a stream request is checked the same way.
        chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = oai(gw).chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
    assert text == f"secondary answered {MODEL}"
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert_usage(gw, 11, 7)


def test_malformed_body_everywhere_is_a_502_in_the_clients_shape(tmp_path, providers, gateway):
    only = providers(malformed, name="only")
    gw = start(gateway, tmp_path, config([("only", "Anthropic", only.port, 0, "")]))
    with pytest.raises(anthropic.APIStatusError) as e:
        claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER)
    assert e.value.status_code == 502
    assert e.value.body["type"] == "error" and "not valid JSON" in e.value.body["error"]["message"]


# --- The OpenAI API on an OpenAI primary, failing over to Claude on Bedrock
# (InvokeModel) or to Bedrock Converse: translated and signed anew


@pytest.mark.parametrize("schema,model_id,action", [
    ("AWSAnthropic", "anthropic.claude-3-haiku-20240307-v1:0", "invoke"),
    ("AWSBedrock", "amazon.nova-pro-v1:0", "converse"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_500_fails_over_to_bedrock_in_the_openai_shape(
        tmp_path, providers, gateway, bedrock, tls, schema, model_id, action, stream):
    primary = providers(status(500), name="primary")
    fake = bedrock(usage=(13, 8))
    gw = start(gateway, tmp_path, config([
        ("primary", "OpenAI", primary.port, 0, ""),
        ("bedrock", schema, 0, 1, f", modelNameOverride: {json.dumps(model_id)}"),
    ]), fake, tls)
    if stream:
        chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        r = oai(gw).chat.completions.create(model=MODEL, messages=USER)
        text = r.choices[0].message.content
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (13, 8)
    assert text == "Hello from Bedrock"
    assert len(primary.requests) == 1 and len(fake.requests) == 1
    assert primary.requests[0].path == "/v1/chat/completions"
    assert primary.requests[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert fake.signature_checks == [(True, "ok")]
    sent = fake.requests[0]
    suffix = {"invoke": "invoke-with-response-stream", "converse": "converse-stream"}[action] if stream else action
    assert sent.path == f"/model/{model_id.replace(':', '%3A')}/{suffix}"
    assert PROVIDER_KEY not in json.dumps(sent.headers) and CLIENT_KEY not in json.dumps(sent.headers)
    assert_usage(gw, 13, 8)


# --- A rule switching between the upstream role and direct serving


def test_a_rule_switching_to_and_from_direct_serving_never_leaks_the_clients_key(
        tmp_path, providers, gateway):
    """A rule that loses its second backend becomes one the listener's filter
    serves directly (its cluster then runs no upstream role), and one that
    gains it goes back. Envoy applies clusters first, and connections opened
    before keep the old listener until they drain: no request in between may
    reach a provider untranslated, with the client's key."""
    import collections
    import threading
    primary = providers(name="primary")
    secondary = providers(name="secondary")
    two = config([("primary", "OpenAI", primary.port, 0, ""),
                  ("secondary", "OpenAI", secondary.port, 1, "")])
    one = config([("primary", "OpenAI", primary.port, 0, "")])
    path = tmp_path / "gw.yaml"
    path.write_text(two)
    gw = gateway([str(path)])
    stop = threading.Event()
    outcomes = []

    def load(client):
        while not stop.is_set():
            try:
                client.chat.completions.create(model=MODEL, messages=USER)
                outcomes.append(200)
            except openai.APIStatusError as e:
                outcomes.append(e.status_code)

    clients = [oai(gw) for _ in range(4)]  # keep their connections open across the changes
    threads = [threading.Thread(target=load, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        for version, text in enumerate([one, two, one], start=2):
            time.sleep(0.5)
            path.write_text(text)
            gw.wait_for_version(version)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    sent = primary.requests + secondary.requests
    assert outcomes.count(200) >= 20 and len(sent) >= 20, outcomes
    for r in sent:
        assert r.headers.get("authorization") == f"Bearer {PROVIDER_KEY}", r.headers
        assert "x-aigw-endpoint" not in r.headers and "x-aigw-direct" not in r.headers
        assert CLIENT_KEY not in json.dumps(r.headers)
    # A request caught between two configurations may find no route (404),
    # a cluster that is gone or a rule that no longer matches how it was
    # written (503): never a provider's answer to the wrong request. Envoy
    # closes a replaced listener's connections after their next answer
    # (aigw starts it with --drain-strategy immediate): the failures are a
    # few per change, and every client is served again right after.
    assert set(outcomes) <= {200, 404, 503}, sorted(set(outcomes))
    assert outcomes.count(200) > 0.8 * len(outcomes), collections.Counter(outcomes)
    for client in clients:
        assert client.chat.completions.create(model=MODEL, messages=USER).choices
