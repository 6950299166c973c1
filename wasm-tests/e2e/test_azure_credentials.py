"""Azure OpenAI with an AzureCredentials policy: aigw mints Microsoft Entra ID
access tokens (client credentials grant, scope
https://cognitiveservices.azure.com/.default) at a fake Entra token endpoint
(AIGW_AZURE_AUTHORITY), with a client secret or with a federated OIDC token
as the client assertion, refreshes them before they expire, and the filter
sends `Authorization: Bearer <token>` to a fake Azure OpenAI that accepts
only live tokens; driven by the official OpenAI SDK."""
import json
import time

import openai
import pytest

from conftest import write_yaml
from fake_entra import ASSERTION_TYPE, SCOPE, FakeEntra
from fake_oidc import FakeOidcProvider
from test_azure import API_VERSION, azure_backend, azure_stream_chunks, recorded
from yaml_builders import route, security_policy

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"
CLIENT_SECRET = "entra-client-secret-must-stay-secret"
IDP_SECRET = "idp-secret-value-must-stay-secret"
AUDIENCE = "api://AzureADTokenExchange"
SECRET_AUTH = "    clientSecretRef: {name: entra-app}"
SECRET_DOC = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: entra-app}}\nstringData: {{client-secret: {CLIENT_SECRET}}}\n"
FEDERATED_AUTH = """    oidcExchangeToken:
      oidc:
        provider: {issuer: "%s"}
        clientID: aigw
        clientSecret: {name: idp-client}
      aud: "%s\""""
IDP_DOC = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: idp-client}}\nstringData: {{client-secret: {IDP_SECRET}}}\n"


def fake_azure(entra):
    """Azure OpenAI that wants a live Entra token, never an api-key."""
    def respond(request):
        path, _, query = request.path.partition("?")
        if "api-key" in request.headers or not entra.valid(request.headers.get("authorization")):
            return 401, {"content-type": "application/json"}, json.dumps({"error": {
                "code": "401", "message": "Unauthorized. Access token is missing, invalid, audience is "
                "incorrect (https://cognitiveservices.azure.com), or have expired."}}).encode()
        if query != f"api-version={API_VERSION}" or path != "/openai/deployments/gpt-5-nano/chat/completions":
            return 404, {"content-type": "application/json"}, b'{"error":{"code":"404","message":"Resource not found"}}'
        if request.json().get("stream"):
            return 200, {"content-type": "text/event-stream"}, azure_stream_chunks()
        return 200, {"content-type": "application/json"}, recorded()["response"]["body"].encode()
    return respond


def config(port, auth, extra):
    return (azure_backend(port)
            + security_policy("entra", "azure", "AzureCredentials",
                              f"azureCredentials:\n    clientID: {CLIENT_ID}\n    tenantID: {TENANT}\n{auth}")
            + f"---\n{extra}\n"
            + route("route", {"gpt-5-nano": "azure"}))


@pytest.fixture
def entra():
    made = []

    def make(**kwargs):
        e = FakeEntra(TENANT, CLIENT_ID, **kwargs)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def start(tmp_path, providers, gateway, e, auth=SECRET_AUTH, extra=SECRET_DOC):
    azure = providers(fake_azure(e), name="azure")
    gw = gateway([write_yaml(tmp_path, "azure.yaml", config(azure.port, auth, extra))],
                 extra_args=["--credential-ttl", "1"], env={"AIGW_AZURE_AUTHORITY": e.url})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key-must-not-leak", max_retries=0)
    return azure, gw, client


def chat_and_stream(client):
    r = client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "Hello!"}])
    assert r.choices[0].message.content.startswith("Hi there! How can I help today?")
    assert r.usage.total_tokens == 279
    chunks = client.chat.completions.create(model="gpt-5-nano", stream=True,
                                            messages=[{"role": "user", "content": "Hello!"}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there!"


def tokens_used(azure):
    return list(dict.fromkeys(r.headers["authorization"][len("Bearer "):] for r in azure.requests))


def assert_nothing_leaks(gw, secrets):
    out, dump = gw.output(), gw.config_dump()
    with open(gw.work + "/access.log") as f:
        access = f.read()
    for secret in secrets:
        assert secret not in out and secret not in dump and secret not in access


def test_client_secret_tokens_are_minted_refreshed_and_never_leak(tmp_path, providers, gateway, entra):
    e = entra(client_secret=CLIENT_SECRET, expires_in=6)
    azure, gw, client = start(tmp_path, providers, gateway, e)
    # Minted before Envoy starts: the first request already succeeds.
    assert len(e.issued) == 1
    deadline = time.time() + 14
    rounds = 0
    while time.time() < deadline:
        chat_and_stream(client)
        rounds += 1
        time.sleep(0.3)
    used = tokens_used(azure)
    # 14 s of 6-second tokens refreshed at half life: at least 3 in use, in
    # the order they were issued, and no request failed (asserted above).
    assert len(used) >= 3, (used, e.tokens())
    assert used == [t for t in e.tokens() if t in used]
    assert not e.refused
    assert all(f == {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": SCOPE,
                     "client_secret": CLIENT_SECRET} for f in e.forms)

    sent = azure.requests[0]
    assert sent.path == f"/openai/deployments/gpt-5-nano/chat/completions?api-version={API_VERSION}"
    assert "api-key" not in sent.headers
    assert "client-key-must-not-leak" not in json.dumps(sent.headers)
    log = gw.access_log(count=2 * rounds)
    assert {entry.get("backend") for entry in log} == {"default/azure"}
    assert_nothing_leaks(gw, [CLIENT_SECRET, *e.tokens()])
    assert "credential default/entra: obtained" in gw.output()


def test_federated_oidc_token_is_the_client_assertion(tmp_path, providers, gateway, entra):
    idp = FakeOidcProvider("aigw", IDP_SECRET, audience=AUDIENCE)
    try:
        e = entra(assertion_ok=idp.valid, expires_in=6)
        azure, gw, client = start(tmp_path, providers, gateway, e,
                                  auth=FEDERATED_AUTH % (idp.issuer, AUDIENCE), extra=IDP_DOC)
        deadline = time.time() + 9
        while time.time() < deadline:
            chat_and_stream(client)
            time.sleep(0.3)
        used = tokens_used(azure)
        assert len(used) >= 2, (used, e.tokens())
        assert not e.refused and not idp.refused and idp.discoveries >= 1
        assert all(f["client_assertion_type"] == ASSERTION_TYPE and idp.valid(f["client_assertion"])
                   and "client_secret" not in f and f["scope"] == SCOPE for f in e.forms)
        assert_nothing_leaks(gw, [IDP_SECRET, *idp.issued, *e.tokens()])
    finally:
        idp.close()


def test_token_endpoint_failure_is_a_clear_503_then_recovers(tmp_path, providers, gateway, entra):
    e = entra(client_secret=CLIENT_SECRET, expires_in=3600)
    e.failing = (503, {"error": "temporarily_unavailable",
                       "error_description": "AADSTS90033: A transient error has occurred."})
    azure, gw, client = start(tmp_path, providers, gateway, e)
    began = time.time()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503
    assert err.value.body["code"] == "upstream_credentials_unavailable"
    assert err.value.body["type"]
    assert "credential" in err.value.body["message"]
    assert time.time() - began < 5, "an error, not a hang"
    assert not azure.requests, "nothing reaches Azure without a token"
    assert ("the Microsoft Entra ID token endpoint answered 503: temporarily_unavailable "
            "(AADSTS90033: A transient error has occurred.") in gw.output()

    e.failing = None
    deadline = time.time() + 20
    while True:
        try:
            chat_and_stream(client)
            break
        except openai.APIStatusError as failure:
            assert failure.status_code == 503
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert len(e.issued) == 1
    assert_nothing_leaks(gw, [CLIENT_SECRET, *e.tokens()])


def test_a_wrong_secret_and_a_missing_secret_are_reported(tmp_path, providers, gateway, entra):
    e = entra(client_secret="the-secret-entra-knows")
    azure, gw, client = start(tmp_path, providers, gateway, e)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503
    assert e.refused and e.refused[0] == "client_secret"
    assert "answered 401: invalid_client (AADSTS7000215: Invalid client secret provided." in gw.output()
    assert CLIENT_SECRET not in gw.output()

    (tmp_path / "missing").mkdir()
    azure2, gw2, client2 = start(tmp_path / "missing", providers, gateway, e, extra="# no Secret")
    with pytest.raises(openai.APIStatusError) as err:
        client2.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503
    out = gw2.output()
    assert "Secret default/entra-app does not exist" in out
    assert "spec.azureCredentials.clientSecretRef" in out
