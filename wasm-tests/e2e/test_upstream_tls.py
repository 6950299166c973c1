"""Upstream TLS: a provider on port 443 (or named by a BackendTLSPolicy) is
reached over TLS with SNI and certificate validation. A certificate that does
not validate is an error in the client's own shape, never plaintext."""
import json

import anthropic
import openai
import pytest

from conftest import write_yaml
from fake_bedrock import make_test_ca
from fakes import FakeProvider

HOST = "llm.provider.test"


def config(tls_policy=""):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: provider}}
spec:
  endpoints: [{{fqdn: {{hostname: {HOST}, port: 443}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: provider}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: provider, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: claude}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: provider, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]
    backendRefs: [{{name: provider}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: claude}}]}}]
    backendRefs: [{{name: claude}}]
{tls_policy}"""


@pytest.fixture
def ca(tmp_path):
    return make_test_ca(str(tmp_path), hostname=HOST)


@pytest.fixture
def tls_provider(ca):
    provider = FakeProvider(name="tls", tls=(ca[1], ca[2]))
    yield provider
    provider.close()


def start(tmp_path, gateway, provider, ca_file=None, tls_policy=""):
    extra = ["--extra-ca", ca_file] if ca_file else []
    return gateway([write_yaml(tmp_path, "gw.yaml", config(tls_policy))],
                   resolve=[f"{HOST}:443=127.0.0.1:{provider.port}"], extra_args=extra)


def chat(gw):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_valid_chain_works_with_sni(tmp_path, gateway, tls_provider, ca):
    gw = start(tmp_path, gateway, tls_provider, ca_file=ca[0])
    assert chat(gw).choices[0].message.content == "tls answered m"
    assert tls_provider.requests[-1].headers["host"] == HOST


def test_untrusted_ca_is_a_502_in_openai_shape(tmp_path, gateway, tls_provider):
    gw = start(tmp_path, gateway, tls_provider)
    with pytest.raises(openai.APIStatusError) as e:
        chat(gw)
    assert e.value.status_code == 502
    error = e.value.body
    assert error["code"] == "upstream_tls_error", error
    assert "certificate" in error["message"].lower(), error
    assert tls_provider.requests == [], "nothing may reach the provider in plaintext"


def test_untrusted_ca_is_a_502_in_anthropic_shape(tmp_path, gateway, tls_provider):
    gw = start(tmp_path, gateway, tls_provider)
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    body = e.value.response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "api_error"
    assert "certificate" in body["error"]["message"].lower()


def test_wrong_hostname_is_refused(tmp_path, gateway, tls_provider, ca):
    # The certificate is for HOST; the policy says the provider must prove
    # it is another name.
    policy = f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tls}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: provider}}]
  validation: {{wellKnownCACertificates: System, hostname: other.provider.test}}
"""
    gw = start(tmp_path, gateway, tls_provider, ca_file=ca[0], tls_policy=policy)
    with pytest.raises(openai.APIStatusError) as e:
        chat(gw)
    assert e.value.status_code == 502
    assert e.value.body["code"] == "upstream_tls_error"
    assert tls_provider.requests == []
