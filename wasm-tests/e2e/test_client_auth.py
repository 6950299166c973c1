"""Client authentication end to end (issue 9): Envoy Gateway SecurityPolicy
(apiKeyAuth, jwt) through aigw run and a real Envoy, in front of a fake
provider; identities that feed the per-user rate limits cannot be forged."""
import base64
import json
import time

import openai
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import basic_config, write_yaml
from test_openai import post

ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-fedcba9876543210"
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}

API_KEY_POLICY = f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: client-keys}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  apiKeyAuth:
    credentialRefs: [{{kind: Secret, name: client-keys}}]
    extractFrom: [{{headers: [authorization, x-api-key]}}]
    forwardClientIDHeader: x-user-id
---
apiVersion: v1
kind: Secret
metadata: {{name: client-keys}}
stringData: {{alice: {ALICE_KEY}, bob: {BOB_KEY}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: per-user}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{{headers: [{{name: x-user-id, type: Distinct}}]}}]
        limit: {{requests: 2, unit: Hour}}
"""


@pytest.fixture
def api_key_gateway(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    config = write_yaml(tmp_path, "gw.yaml",
                        basic_config(provider.port, api_key="sk-provider-secret", extra=API_KEY_POLICY))
    return provider, gateway([config])


def assert_openai_401(status, body):
    assert status == 401, (status, body)
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error", error
    for secret in (ALICE_KEY, BOB_KEY, "alice", "bob"):
        assert secret not in error["message"]


def test_api_key_no_key_wrong_key_valid_key(api_key_gateway):
    provider, gw = api_key_gateway
    # No key, and a wrong key: 401 in OpenAI's shape; the provider sees nothing.
    status, _, body = post(gw.url + "/v1/chat/completions", CHAT)
    assert_openai_401(status, body)
    status, _, body = post(gw.url + "/v1/chat/completions", CHAT, {"authorization": "Bearer sk-wrong"})
    assert_openai_401(status, body)
    status, _, body = post(gw.url + "/v1/chat/completions", CHAT, {"x-api-key": ALICE_KEY + "x"})
    assert_openai_401(status, body)
    assert provider.requests == []
    # The Anthropic endpoint refuses in Anthropic's shape.
    status, _, body = post(gw.url + "/anthropic/v1/messages",
                           {"model": "test-model", "max_tokens": 8, "messages": []})
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error", body
    assert json.loads(body)["type"] == "error"

    # A valid key through the official SDK (Authorization: Bearer), and as x-api-key.
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    r = client.chat.completions.create(**CHAT)
    assert r.choices[0].message.content == "alpha answered test-model"
    status, _, _ = post(gw.url + "/v1/chat/completions", CHAT, {"x-api-key": BOB_KEY})
    assert status == 200
    # The provider got its own key and the authenticated identity, never the client's key.
    for sent, user in zip(provider.requests, ["alice", "bob"]):
        assert sent.headers["authorization"] == "Bearer sk-provider-secret"
        assert sent.headers.get("x-user-id") == user
        dumped = json.dumps(sent.headers) + sent.body.decode()
        assert ALICE_KEY not in dumped and BOB_KEY not in dumped
    # The access log names the identity.
    assert [e["user_id"] for e in gw.access_log(4)[-2:]] == ["alice", "bob"]
    # Envoy's config dump holds no client key (the field is redacted).
    dump = gw.config_dump()
    assert "envoy.filters.http.api_key_auth" in dump or "ApiKeyAuth" in dump
    assert ALICE_KEY not in dump and BOB_KEY not in dump
    assert "[redacted]" in dump


def test_forged_user_id_is_limited_under_own_identity(api_key_gateway):
    provider, gw = api_key_gateway
    alice = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    # Alice claims to be somebody else on every request; her budget is 2.
    forged = {"x-user-id": "bob"}
    for _ in range(2):
        alice.chat.completions.create(**CHAT, extra_headers=forged)
    with pytest.raises(openai.RateLimitError):
        alice.chat.completions.create(**CHAT, extra_headers=forged)
    with pytest.raises(openai.RateLimitError):
        alice.chat.completions.create(**CHAT, extra_headers={"x-user-id": "carol"})
    assert [r.headers.get("x-user-id") for r in provider.requests] == ["alice", "alice"]
    # Bob's budget was not touched by the forgeries.
    bob = openai.OpenAI(base_url=gw.url + "/v1", api_key=BOB_KEY, max_retries=0)
    assert bob.chat.completions.create(**CHAT).choices[0].message.content
    assert provider.requests[-1].headers.get("x-user-id") == "bob"


# --- JWT ------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key, claims, kid="test-key"):
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


def jwks(key, kid="test-key"):
    numbers = key.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
    return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                                 "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}]})


def test_jwt_local_jwks_on_the_route(tmp_path, providers, gateway):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider = providers(name="alpha")
    policy = f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: jwt}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: route}}]
  jwt:
    providers:
    - name: test
      issuer: https://issuer.test
      audiences: [aigw]
      localJWKS: {{type: Inline, inline: '{jwks(key)}'}}
      claimToHeaders: [{{header: x-user-id, claim: sub}}]
"""
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, api_key="sk-provider-secret",
                                                                extra=policy))])
    now = int(time.time())
    good = {"iss": "https://issuer.test", "aud": "aigw", "sub": "dana", "exp": now + 600}
    url = gw.url + "/v1/chat/completions"

    def call(token, headers=None):
        h = {"authorization": f"Bearer {token}"} if token else {}
        return post(url, CHAT, {**h, **(headers or {})})

    status, _, body = call(sign(key, good), {"x-user-id": "mallory"})
    assert status == 200, body
    sent = provider.requests[-1]
    assert sent.headers["x-user-id"] == "dana", "the JWT's sub, not the client's header"
    assert sent.headers["authorization"] == "Bearer sk-provider-secret"
    for claims in ({**good, "exp": now - 600}, {**good, "aud": "other"}, {**good, "iss": "https://evil.test"}):
        status, _, body = call(sign(key, claims))
        assert status in (401, 403), (claims, status, body)
        error = json.loads(body)["error"]
        assert error["code"] in ("invalid_api_key", "permission_denied"), error
    # A client cannot pick an unprotected route with its own x-ai-eg-model header.
    status, _, body = call(None, {"x-ai-eg-model": "no-such-model"})
    assert status == 401, body
    # Missing token, a token signed by another key, garbage.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (None, sign(other, good), "not-a-jwt"):
        status, _, body = call(token)
        assert status == 401, (token, status, body)
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert len(provider.requests) == 1


ROUTE_API_KEY_POLICY = f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: route-keys}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: route}}]
  apiKeyAuth:
    credentialRefs: [{{kind: Secret, name: client-keys}}]
    extractFrom: [{{headers: [authorization, x-api-key]}}]
    forwardClientIDHeader: x-user-id
---
apiVersion: v1
kind: Secret
metadata: {{name: client-keys}}
stringData: {{alice: {ALICE_KEY}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: open-route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: open-model}}]}}]
    backendRefs: [{{name: backend}}]
"""


def test_api_key_on_a_route(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, api_key="sk-provider-secret",
                                                                extra=ROUTE_API_KEY_POLICY))])
    url = gw.url + "/v1/chat/completions"
    # The other route needs no key.
    status, _, body = post(url, {**CHAT, "model": "open-model"})
    assert status == 200, body
    # The targeted route does, whatever route the client names in its own header.
    status, _, body = post(url, CHAT)
    assert_openai_401(status, body)
    status, _, body = post(url, CHAT, {"x-ai-eg-model": "open-model"})
    assert_openai_401(status, body)
    status, _, body = post(url, CHAT, {"x-api-key": BOB_KEY})
    assert_openai_401(status, body)
    status, _, body = post(gw.url + "/anthropic/v1/messages",
                           {"model": "test-model", "max_tokens": 8, "messages": []})
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error", body
    assert len(provider.requests) == 1
    # With a key: the identity is the key's client, the key stays at the gateway.
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    client.chat.completions.create(**CHAT, extra_headers={"x-user-id": "mallory"})
    sent = provider.requests[-1]
    assert sent.headers["x-user-id"] == "alice"
    assert sent.headers["authorization"] == "Bearer sk-provider-secret"
    assert ALICE_KEY not in json.dumps(sent.headers) + sent.body.decode()
