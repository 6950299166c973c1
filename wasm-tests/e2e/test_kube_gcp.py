"""Kubernetes mode with a GCPCredentials policy: `aigw controller` reads the
service-account key from a Secret that arrives through the (fake) API
server, mints an access token at the fake Google OAuth endpoint and the
filter sends it to a fake Vertex AI (Claude, GCPAnthropic)."""
import base64
import json

from fake_gcp import TEXT, FakeGoogleOAuth, vertex_anthropic
from test_kube import AI, EG, GW, cluster, obj, wait_until  # noqa: F401 (fixture)
from test_openai import post

MODEL = "claude-kube"


def test_controller_mints_gcp_tokens(cluster):  # noqa: F811
    api, provider, url, output = cluster
    oauth = FakeGoogleOAuth()
    try:
        provider.respond = vertex_anthropic(oauth)
        api.put(GW + "gateways", obj("gateway.networking.k8s.io/v1", "Gateway", "gw",
                                     {"gatewayClassName": "aigw",
                                      "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}))
        api.put(EG + "backends", obj("gateway.envoyproxy.io/v1alpha1", "Backend", "vertex",
                                     {"endpoints": [{"ip": {"address": "127.0.0.1", "port": provider.port}}]}))
        api.put(AI + "aiservicebackends", obj("aigateway.envoyproxy.io/v1alpha1", "AIServiceBackend", "claude",
                                              {"schema": {"name": "GCPAnthropic"},
                                               "backendRef": {"name": "vertex", "kind": "Backend",
                                                              "group": "gateway.envoyproxy.io"}}))
        api.put(AI + "backendsecuritypolicies", obj(
            "aigateway.envoyproxy.io/v1alpha1", "BackendSecurityPolicy", "gcp",
            {"targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "claude"}],
             "type": "GCPCredentials",
             "gcpCredentials": {"projectName": "test-project", "region": "us-east5",
                                "credentialsFile": {"secretRef": {"name": "gcp-sa"}}}}))
        api.put(AI + "aigatewayroutes", obj(
            "aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", "route",
            {"parentRefs": [{"name": "gw"}],
             "rules": [{"matches": [{"headers": [{"name": "x-ai-eg-model", "value": MODEL}]}],
                        "backendRefs": [{"name": "claude"}]}]}))
        api.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                    "metadata": {"name": "gcp-sa", "namespace": "default"},
                                    "data": {"service_account.json": base64.b64encode(
                                        oauth.service_account_json().encode()).decode()}})

        def answered():
            try:
                status, _, body = post(url + "/anthropic/v1/messages",
                                       {"model": MODEL, "max_tokens": 8,
                                        "messages": [{"role": "user", "content": "hi"}]})
            except OSError:
                return None
            return body if status == 200 else None
        body = wait_until(answered, "a Claude answer through Vertex", output, timeout=30)
        assert json.loads(body)["content"][0]["text"] == TEXT
        token = oauth.tokens()[0]
        assert provider.requests[-1].headers["authorization"] == f"Bearer {token}"
        assert len(oauth.issued) == 1
        assert "credential default/gcp: obtained" in output()
        assert token not in output()
    finally:
        oauth.close()
