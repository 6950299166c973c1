"""Token budgets per user, end to end: the seed's rate-limiting YAML loaded
unchanged, aigw run with a real Envoy, our filter and a real Redis, the
official OpenAI SDK as the client."""
import os
import socket
import subprocess
import time

import openai
import pytest

from conftest import SHARED, free_port

BLUEPRINT = os.path.join(SHARED, "blueprint")
FILES = [os.path.join(BLUEPRINT, f) for f in (
    "gateway.yaml", "model-backends.yaml",
    "rate-limiting/ai-gateway-route.yaml", "rate-limiting/backend-traffic-policy.yaml")]
RULE = "rule-default/rate-limit-policy/{}"
# The fake provider reports 11 input, 7 output, 18 total tokens.
ONE_REQUEST = {RULE.format(0): 11, RULE.format(1): 7, RULE.format(2): 18}


@pytest.fixture
def redis_port():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def counters(port, user):
    """Rule key -> counter of this user's current windows, read from Redis."""
    keys = redis_cli(port, "--scan", "--pattern", f"aigw_*_x-user-id_{user}_*").split()
    return {key.split("_")[1]: int(redis_cli(port, "GET", key)) for key in keys}


def wait_for_counters(port, user, want, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = counters(port, user)
        if got == want:
            return got
        time.sleep(0.1)
    assert counters(port, user) == want


def test_token_budget_per_user(redis_port, providers, gateway):
    gpt_oss, qwen = providers(name="gpt-oss"), providers(name="qwen3")
    gw = gateway(FILES, resolve=[
        f"gpt-oss.default.svc.cluster.local:8000=127.0.0.1:{gpt_oss.port}",
        f"qwen3.default.svc.cluster.local:8000=127.0.0.1:{qwen.port}",
    ], extra_args=["--redis", f"redis://127.0.0.1:{redis_port}"])
    # The route's third rule names a backend that does not exist.
    assert "AIServiceBackend default/bedrock-aws does not exist" in gw.output()

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    ask = lambda user, model="openai/gpt-oss-20b": client.chat.completions.create(  # noqa: E731
        model=model, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-user-id": user} if user else None)

    # Alice's first request is within budget; its usage is charged when it completes.
    r = ask("alice")
    assert r.usage.prompt_tokens == 11 and r.usage.total_tokens == 18
    wait_for_counters(redis_port, "alice", ONE_REQUEST)

    # Input 11 >= 10 per hour: alice is refused, on any model, in OpenAI's error shape.
    served = len(gpt_oss.requests) + len(qwen.requests)
    with pytest.raises(openai.RateLimitError) as refused:
        ask("alice", model="Qwen/Qwen3-1.7B")
    body = refused.value.response.json()
    assert body["error"]["code"] == "rate_limit_exceeded", body
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert refused.value.response.headers.get("x-ratelimit-limit"), dict(refused.value.response.headers)
    assert len(gpt_oss.requests) + len(qwen.requests) == served, "a refused request must not reach a provider"

    # Bob has his own budget; a request without a user id is not limited.
    assert ask("bob", model="Qwen/Qwen3-1.7B").choices[0].message.content == "qwen3 answered Qwen/Qwen3-1.7B"
    assert ask(None).usage.total_tokens == 18
    wait_for_counters(redis_port, "bob", ONE_REQUEST)
    # A streamed answer is charged the same.
    chunks = list(client.chat.completions.create(
        model="openai/gpt-oss-20b", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-user-id": "carol"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    wait_for_counters(redis_port, "carol", ONE_REQUEST)
    # The refused request charged nothing.
    time.sleep(1.5)
    assert counters(redis_port, "alice") == ONE_REQUEST
    with pytest.raises(openai.RateLimitError):
        ask("bob")


ANTHROPIC_POLICY = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: per-user}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
        limit: {requests: 1, unit: Hour}
"""


def test_anthropic_clients_get_anthropic_shaped_429(tmp_path, providers, gateway):
    import anthropic
    from conftest import anthropic_config, write_yaml
    from test_anthropic import anthropic_fake

    fake = providers(anthropic_fake, name="anthropic")
    config = anthropic_config(fake.port, "sk-ant-provider") + ANTHROPIC_POLICY
    gw = gateway([write_yaml(tmp_path, "gw.yaml", config)])  # counters in memory
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="unused", max_retries=0)

    def ask(user, stream=False):
        kwargs = dict(model="claude-sonnet", max_tokens=64, extra_headers={"x-user-id": user},
                      messages=[{"role": "user", "content": "hi"}])
        if stream:
            with client.messages.stream(**kwargs) as s:
                return s.get_final_message()
        return client.messages.create(**kwargs)

    assert ask("alice").content[0].text
    served = len(fake.requests)
    for stream in (False, True):
        with pytest.raises(anthropic.RateLimitError) as refused:
            ask("alice", stream=stream)
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["type"] == "error", body
        assert body["error"]["type"] == "rate_limit_error", body
        assert "rate limit exceeded" in body["error"]["message"], body
        assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}, body
        assert response.headers["x-ratelimit-limit"].startswith("1"), dict(response.headers)
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(response.headers["x-ratelimit-reset"]) <= 3600
    assert len(fake.requests) == served, "a refused request must not reach the provider"
    # Another user is unaffected, streamed too.
    assert ask("bob", stream=True).content[0].text
    # The OpenAI endpoint of the same gateway keeps OpenAI's shape.
    client_openai = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        client_openai.chat.completions.create(
            model="claude-sonnet", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-user-id": "alice"})
    assert refused.value.response.json()["error"]["code"] == "rate_limit_exceeded"


def test_source_cidr_and_shadow_rules(tmp_path, providers, gateway):
    from conftest import basic_config, write_yaml

    fake = providers(name="fake")

    def config(cidr):
        return basic_config(fake.port, extra=f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: by-address}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{{sourceCIDR: {{type: Distinct, value: {cidr}}}}}]
        limit: {{requests: 2, unit: Hour}}
      - limit: {{requests: 1, unit: Hour}}
        shadowMode: true
""")

    # Loopback clients are not in 10.0.0.0/8: never limited; the shadow rule
    # (1 per hour) counts them but refuses nothing.
    path = write_yaml(tmp_path, "gw.yaml", config("10.0.0.0/8"))
    gw = gateway([path])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    ask = lambda: client.chat.completions.create(  # noqa: E731
        model="test-model", messages=[{"role": "user", "content": "hi"}])
    for _ in range(4):
        assert ask().choices[0].message.content
    # In range: 2 per hour for this address, then 429.
    with open(path, "w") as f:
        f.write(config("127.0.0.0/8"))
    gw.wait_for_version(2)
    ask()
    ask()
    with pytest.raises(openai.RateLimitError):
        ask()
