"""Passive health checks (Envoy outlier detection) and circuit breakers of a
BackendTrafficPolicy, through a real Envoy, fake providers and the official
SDKs: a backend that keeps failing is taken out of rotation for its ejection
time and comes back once it recovers; requests over the circuit breaker's
limit get a 503 in the client's own API shape and the gateway serves the
next request normally."""
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest

from conftest import write_yaml
from fake_entra import FakeEntra
from fakes import anthropic_sse, openai_echo
import yaml_builders as yb

MODEL = "m"
USER = [{"role": "user", "content": "hi"}]

def openai_backend(name, port):
    return yb.backend(name, "OpenAI", yb.loopback(port))


def route(refs):
    """The AIGatewayRoute `route` for MODEL; refs: [(backend name, priority)]"""
    return yb.route("route", {MODEL: [{"name": n, "priority": p} for n, p in refs]})


def traffic_policy(spec):
    """A BackendTrafficPolicy on the route, the way Envoy AI Gateway users
    write it: the AIGatewayRoute's generated HTTPRoute has its name."""
    return f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: resilience}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: route}}]
{spec}"""


def failing(code):
    body = json.dumps({"error": {"message": f"provider failed with {code}", "type": "server_error"}}).encode()
    return lambda request: (code, {"content-type": "application/json"}, body)


def oai(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def claude(gw):
    return anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="unused", max_retries=0, timeout=20)


def admin_json(gw, path):
    with urllib.request.urlopen(gw.admin + path) as r:
        return json.loads(r.read())


def cluster_of(gw, port):
    """The Envoy cluster that has the endpoint 127.0.0.1:port, found at run
    time (cluster naming is the controller's business): its stats name and
    the endpoint's health as /clusters reports it."""
    for cluster in admin_json(gw, "/clusters?format=json").get("cluster_statuses", []):
        for host in cluster.get("host_statuses", []):
            address = host.get("address", {}).get("socket_address", {})
            if address.get("port_value") == port and address.get("address") == "127.0.0.1":
                return cluster.get("observability_name") or cluster["name"], host.get("health_status", {})
    raise AssertionError(f"no cluster has the endpoint 127.0.0.1:{port}")


def stat(gw, cluster, name):
    """One counter or gauge of a cluster (0 while Envoy has not made it)."""
    wanted = f"cluster.{cluster}.{name}"
    with urllib.request.urlopen(gw.admin + "/stats") as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == wanted and value.strip().isdigit():
                return int(value)
    return 0


def answered_by(gw):
    return oai(gw).chat.completions.create(model=MODEL, messages=USER).choices[0].message.content


# --- Passive health check: outlier detection


# Equal priorities: the ejected endpoint must leave its priority's
# rotation at once (the controller turns off Envoy's 1 s update merge
# window, which kept it in for up to a second after start-up).
@pytest.mark.parametrize("secondary_priority", [1, 0], ids=["fallback", "equal-priority"])
def test_failing_backend_is_ejected_for_its_ejection_time_then_serves_again(
        tmp_path, providers, gateway, secondary_priority):
    primary = providers(failing(500), name="primary")
    secondary = providers(name="secondary")
    text = yb.gateway() + openai_backend("primary", primary.port) + openai_backend("secondary", secondary.port) + route(
        [("primary", 0), ("secondary", secondary_priority)]) + traffic_policy("""  healthCheck:
    passive:
      consecutive5XxErrors: 2
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
""")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", text)])
    cluster, health = cluster_of(gw, primary.port)
    assert not health.get("failed_outlier_check"), health

    # A request that lands on the primary fails there and is retried on the
    # other backend (the default AI retry policy): the client only ever
    # sees 200s. (With equal priorities, about every other request lands on
    # the primary first.)
    for _ in range(16):
        assert answered_by(gw) == f"secondary answered {MODEL}"
        if stat(gw, cluster, "outlier_detection.ejections_enforced_total"):
            break
    ejected_at = time.time()
    assert stat(gw, cluster, "outlier_detection.ejections_enforced_consecutive_5xx") == 1
    assert len(primary.requests) == 2, "ejected after exactly consecutive5XxErrors failures"
    assert cluster_of(gw, primary.port)[1].get("failed_outlier_check") is True
    assert stat(gw, cluster, "outlier_detection.ejections_active") == 1

    # Ejected: the primary is not called at all, even though it comes back
    # right away (its answers would be 200 now).
    primary.respond = openai_echo("primary")
    for _ in range(5):
        assert answered_by(gw) == f"secondary answered {MODEL}"
    assert len(primary.requests) == 2
    assert time.time() - ejected_at < 2.5, "the checks above must run inside the 3 s ejection"

    # After baseEjectionTime (plus up to one interval) it gets traffic again.
    deadline = ejected_at + 8
    while (text := answered_by(gw)) != f"primary answered {MODEL}":
        assert text == f"secondary answered {MODEL}"
        assert time.time() < deadline, "the primary never came back"
        time.sleep(0.2)
    assert time.time() - ejected_at > 2.5, "back before its ejection time was over"
    assert stat(gw, cluster, "outlier_detection.ejections_active") == 0
    assert not cluster_of(gw, primary.port)[1].get("failed_outlier_check")
    answers = {answered_by(gw) for _ in range(4)}
    if secondary_priority == 1:
        assert answers == {f"primary answered {MODEL}"}, "back as the first choice"
    else:
        assert answers == {f"primary answered {MODEL}", f"secondary answered {MODEL}"}, "back in rotation"
    assert stat(gw, cluster, "outlier_detection.ejections_enforced_total") == 1


# --- Circuit breaker


def held_anthropic(release):
    """An Anthropic Messages backend that answers each request once
    `release` is set."""

    def respond(request):
        release.wait(15)
        body = request.json()
        events = [
            {"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "held answer"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
            {"type": "message_stop"},
        ]
        if body.get("stream"):
            return 200, {"content-type": "text/event-stream"}, anthropic_sse(events)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [{"type": "text", "text": "held answer"}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 5, "output_tokens": 2}}
        return 200, {"content-type": "application/json"}, json.dumps(message).encode()

    return respond


def test_requests_over_the_circuit_breaker_get_a_503_in_the_clients_shape(tmp_path, providers, gateway):
    release = threading.Event()
    slow = providers(held_anthropic(release), name="slow")
    text = yb.gateway() + yb.backend("slow", "Anthropic", yb.loopback(slow.port)) + route([("slow", 0)]) + traffic_policy(
        """  circuitBreaker:
    maxParallelRequests: 1
    maxPendingRequests: 1
""")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", text)])
    cluster, _ = cluster_of(gw, slow.port)
    pool = ThreadPoolExecutor(1)
    try:
        first = pool.submit(lambda: claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER))
        deadline = time.time() + 10
        while not slow.requests:
            assert time.time() < deadline and not first.done(), "the first request never reached the provider"
            time.sleep(0.05)
        assert stat(gw, cluster, "circuit_breakers.default.rq_open") == 1

        # One request is in flight, the limit: the next ones are refused at
        # once, in the API shape each client speaks, and never reach the provider.
        began = time.time()
        with pytest.raises(openai.APIStatusError) as e:
            oai(gw).chat.completions.create(model=MODEL, messages=USER)
        assert e.value.status_code == 503
        assert e.value.body["code"] == "upstream_overloaded", e.value.body
        assert "circuit breaker" in e.value.body["message"]
        with pytest.raises(openai.APIStatusError) as e:
            list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
        assert e.value.status_code == 503 and e.value.body["code"] == "upstream_overloaded"
        with pytest.raises(anthropic.APIStatusError) as e:
            claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER)
        assert e.value.status_code == 503
        assert e.value.body["type"] == "error"
        assert e.value.body["error"]["type"] == "overloaded_error", e.value.body
        assert "circuit breaker" in e.value.body["error"]["message"]
        assert time.time() - began < 3, "refused at once, not queued behind the held request"
        assert len(slow.requests) == 1
        # Envoy counts a maxParallelRequests (max_requests) refusal here.
        assert stat(gw, cluster, "upstream_rq_active_overflow") == 3
        flags = [entry["response_flags"] for entry in gw.access_log(3)[-3:]]
        assert all("UO" in f for f in flags), flags

        release.set()
        assert first.result(timeout=10).content[0].text == "held answer"
    finally:
        release.set()
        pool.shutdown()

    # The breaker closes with the request: both clients are served normally.
    assert oai(gw).chat.completions.create(model=MODEL, messages=USER).choices[0].message.content == "held answer"
    assert claude(gw).messages.create(model=MODEL, max_tokens=16, messages=USER).content[0].text == "held answer"
    assert stat(gw, cluster, "circuit_breakers.default.rq_open") == 0
    assert stat(gw, cluster, "upstream_rq_active_overflow") == 3
    assert len(slow.requests) == 3


# --- A backend whose credential is missing fails over like a failing one

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"


def azure_backends(names, port_of):
    """Azure OpenAI backends whose Entra ID token the controller mints at
    the fake Entra (AIGW_AZURE_AUTHORITY); while Entra refuses, the filter
    has no credential for them."""
    text = ""
    for name in names:
        text += yb.backend(name, "AzureOpenAI", yb.loopback(port_of[name]), version="2025-01-01-preview")
    targets = ", ".join(f"{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {n}}}" for n in names)
    return text + f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: entra}}
spec:
  targetRefs: [{targets}]
  type: AzureCredentials
  azureCredentials:
    clientID: {CLIENT_ID}
    tenantID: {TENANT}
    clientSecretRef: {{name: entra-app}}
---
apiVersion: v1
kind: Secret
metadata: {{name: entra-app}}
stringData: {{client-secret: entra-secret}}
"""


@pytest.fixture
def entra():
    fake = FakeEntra(TENANT, CLIENT_ID, client_secret="entra-secret")
    fake.failing = (503, {"error": "temporarily_unavailable", "error_description": "AADSTS90033: transient"})
    yield fake
    fake.close()


def start_with_entra(gateway, tmp_path, text, entra):
    return gateway([write_yaml(tmp_path, "gw.yaml", text)], extra_args=["--credential-ttl", "1"],
                   env={"AIGW_AZURE_AUTHORITY": entra.url})


def assert_told_nothing(fake):
    """What reached a backend without its credential: no prompt, no
    credential, not even the API path."""
    for sent in fake.requests:
        assert (sent.method, sent.path, sent.body) == ("GET", "/", b""), (sent.method, sent.path)
        for header in ("authorization", "api-key", "x-ai-eg-model", "content-type"):
            assert header not in sent.headers, sent.headers


@pytest.mark.parametrize("stream", [False, True])
def test_backend_without_its_credential_fails_over_to_the_next(tmp_path, providers, gateway, entra, stream):
    azure = providers(openai_echo("azure"), name="azure")
    secondary = providers(name="secondary")
    text = yb.gateway() + azure_backends(["azure"], {"azure": azure.port}) + openai_backend(
        "secondary", secondary.port) + route([("azure", 0), ("secondary", 1)])
    gw = start_with_entra(gateway, tmp_path, text, entra)

    def ask():
        if stream:
            chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return answered_by(gw)

    for _ in range(2):
        assert ask() == f"secondary answered {MODEL}"
    assert len(secondary.requests) == 2
    assert secondary.requests[-1].json()["messages"] == USER
    assert len(azure.requests) == 2
    assert_told_nothing(azure)
    assert "credential of backend default/azure is not available" in gw.output()

    # Once Entra answers again, the token is minted and the primary serves.
    entra.failing = None
    deadline = time.time() + 15
    while (answer := ask()) != f"azure answered {MODEL}":
        assert answer == f"secondary answered {MODEL}"
        assert time.time() < deadline, "the primary never got its credential"
        time.sleep(0.3)
    assert azure.requests[-1].headers["authorization"].startswith("Bearer ")


def test_every_backend_without_its_credential_is_a_503_in_the_clients_shape(tmp_path, providers, gateway, entra):
    a = providers(name="a")
    b = providers(name="b")
    text = yb.gateway() + azure_backends(["a", "b"], {"a": a.port, "b": b.port}) + route([("a", 0), ("b", 1)])
    gw = start_with_entra(gateway, tmp_path, text, entra)
    with pytest.raises(openai.APIStatusError) as e:
        answered_by(gw)
    assert e.value.status_code == 503
    assert e.value.body["code"] == "upstream_credentials_unavailable", e.value.body
    assert "credential" in e.value.body["message"]
    with pytest.raises(openai.APIStatusError) as e:
        list(oai(gw).chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert e.value.status_code == 503
    assert e.value.body["code"] == "upstream_credentials_unavailable", e.value.body
    # One attempt per backend and request: the default policy's one retry.
    assert (len(a.requests), len(b.requests)) == (2, 2)
    assert_told_nothing(a)
    assert_told_nothing(b)
