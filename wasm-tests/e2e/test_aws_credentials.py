"""AWSCredentials without static keys: aigw takes expiring credentials from
the environment's web identity (STS AssumeRoleWithWebIdentity) or container
credentials endpoint (EKS Pod Identity), refreshes them before they expire,
and the fake Bedrock (SigV4 checked with botocore) sees the new keys and
session tokens with no failed request."""
import time

import anthropic
import pytest

from fake_aws_credentials import FakeContainerCredentials, FakeSts, Issuer, RotatingBedrock
from fake_bedrock import HOST, make_test_ca
from test_bedrock import MODEL, SEED_FILES

ROLE = "arn:aws:iam::123456789012:role/aigw-bedrock"
NO_STATIC_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
                  "AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ROLE_ARN": "",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ""}
LIFETIME = 6


@pytest.fixture
def closing():
    made = []
    yield made.append
    for m in made:
        m.close()


def run_requests(gw, fake, seconds, between=None):
    """Anthropic SDK requests (JSON and stream) for `seconds`; all must succeed."""
    claude = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="client", max_retries=0)
    deadline, n = time.time() + seconds, 0
    while time.time() < deadline:
        r = claude.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        assert r.content[0].text == "Hello from Bedrock"
        with claude.messages.stream(model=MODEL, max_tokens=16,
                                    messages=[{"role": "user", "content": "hi"}]) as s:
            assert "".join(s.text_stream) == "Hello from Bedrock"
        n += 1
        if between:
            between(n)
        time.sleep(0.3)
    assert all(ok for ok, _ in fake.signature_checks), [c for c in fake.signature_checks if not c[0]]
    used = list(dict.fromkeys(fake.used))
    return used


def check_no_leak(gw, issuer):
    out, dump = gw.output(), gw.config_dump()
    with open(gw.work + "/access.log") as f:
        access = f.read()
    for value in issuer.secret_values():
        assert value not in out and value not in dump and value not in access


def test_web_identity_credentials_are_refreshed(tmp_path, gateway, closing):
    cert = make_test_ca(str(tmp_path))
    issuer = Issuer(LIFETIME)
    token_file = tmp_path / "web-identity-token"
    token_file.write_text("eyJ.first-token.sig\n")
    sts = FakeSts(issuer, ROLE, "eyJ.first-token.sig")
    fake = RotatingBedrock(cert[1], cert[2], issuer)
    closing(sts)
    closing(fake)
    env = {**NO_STATIC_KEYS, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ROLE_ARN": ROLE,
           "AWS_ROLE_SESSION_NAME": "aigw-test", "AWS_REGION": "us-west-2",
           "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{sts.port}"}
    gw = gateway(SEED_FILES, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"],
                 extra_args=["--extra-ca", cert[0], "--credential-ttl", "1"], env=env)
    assert len(issuer.order) == 1, "minted before the first request"

    def rotate_token_file(n):
        # The kubelet rotates the projected token; later calls must send the new one.
        if n == 5:
            token_file.write_text("eyJ.second-token.sig")
            sts.expected_token = "eyJ.second-token.sig"

    used = run_requests(gw, fake, 14, between=rotate_token_file)
    assert len(used) >= 3, (used, issuer.order)
    assert used == [k for k in issuer.order if k in used], "keys used in the order issued"
    assert {c["RoleSessionName"] for c in sts.calls} == {"aigw-test"}
    assert sts.calls[-1]["WebIdentityToken"] == "eyJ.second-token.sig"
    sent = fake.requests[-1]
    creds, _ = issuer.lookup(fake.used[-1])
    assert sent.headers["x-amz-security-token"] == creds.token
    check_no_leak(gw, issuer)


def test_container_credentials_are_refreshed(tmp_path, gateway, closing):
    cert = make_test_ca(str(tmp_path))
    issuer = Issuer(LIFETIME)
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-token\n")
    endpoint = FakeContainerCredentials(issuer, "pod-identity-token")
    fake = RotatingBedrock(cert[1], cert[2], issuer)
    closing(endpoint)
    closing(fake)
    env = {**NO_STATIC_KEYS,
           "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{endpoint.port}/v1/credentials",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file)}
    gw = gateway(SEED_FILES, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"],
                 extra_args=["--extra-ca", cert[0], "--credential-ttl", "1"], env=env)
    used = run_requests(gw, fake, 12)
    assert len(used) >= 3, (used, issuer.order)
    check_no_leak(gw, issuer)


def test_sts_refusal_is_reported_and_requests_fail_clearly(tmp_path, gateway, closing):
    cert = make_test_ca(str(tmp_path))
    issuer = Issuer(3600)
    token_file = tmp_path / "token"
    token_file.write_text("not-the-right-token")
    sts = FakeSts(issuer, ROLE, "eyJ.expected")
    fake = RotatingBedrock(cert[1], cert[2], issuer)
    closing(sts)
    closing(fake)
    env = {**NO_STATIC_KEYS, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ROLE_ARN": ROLE,
           "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{sts.port}"}
    gw = gateway(SEED_FILES, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"],
                 extra_args=["--extra-ca", cert[0]], env=env)
    claude = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="client", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert "credential" in e.value.body["error"]["message"]
    assert not fake.requests
    assert "STS AssumeRoleWithWebIdentity answered 400: InvalidIdentityToken (Incorrect token audience)" in gw.output()


def test_oidc_exchange_token(tmp_path, gateway, closing):
    """awsCredentials.oidcExchangeToken: a client-credentials ID token from an
    OIDC provider, exchanged with STS AssumeRoleWithWebIdentity."""
    from fake_oidc import FakeOidcProvider
    cert = make_test_ca(str(tmp_path))
    issuer = Issuer(LIFETIME)
    idp = FakeOidcProvider("aigw", "oidc-client-secret", audience="sts.amazonaws.com")
    # Any ID token the provider issued is a valid web identity here.
    sts = FakeSts(issuer, "arn:aws:iam::123456789012:role/oidc", None, accept=idp.valid)
    fake = RotatingBedrock(cert[1], cert[2], issuer)
    for m in (idp, sts, fake):
        closing(m)
    with open(SEED_FILES[1]) as f:
        backends = f.read()
    policy = f"""  awsCredentials:
    region: us-west-2
    oidcExchangeToken:
      awsRoleArn: arn:aws:iam::123456789012:role/oidc
      aud: sts.amazonaws.com
      oidc:
        provider: {{issuer: "{idp.issuer}", tokenEndpoint: "{idp.issuer}/oauth2/token"}}
        clientID: aigw
        clientSecret: {{name: oidc-client}}
---
apiVersion: v1
kind: Secret
metadata: {{name: oidc-client, namespace: default}}
stringData: {{client-secret: oidc-client-secret}}
"""
    assert "  awsCredentials:\n    region: us-west-2\n" in backends
    path = tmp_path / "model-backends.yaml"
    path.write_text(backends.replace("  awsCredentials:\n    region: us-west-2\n", policy))
    files = [SEED_FILES[0], str(path), SEED_FILES[2]]
    env = {**NO_STATIC_KEYS, "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{sts.port}"}
    gw = gateway(files, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"],
                 extra_args=["--extra-ca", cert[0], "--credential-ttl", "1"], env=env)
    used = run_requests(gw, fake, 10)
    assert len(used) >= 2, (used, issuer.order)
    assert not idp.refused and idp.discoveries == 0
    assert all(c["RoleArn"] == "arn:aws:iam::123456789012:role/oidc" for c in sts.calls)
    check_no_leak(gw, issuer)
    assert "oidc-client-secret" not in gw.output() and "oidc-client-secret" not in gw.config_dump()
