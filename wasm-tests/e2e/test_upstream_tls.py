"""Upstream TLS: a provider on port 443 (or named by a BackendTLSPolicy) is
reached over TLS with SNI and certificate validation. A certificate that does
not validate is an error in the client's own shape, never plaintext."""
import json
import os

import anthropic
import openai
import pytest

from conftest import write_yaml
from fake_bedrock import make_test_ca
from fakes import FakeProvider
from yaml_builders import ai_service_backend, backend, fqdn, gateway, route

HOST = "llm.provider.test"


def config(tls_policy=""):
    return (gateway()
            + backend("provider", "OpenAI", fqdn(HOST, 443))
            + ai_service_backend("claude", "Anthropic", backend="provider")
            + route("route", {"m": "provider", "claude": "claude"})
            + tls_policy)


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


def ca_config_map(name, pem_path):
    with open(pem_path) as f:
        pem = f.read()
    indented = "\n".join("    " + line for line in pem.strip().splitlines())
    return f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}}}
data:
  ca.crt: |
{indented}
"""


def ca_ref_policy(validation):
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tls}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: provider}}]
  validation: {validation}
"""


def test_ca_from_a_config_map_is_trusted(tmp_path, gateway, tls_provider, ca):
    policy = ca_ref_policy(f"{{caCertificateRefs: [{{group: '', kind: ConfigMap, name: provider-ca}}], hostname: {HOST}}}")
    gw = start(tmp_path, gateway, tls_provider, tls_policy=policy + ca_config_map("provider-ca", ca[0]))
    assert chat(gw).choices[0].message.content == "tls answered m"


def test_ca_from_a_config_map_is_the_only_trust(tmp_path, gateway, tls_provider, ca):
    # The provider's CA is in --extra-ca (system trust) but the policy names
    # another CA: the policy's CA alone decides.
    other = make_test_ca(str(tmp_path / "other") if (tmp_path / "other").mkdir() is None else "", hostname=HOST)
    policy = ca_ref_policy(f"{{caCertificateRefs: [{{kind: ConfigMap, name: other-ca}}], hostname: {HOST}}}")
    gw = start(tmp_path, gateway, tls_provider, ca_file=ca[0],
               tls_policy=policy + ca_config_map("other-ca", other[0]))
    with pytest.raises(openai.APIStatusError) as e:
        chat(gw)
    assert (e.value.status_code, e.value.body["code"]) == (502, "upstream_tls_error")
    assert tls_provider.requests == []


def test_subject_alt_names_decide_over_the_sni_hostname(tmp_path, gateway, tls_provider, ca):
    policy = ca_ref_policy(
        "{wellKnownCACertificates: System, hostname: sni.other.test, "
        f"subjectAltNames: [{{type: Hostname, hostname: {HOST}}}]}}")
    gw = start(tmp_path, gateway, tls_provider, ca_file=ca[0], tls_policy=policy)
    assert chat(gw).choices[0].message.content == "tls answered m"


def test_missing_config_map_is_a_config_error(tmp_path, gateway, tls_provider):
    policy = ca_ref_policy("{caCertificateRefs: [{kind: ConfigMap, name: nowhere}], hostname: x}")
    path = write_yaml(tmp_path, "gw.yaml", config(policy))
    import subprocess
    from conftest import AIGW
    out = subprocess.run([AIGW, "translate", "-f", path], capture_output=True, text=True)
    assert out.returncode == 1
    assert "ConfigMap default/nowhere does not exist" in out.stderr + out.stdout
    assert "spec.validation.caCertificateRefs[0].name" in out.stderr + out.stdout


class Http2Front:
    """A second, plain Envoy that terminates TLS for HOST with ALPN h2 and
    http/1.1 in front of a fake provider, logging the protocol each request
    came in with: a provider that offers HTTP/2."""

    def __init__(self, work, ca, provider_port):
        import subprocess
        import time
        from conftest import ENVOY, free_port
        self.port = free_port()
        self.log = os.path.join(work, "front-access.log")
        config = {
            "static_resources": {
                "listeners": [{
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
                    "filter_chains": [{
                        "transport_socket": {"name": "tls", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {
                                "alpn_protocols": ["h2", "http/1.1"],
                                "tls_certificates": [{"certificate_chain": {"filename": ca[1]},
                                                      "private_key": {"filename": ca[2]}}]}}},
                        "filters": [{"name": "hcm", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "front", "codec_type": "AUTO",
                            "access_log": [{"name": "file", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                "path": self.log, "log_format": {"text_format_source": {
                                    "inline_string": "%PROTOCOL% %REQ(:PATH)%\n"}}}}],
                            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                {"match": {"prefix": "/"}, "route": {"cluster": "provider"}}]}]},
                            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}],
                    }],
                }],
                "clusters": [{"name": "provider", "type": "STATIC", "connect_timeout": "5s",
                              "load_assignment": {"cluster_name": "provider", "endpoints": [{"lb_endpoints": [
                                  {"endpoint": {"address": {"socket_address": {
                                      "address": "127.0.0.1", "port_value": provider_port}}}}]}]}}],
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
        }
        path = os.path.join(work, "front.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.proc = subprocess.Popen([ENVOY, "-c", path, "--base-id", str(self.port),
                                      "--file-flush-interval-msec", "100", "-l", "error"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("front Envoy did not start")

    def protocols(self):
        import time
        time.sleep(0.5)
        with open(self.log) as f:
            return [line.split()[0] for line in f if line.strip()]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_http2_where_the_provider_offers_it(tmp_path, gateway, ca):
    provider = FakeProvider(name="h2")
    front = Http2Front(str(tmp_path), ca, provider.port)
    try:
        gw = start(tmp_path, gateway, front, ca_file=ca[0])
        assert chat(gw).choices[0].message.content == "h2 answered m"
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        chunks = list(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "h2 answered m"
        assert front.protocols() == ["HTTP/2", "HTTP/2"]
    finally:
        front.close()
        provider.close()
