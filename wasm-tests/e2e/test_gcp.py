"""Claude on Vertex AI (GCPAnthropic) with a GCPCredentials policy: aigw
mints access tokens from a service-account key at a fake Google OAuth
endpoint (which verifies the JWT's RS256 signature), refreshes them before
they expire, and the filter sends them to a fake Vertex AI, driven by the
official Anthropic and OpenAI SDKs."""
import json
import time

import anthropic
import openai
import pytest

from conftest import write_yaml
from fake_gcp import TEXT, FakeGoogleOAuth, FakeGoogleSts, vertex_anthropic
from fake_oidc import FakeOidcProvider
from yaml_builders import ai_service_backend, envoy_backend, fqdn, gateway, route, security_policy

MODEL = "claude-sonnet-4@20250514"
HOST = "us-east5-aiplatform.googleapis.com"


def config(oauth):
    """The gateway with a service-account key (from `oauth`) in a Secret."""
    return gcp_config("    credentialsFile: {secretRef: {name: gcp-sa}}", oauth.secret_yaml("gcp-sa"))


def gcp_config(credentials, extra):
    return (gateway()
            + envoy_backend("vertex", fqdn(HOST, 80))
            + ai_service_backend("claude-vertex", "GCPAnthropic", backend="vertex")
            + security_policy("gcp", "claude-vertex", "GCPCredentials",
                              f"gcpCredentials:\n    projectName: test-project\n    region: us-east5\n{credentials}")
            + f"---\n{extra}\n"
            + route("route", {MODEL: "claude-vertex"}))


@pytest.fixture
def oauth():
    made = []

    def make(**kwargs):
        o = FakeGoogleOAuth(**kwargs)
        made.append(o)
        return o

    yield make
    for o in made:
        o.close()


def start(tmp_path, providers, gateway, oauth):
    vertex = providers(vertex_anthropic(oauth, host=HOST), name="vertex")
    gw = gateway([write_yaml(tmp_path, "gcp.yaml", config(oauth))],
                 resolve=[f"{HOST}:80=127.0.0.1:{vertex.port}"], extra_args=["--credential-ttl", "1"])
    return vertex, gw


def clients(gw):
    return (anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0),
            openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0))


def one_of_each(claude, oai):
    """One request per API and mode; every one must succeed."""
    m = claude.messages.create(model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == TEXT and m.usage.output_tokens == 5
    with claude.messages.stream(model=MODEL, max_tokens=32,
                                messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == TEXT
    c = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content == TEXT and c.usage.completion_tokens == 5
    chunks = oai.chat.completions.create(model=MODEL, stream=True,
                                         messages=[{"role": "user", "content": "hi"}])
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == TEXT


def test_tokens_are_minted_refreshed_and_never_leak(tmp_path, providers, gateway, oauth):
    o = oauth(expires_in=6)
    vertex, gw = start(tmp_path, providers, gateway, o)
    claude, oai = clients(gw)
    # Minted before the first request: the first one already succeeds.
    assert len(o.issued) == 1
    deadline = time.time() + 14
    rounds = 0
    while time.time() < deadline:
        one_of_each(claude, oai)
        rounds += 1
        time.sleep(0.3)
    used = []
    for r in vertex.requests:
        token = r.headers["authorization"][len("Bearer "):]
        if token not in used:
            used.append(token)
    # 14 s of 6-second tokens refreshed at half life: at least 3 tokens in use,
    # in the order they were issued, and no request failed (asserted above).
    assert len(used) >= 3, (used, o.tokens())
    assert used == [t for t in o.tokens() if t in used]
    assert not o.rejected

    sent = vertex.requests[0]
    assert sent.path == f"/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/{MODEL}:rawPredict"
    assert sent.headers["host"] == HOST
    assert "client-key" not in json.dumps(sent.headers)
    assert "anthropic-version" not in sent.headers
    assert sent.json()["anthropic_version"] == "vertex-2023-10-16"
    assert any(r.path.endswith(":streamRawPredict") and r.json()["stream"] is True for r in vertex.requests)

    log = gw.access_log(count=4 * rounds)
    assert {e.get("backend") for e in log} == {"default/claude-vertex"}
    assert all(int(e["output_tokens"]) == 5 for e in log if e.get("output_tokens"))
    out, dump = gw.output(), gw.config_dump()
    with open(gw.work + "/access.log") as f:
        access = f.read()
    for token in o.tokens():
        assert token not in out and token not in access and token not in dump
    key_body = o.private_key_pem().splitlines()[1]
    assert key_body not in out and key_body not in dump
    assert "credential default/gcp: obtained" in out


def test_token_endpoint_failure_is_a_clear_error_then_recovers(tmp_path, providers, gateway, oauth):
    o = oauth(expires_in=3600)
    o.failing = (503, {"error": "backendError", "error_description": "The service is unavailable."})
    vertex, gw = start(tmp_path, providers, gateway, o)
    claude, oai = clients(gw)

    began = time.time()
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert e.value.body["type"] == "error"
    assert "credential" in e.value.body["error"]["message"]
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert e.value.body["code"] == "upstream_credentials_unavailable"
    assert time.time() - began < 5, "an error, not a hang"
    assert not vertex.requests, "nothing reaches the provider without a token"
    assert "token endpoint answered 503: backendError (The service is unavailable.)" in gw.output()

    o.failing = None
    deadline = time.time() + 20
    while True:
        try:
            one_of_each(claude, oai)
            break
        except (anthropic.APIStatusError, openai.APIStatusError) as err:
            assert err.status_code == 503
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert len(o.issued) == 1
    assert time.time() - began < 25


def test_a_key_the_token_endpoint_rejects_is_reported(tmp_path, providers, gateway, oauth):
    from cryptography.hazmat.primitives.asymmetric import rsa
    o = oauth()
    vertex = providers(vertex_anthropic(o, host=HOST), name="vertex")
    path = write_yaml(tmp_path, "gcp.yaml", config(o))
    # Google no longer knows the key in the Secret (deleted or rotated).
    o.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gw = gateway([path], resolve=[f"{HOST}:80=127.0.0.1:{vertex.port}"])
    claude, _ = clients(gw)
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert o.rejected and o.rejected[0] == "Invalid JWT Signature."
    assert "invalid_grant (Invalid JWT Signature.)" in gw.output()


def test_reload_keeps_the_minted_token(tmp_path, providers, gateway, oauth):
    o = oauth(expires_in=3600)
    vertex = providers(vertex_anthropic(o, host=HOST), name="vertex")
    path = write_yaml(tmp_path, "gcp.yaml", config(o))
    gw = gateway([path], resolve=[f"{HOST}:80=127.0.0.1:{vertex.port}"], extra_args=["--credential-ttl", "1"])
    claude, oai = clients(gw)
    one_of_each(claude, oai)
    # An edit elsewhere in the configuration: the source of the token is the
    # same, so nothing is minted again and requests keep working.
    with open(path, "a") as f:
        f.write("\n# edited\n")
    gw.wait_for_version(2)
    one_of_each(claude, oai)
    assert len(o.issued) == 1 and o.requests == 1
    # A changed key file is a new source: a new token, used from then on.
    o2 = oauth(expires_in=3600)
    vertex.respond = vertex_anthropic(o2, host=HOST)
    with open(path, "w") as f:
        f.write(config(o2))
    gw.wait_for_version(3)
    deadline = time.time() + 10
    while len(o2.issued) < 1 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    one_of_each(claude, oai)
    assert len(o2.issued) == 1


WIF = """    workloadIdentityFederationConfig:
      projectID: "123456789"
      workloadIdentityPoolName: aigw-pool
      workloadIdentityProviderName: aigw-provider
      serviceAccountImpersonation: {serviceAccountName: vertex-caller}
      oidcExchangeToken:
        oidc:
          provider: {issuer: "%s"}
          clientID: aigw
          clientSecret: {name: idp-client}
          scopes: [openid]"""
IDP_SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: idp-client}\nstringData: {client-secret: idp-secret-value}\n"


def test_workload_identity_federation_with_impersonation(tmp_path, providers, gateway):
    idp = FakeOidcProvider("aigw", "idp-secret-value", scope="openid")
    sts = FakeGoogleSts(idp, "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools"
                             "/aigw-pool/providers/aigw-provider",
                        service_account="vertex-caller@123456789.iam.gserviceaccount.com", expires_in=6)
    try:
        vertex = providers(vertex_anthropic(sts, host=HOST), name="vertex")
        path = write_yaml(tmp_path, "gcp.yaml", gcp_config(WIF % idp.issuer, IDP_SECRET))
        gw = gateway([path], resolve=[f"{HOST}:80=127.0.0.1:{vertex.port}"], extra_args=["--credential-ttl", "1"],
                     env={"AIGW_GCP_STS_ENDPOINT": sts.url, "AIGW_GCP_IAM_CREDENTIALS_ENDPOINT": sts.url})
        claude, oai = clients(gw)
        deadline = time.time() + 10
        while time.time() < deadline:
            one_of_each(claude, oai)
            time.sleep(0.3)
        used = list(dict.fromkeys(r.headers["authorization"][len("Bearer "):] for r in vertex.requests))
        assert len(used) >= 2, (used, sts.tokens())
        assert all(t.startswith("ya29.impersonated-") for t in used)
        assert idp.discoveries >= 1 and not idp.refused and not sts.refused
        out, dump = gw.output(), gw.config_dump()
        for secret in ["idp-secret-value", *idp.issued, *sts.tokens(), *(t for t, _ in sts.federated)]:
            assert secret not in out and secret not in dump
    finally:
        idp.close()
        sts.close()


def test_workload_identity_federation_refused_is_reported(tmp_path, providers, gateway):
    idp = FakeOidcProvider("aigw", "a-different-secret")
    sts = FakeGoogleSts(idp, "//iam.googleapis.com/x")
    try:
        vertex = providers(vertex_anthropic(sts, host=HOST), name="vertex")
        path = write_yaml(tmp_path, "gcp.yaml", gcp_config(WIF % idp.issuer, IDP_SECRET))
        gw = gateway([path], resolve=[f"{HOST}:80=127.0.0.1:{vertex.port}"],
                     env={"AIGW_GCP_STS_ENDPOINT": sts.url, "AIGW_GCP_IAM_CREDENTIALS_ENDPOINT": sts.url})
        claude, _ = clients(gw)
        with pytest.raises(anthropic.APIStatusError) as e:
            claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503
        assert "the OIDC token endpoint answered 401: invalid_client (Client authentication failed)" in gw.output()
        assert "a-different-secret" not in gw.output() and "idp-secret-value" not in gw.output()
    finally:
        idp.close()
        sts.close()


def test_token_endpoint_over_https_checks_the_certificate(tmp_path, providers, gateway):
    """HTTPS to the token endpoint verifies the server against the system
    roots (here: SSL_CERT_FILE names a test CA, as rustls-native-certs
    reads it); an untrusted certificate is refused."""
    from fake_bedrock import make_test_ca
    ca, cert, key = make_test_ca(str(tmp_path), hostname="localhost")
    o = FakeGoogleOAuth(tls=(cert, key))
    try:
        assert o.token_uri.startswith("https://localhost:")
        vertex = providers(vertex_anthropic(o, host=HOST), name="vertex")
        path = write_yaml(tmp_path, "gcp.yaml", config(o))
        resolve = [f"{HOST}:80=127.0.0.1:{vertex.port}"]
        gw = gateway([path], resolve=resolve, env={"SSL_CERT_FILE": ca})
        claude, oai = clients(gw)
        one_of_each(claude, oai)
        assert len(o.issued) == 1
        (tmp_path / "other").mkdir()
        other_ca = make_test_ca(str(tmp_path / "other"), hostname="localhost")[0]
        gw2 = gateway([path], resolve=resolve, env={"SSL_CERT_FILE": other_ca})
        assert len(o.issued) == 1
        out = gw2.output()
        assert "credential default/gcp: cannot obtain it: cannot reach https://localhost" in out
        assert "invalid peer certificate" in out, out
    finally:
        o.close()
