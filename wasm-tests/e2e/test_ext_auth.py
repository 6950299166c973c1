"""External authorization end to end (issue 9): SecurityPolicy `extAuth`
through aigw run and a real Envoy (envoy.filters.http.ext_authz) to fake
HTTP and gRPC authorization services (fake_ext_auth.py) in front of a fake
provider. Refusals come in the client's API shape; the identity the service
returns feeds the per-user rate limit, whatever the client claims."""
import json

import openai
import pytest

from conftest import basic_config, free_port, write_yaml
from fake_ext_auth import FakeGrpcAuth, FakeHttpAuth
from test_openai import post

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"model": "test-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

PER_USER_LIMIT = """
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
        limit: {requests: 2, unit: Hour}
"""


def http_policy(auth_port, fail_open=False):
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: authz}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {auth_port}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: ext-auth}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  extAuth:
    failOpen: {str(fail_open).lower()}
    timeout: 2s
    headersToExtAuth: [x-team]
    http:
      backendRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: authz}}]
      path: /authz
      headersToBackend: [x-user-id]
"""


def assert_error(status, body, want_status, code=None, anthropic_type=None):
    assert status == want_status, (status, body)
    text = body.decode()
    assert "secret-detail" not in text, "the auth service's body is replaced"
    error = json.loads(text)
    if anthropic_type:
        assert error["type"] == "error" and error["error"]["type"] == anthropic_type, error
    else:
        assert error["error"]["code"] == code, error
    return error


@pytest.fixture
def http_auth():
    auth = FakeHttpAuth()
    yield auth
    auth.close()


def test_http_ext_auth_allows_refuses_and_owns_the_identity(tmp_path, providers, gateway, http_auth):
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(
        provider.port, api_key="sk-provider-secret", extra=http_policy(http_auth.port) + PER_USER_LIMIT))])
    url = gw.url + "/v1/chat/completions"

    # No credential: the service answers 401; the client gets it in OpenAI's shape.
    status, headers, body = post(url, CHAT, {"x-team": "blue", "x-private": "p"})
    assert_error(status, body, 401, "invalid_api_key")
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers.get("www-authenticate") == "Bearer realm=aigw", "the service's challenge is kept"
    assert headers["content-type"] == "application/json"
    check = http_auth.requests[-1]
    assert check.path == "/authz/v1/chat/completions" and check.method == "POST"
    assert check.headers["x-team"] == "blue", "headersToExtAuth reach the service"
    assert "x-private" not in check.headers, "other headers do not"
    # Refused with 403, and both refusals on the Anthropic endpoint in Anthropic's shape.
    status, _, body = post(url, CHAT, {"authorization": "Bearer forbidden-eve"})
    assert_error(status, body, 403, "permission_denied")
    status, _, body = post(gw.url + "/anthropic/v1/messages", ANTHROPIC)
    assert_error(status, body, 401, anthropic_type="authentication_error")
    status, _, body = post(gw.url + "/anthropic/v1/messages", ANTHROPIC,
                           {"x-api-key": "whatever", "authorization": "Bearer forbidden-eve"})
    assert_error(status, body, 403, anthropic_type="permission_error")
    # Another refusal status is kept, with the gateway's message.
    status, _, body = post(url, CHAT, {"authorization": "Bearer throttled-eve"})
    error = assert_error(status, body, 429, "permission_denied")
    assert "authorization service refused" in error["error"]["message"]
    assert provider.requests == []

    # Allowed (the official SDK sends Authorization: Bearer <api_key>). Alice
    # claims to be bob: the service's x-user-id overwrites it.
    alice = openai.OpenAI(base_url=gw.url + "/v1", api_key="team-alice", max_retries=0)
    forged = {"x-user-id": "bob"}
    r = alice.chat.completions.create(**CHAT, extra_headers=forged)
    assert r.choices[0].message.content == "alpha answered test-model"
    assert http_auth.requests[-1].headers["authorization"] == "Bearer team-alice"
    sent = provider.requests[-1]
    assert sent.headers["x-user-id"] == "alice"
    assert sent.headers["authorization"] == "Bearer sk-provider-secret"
    assert "x-not-forwarded" not in sent.headers, "only headersToBackend are copied"
    assert "team-alice" not in json.dumps(sent.headers) + sent.body.decode(), \
        "the gateway credential never reaches the provider"
    # Her budget is 2 requests, counted under her own identity.
    alice.chat.completions.create(**CHAT, extra_headers={"x-user-id": "carol"})
    with pytest.raises(openai.RateLimitError):
        alice.chat.completions.create(**CHAT, extra_headers=forged)
    assert [r.headers["x-user-id"] for r in provider.requests] == ["alice", "alice"]
    # Bob's budget was not touched by the forgeries.
    bob = openai.OpenAI(base_url=gw.url + "/v1", api_key="team-bob", max_retries=0)
    assert bob.chat.completions.create(**CHAT).choices[0].message.content
    assert provider.requests[-1].headers["x-user-id"] == "bob"
    # Nine requests so far: five refused, three of alice's, bob's.
    assert gw.access_log(9)[-1]["user_id"] == "bob"


def test_http_ext_auth_service_over_tls(tmp_path, providers, gateway):
    """An authorization service on port 443 is called over TLS, verified
    against the configured CAs; one with an untrusted certificate is
    unavailable (503), never called in plaintext."""
    from fake_bedrock import make_test_ca
    ca, cert, key = make_test_ca(str(tmp_path), hostname="authz.test")
    auth = FakeHttpAuth(tls=(cert, key))
    try:
        provider = providers(name="alpha")
        policy = http_policy(0).replace("ip: {address: 127.0.0.1, port: 0}", "fqdn: {hostname: authz.test, port: 443}")
        config = write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, extra=policy))
        resolve = [f"authz.test:443=127.0.0.1:{auth.port}"]
        gw = gateway([config], resolve=resolve, extra_args=["--extra-ca", ca])
        url = gw.url + "/v1/chat/completions"
        status, _, body = post(url, CHAT, {"authorization": "Bearer team-alice"})
        assert status == 200, body
        assert provider.requests[-1].headers["x-user-id"] == "alice"
        status, _, body = post(url, CHAT)
        assert_error(status, body, 401, "invalid_api_key")
        assert len(auth.requests) == 2
        # Without the test CA the certificate does not validate.
        untrusted = gateway([config], resolve=resolve)
        status, _, body = post(untrusted.url + "/v1/chat/completions", CHAT, {"authorization": "Bearer team-alice"})
        assert_error(status, body, 503, "auth_service_unavailable")
        assert len(auth.requests) == 2 and len(provider.requests) == 1
    finally:
        auth.close()


def test_http_ext_auth_unavailable_fails_closed_or_open(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    dead = free_port()  # nothing listens here
    path = write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, extra=http_policy(dead)))
    gw = gateway([path])
    url = gw.url + "/v1/chat/completions"
    # Fail closed: 503 in the client's shape, the provider is not called.
    status, _, body = post(url, CHAT, {"authorization": "Bearer team-alice"})
    assert_error(status, body, 503, "auth_service_unavailable")
    status, _, body = post(gw.url + "/anthropic/v1/messages", ANTHROPIC, {"authorization": "Bearer team-alice"})
    assert_error(status, body, 503, anthropic_type="api_error")
    # A service that answers 5xx is unavailable too (not a refusal).
    broken = FakeHttpAuth(status_override=500)
    try:
        with open(path, "w") as f:
            f.write(basic_config(provider.port, extra=http_policy(broken.port)))
        gw.wait_for_version(2)
        status, _, body = post(url, CHAT, {"authorization": "Bearer team-alice"})
        assert_error(status, body, 503, "auth_service_unavailable")
        assert len(broken.requests) == 1
    finally:
        broken.close()
    assert provider.requests == []

    # failOpen: the request goes through unchecked; still without the
    # client's credential, and without a client-claimed identity.
    with open(path, "w") as f:
        f.write(basic_config(provider.port, extra=http_policy(dead, fail_open=True)))
    gw.wait_for_version(3)
    status, _, body = post(url, CHAT, {"authorization": "Bearer team-alice", "x-user-id": "bob"})
    assert status == 200, body
    sent = provider.requests[-1]
    assert "authorization" not in sent.headers and "x-user-id" not in sent.headers, sent.headers


ROUTE_GRPC_POLICY = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: grpc-auth}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: route}}]
  extAuth:
    bodyToExtAuth: {{maxRequestBytes: 65536}}
    grpc:
      backendRefs: [{{name: authz, port: {port}}}]
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


def test_grpc_ext_auth_on_a_route(tmp_path, providers, gateway):
    auth = FakeGrpcAuth()
    try:
        provider = providers(name="alpha")
        gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(
            provider.port, api_key="sk-provider-secret",
            extra=ROUTE_GRPC_POLICY.format(port=auth.port) + PER_USER_LIMIT))],
            resolve=[f"authz.default.svc.cluster.local:{auth.port}=127.0.0.1:{auth.port}"])
        url = gw.url + "/v1/chat/completions"
        # The route that is not targeted is not checked.
        status, _, body = post(url, {**CHAT, "model": "open-model"})
        assert status == 200, body
        assert auth.requests == []
        # The targeted route: refusals in OpenAI's shape.
        status, _, body = post(url, CHAT)
        assert_error(status, body, 401, "invalid_api_key")
        status, _, body = post(url, CHAT, {"authorization": "Bearer forbidden-eve"})
        assert_error(status, body, 403, "permission_denied")
        # A client naming the unchecked route in its own header is still checked:
        # the route is the one the model in the body picks.
        status, _, body = post(url, CHAT, {"x-ai-eg-model": "open-model"})
        assert_error(status, body, 401, "invalid_api_key")
        assert len(auth.requests) == 3
        # Allowed: the service saw the client's headers and body; its x-user-id wins.
        status, _, body = post(url, CHAT, {"authorization": "Bearer team-dana", "x-user-id": "erin",
                                           "x-extra": "seen"})
        assert status == 200, body
        check = auth.requests[-1]
        assert check.headers["x-extra"] == "seen", "gRPC gets every header by default"
        assert json.loads(check.body)["model"] == "test-model", "bodyToExtAuth"
        sent = provider.requests[-1]
        assert sent.headers["x-user-id"] == "dana"
        assert sent.headers["authorization"] == "Bearer sk-provider-secret"
        assert "team-dana" not in json.dumps(sent.headers)
        post(url, CHAT, {"authorization": "Bearer team-dana", "x-user-id": "frank"})
        status, _, body = post(url, CHAT, {"authorization": "Bearer team-dana", "x-user-id": "gina"})
        assert_error(status, body, 429, "rate_limit_exceeded")
    finally:
        auth.close()


def test_grpc_ext_auth_over_tls(tmp_path, providers, gateway):
    """A gRPC authorization Service on port 443: TLS (verified, HTTP/2 by ALPN)."""
    from fake_bedrock import make_test_ca
    host = "authz.default.svc.cluster.local"
    ca, cert, key = make_test_ca(str(tmp_path), hostname=host)
    auth = FakeGrpcAuth(tls=(cert, key))
    try:
        provider = providers(name="alpha")
        policy = ROUTE_GRPC_POLICY.format(port=443)
        gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, extra=policy))],
                     resolve=[f"{host}:443=127.0.0.1:{auth.port}"], extra_args=["--extra-ca", ca])
        url = gw.url + "/v1/chat/completions"
        status, _, body = post(url, CHAT, {"authorization": "Bearer team-dana"})
        assert status == 200, body
        assert provider.requests[-1].headers["x-user-id"] == "dana"
        status, _, body = post(url, CHAT, {"authorization": "Bearer forbidden-eve"})
        assert_error(status, body, 403, "permission_denied")
        assert len(auth.requests) == 2
    finally:
        auth.close()
