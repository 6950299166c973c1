"""JWT with a remote JWKS end to end (issue 9): the key set is served over
HTTPS by a fake identity provider (test CA, verified by Envoy), tokens are
signed by test keys; the `sub` claim becomes the rate-limit identity.
`remoteJWKS.cacheDuration` is short here, so a rotated key is picked up."""
import json
import socket
import threading
import time

import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import basic_config, write_yaml
from fake_bedrock import make_test_ca
from fakes import FakeProvider
from test_client_auth import jwks, sign
from test_openai import post

IDP = "idp.test"
ISSUER = "https://issuer.test"
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


class FakeJwks:
    """Serves `keys` (a JWKS JSON text) at /keys.json over HTTPS; counts fetches."""

    def __init__(self, tls, keys):
        self.keys = keys
        self.fetches = 0
        self.lock = threading.Lock()

        def respond(request):
            assert request.path == "/keys.json", request.path
            with self.lock:
                self.fetches += 1
                return 200, {"content-type": "application/json"}, self.keys.encode()

        self.server = FakeProvider(respond, name="idp", tls=tls)
        self.port = self.server.port

    def rotate(self, keys):
        with self.lock:
            self.keys = keys

    def close(self):
        self.server.close()


def policy(cache):
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: jwt}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  jwt:
    providers:
    - name: idp
      issuer: {ISSUER}
      audiences: [aigw]
      remoteJWKS: {{uri: 'https://{IDP}/keys.json', cacheDuration: {cache}}}
      claimToHeaders: [{{header: x-user-id, claim: sub}}]
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
def setup(tmp_path, providers, gateway):
    ca, cert, key = make_test_ca(str(tmp_path), hostname=IDP)
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp = FakeJwks((cert, key), jwks(first, kid="k1"))
    provider = providers(name="alpha")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(
        provider.port, api_key="sk-provider-secret", extra=policy("2s")))],
        resolve=[f"{IDP}:443=127.0.0.1:{idp.port}"], extra_args=["--extra-ca", ca])
    wait_for_listener(gw.port)
    yield idp, first, provider, gw
    idp.close()


def wait_for_listener(port, timeout=15):
    """Envoy keeps a listener whose remote JWKS is not fetched yet warming
    (not accepting connections): aigw may report it before it accepts."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def claims(**overrides):
    now = int(time.time())
    return {"iss": ISSUER, "aud": "aigw", "sub": "dana", "exp": now + 600, **overrides}


def test_remote_jwks_tokens_and_identity(setup):
    idp, key, provider, gw = setup
    url = gw.url + "/v1/chat/completions"
    assert idp.fetches >= 1, "fetched over TLS (the fake only speaks HTTPS) when the listener started"

    def call(token, headers=None):
        return post(url, CHAT, {"authorization": f"Bearer {token}", **(headers or {})})

    # Expired, another audience, another issuer: refused in OpenAI's shape.
    now = int(time.time())
    for bad in (claims(exp=now - 600), claims(aud="other"), claims(iss="https://evil.test")):
        status, _, body = call(sign(key, bad, kid="k1"))
        assert status in (401, 403), (bad, status, body)
        assert json.loads(body)["error"]["code"] in ("invalid_api_key", "permission_denied"), body
    assert provider.requests == []

    # Valid: the sub claim is the identity, whatever the client claims; the
    # token does not reach the provider. Dana's budget is 2 requests.
    token = sign(key, claims(), kid="k1")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
    for forged in ("erin", "frank"):
        r = client.chat.completions.create(**CHAT, extra_headers={"x-user-id": forged})
        assert r.choices[0].message.content == "alpha answered test-model"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT, extra_headers={"x-user-id": "gina"})
    for sent in provider.requests:
        assert sent.headers["x-user-id"] == "dana"
        assert sent.headers["authorization"] == "Bearer sk-provider-secret"
        assert token not in json.dumps(sent.headers) + sent.body.decode()
    # Another subject has its own budget.
    status, _, body = call(sign(key, claims(sub="erin"), kid="k1"))
    assert status == 200, body
    assert provider.requests[-1].headers["x-user-id"] == "erin"


def test_remote_jwks_key_rotation(setup):
    idp, first, provider, gw = setup
    url = gw.url + "/v1/chat/completions"
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old_token = sign(first, claims(sub="old"), kid="k1")
    new_token = sign(second, claims(sub="new"), kid="k2")
    status, _, _ = post(url, CHAT, {"authorization": f"Bearer {new_token}"})
    assert status == 401, "the new key is not published yet"
    status, _, _ = post(url, CHAT, {"authorization": f"Bearer {old_token}"})
    assert status == 200

    # The identity provider rotates to the new key only; within the cache
    # duration (2 s) plus slack, Envoy accepts the new key and drops the old.
    fetches = idp.fetches
    idp.rotate(jwks(second, kid="k2"))
    deadline = time.time() + 15
    accepted = None
    while time.time() < deadline:
        status, _, _ = post(url, CHAT, {"authorization": f"Bearer {new_token}"})
        if status == 200:
            accepted = time.time()
            break
        time.sleep(0.25)
    assert accepted, f"a token of the rotated key was not accepted (JWKS fetched {idp.fetches - fetches} more times)"
    assert idp.fetches > fetches
    assert provider.requests[-1].headers["x-user-id"] == "new"
    status, _, body = post(url, CHAT, {"authorization": f"Bearer {old_token}"})
    assert status == 401, body


def test_local_jwks_from_a_config_map(tmp_path, providers, gateway):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider = providers(name="alpha")
    extra = f"""
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: idp-keys}}
data:
  jwks: '{jwks(key, kid="k1")}'
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: jwt}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  jwt:
    providers:
    - name: local
      issuer: {ISSUER}
      localJWKS: {{type: ValueRef, valueRef: {{group: '', kind: ConfigMap, name: idp-keys}}}}
      claimToHeaders: [{{header: x-user-id, claim: sub}}]
"""
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, extra=extra))])
    url = gw.url + "/v1/chat/completions"
    status, _, body = post(url, CHAT, {"authorization": f"Bearer {sign(key, claims(), kid='k1')}"})
    assert status == 200, body
    assert provider.requests[-1].headers["x-user-id"] == "dana"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, _, body = post(url, CHAT, {"authorization": f"Bearer {sign(other, claims(), kid='k1')}"})
    assert status == 401, body
    assert len(provider.requests) == 1
