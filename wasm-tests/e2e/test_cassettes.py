"""Every recorded OpenAI exchange that the gateway's endpoints cover, replayed
by a fake provider and requested through the gateway: the client receives
the provider's body unchanged and the usage is counted exactly."""
import glob
import json
import os
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import SHARED, write_yaml

CASSETTES = os.path.join(SHARED, "conformance", "openai-cassettes")
COVERED = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


def load_cassettes():
    found = []
    for path in sorted(glob.glob(os.path.join(CASSETTES, "*.yaml"))):
        with open(path) as f:
            doc = yaml.safe_load(f)
        for i, it in enumerate(doc["interactions"]):
            url = it["request"]["url"]
            route = "/" + url.split("://", 1)[1].split("/", 1)[1]
            if route in COVERED:
                found.append((f"{os.path.basename(path)}#{i}", route, it))
    return found


ALL = load_cassettes()


def test_cassettes_are_there():
    # 19 chat, 9 completions, 10 embeddings interactions at the pinned commit.
    assert len(ALL) >= 35, f"only {len(ALL)} cassettes found in {CASSETTES}"


def expected_usage(interaction):
    body = interaction["response"]["body"]
    ctype = " ".join(interaction["response"]["headers"].get("Content-Type", [""]))
    usage = None
    if "event-stream" in ctype:
        for line in body.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
    else:
        try:
            usage = json.loads(body).get("usage")
        except ValueError:
            usage = None
    return usage


def replay(request):
    name = request.headers.get("x-cassette")
    interaction = dict((n, it) for n, _, it in ALL)[name]
    response = interaction["response"]
    headers = {}
    for k, v in response["headers"].items():
        if k.lower() in ("content-type",):
            headers[k] = v[0]
    body = response["body"].encode()
    if "event-stream" in headers.get("Content-Type", ""):
        # Arbitrary chunk boundaries, as a real provider's writes land.
        return response["code"], headers, [body[i:i + 97] for i in range(0, len(body), 97)]
    return response["code"], headers, body


@pytest.fixture(scope="module")
def replaying_gateway(tmp_path_factory):
    from conftest import Gateway
    from fakes import FakeProvider
    provider = FakeProvider(replay, "replay")
    models = sorted({json.loads(it["request"]["body"])["model"] for _, _, it in ALL})
    rules = "\n".join(
        f"  - matches: [{{headers: [{{name: x-ai-eg-model, value: {json.dumps(m)}}}]}}]\n"
        f"    backendRefs: [{{name: replay}}]" for m in models)
    text = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: replay}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {provider.port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: replay}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: replay, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: cassettes}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}
"""
    path = write_yaml(tmp_path_factory.mktemp("cassettes"), "gw.yaml", text)
    gw = Gateway([path])
    yield gw
    gw.close()
    provider.close()


@pytest.mark.parametrize("name,route,interaction", ALL, ids=[n for n, _, _ in ALL])
def test_replay(replaying_gateway, name, route, interaction):
    gw = replaying_gateway
    # One access log line per request: wait for this request's own line.
    gw.sent = getattr(gw, "sent", 0) + 1
    request = urllib.request.Request(
        gw.url + route, data=interaction["request"]["body"].encode(), method="POST",
        headers={"content-type": "application/json", "x-cassette": name})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status == interaction["response"]["code"]
    assert body.decode() == interaction["response"]["body"]
    log = gw.access_log(count=gw.sent)[gw.sent - 1]
    usage = expected_usage(interaction)
    if usage and status == 200:
        assert log["input_tokens"] == str(usage.get("prompt_tokens", 0))
        assert log["output_tokens"] == str(usage.get("completion_tokens", 0))
        assert log["total_tokens"] == str(usage["total_tokens"])
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        assert log["cached_input_tokens"] == str(cached)
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
        assert log["reasoning_tokens"] == str(reasoning)
    else:
        assert log["total_tokens"] in (None, "-")
