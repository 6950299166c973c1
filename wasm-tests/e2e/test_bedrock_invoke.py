"""Bedrock InvokeModel beyond chat, through a real Envoy with the official
SDKs and the fake Bedrock (TLS, SigV4 checked with botocore):
- OpenAI embeddings on an AWSBedrock backend: Amazon Titan Text Embeddings
  v2 and Cohere Embed, float and base64, usage in the access log;
- Anthropic count_tokens on the seed's AWSAnthropic backend through
  Bedrock's CountTokens API."""
import json
import urllib.request

import anthropic
import openai
import pytest

from conftest import anthropic_config, write_yaml
from fake_bedrock import HOST, FakeBedrock, make_test_ca
from yaml_builders import SEED_FILES, seed_bedrock

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDAIGWTEST", "AWS_SECRET_ACCESS_KEY": "aigw/test+secret/key",
       "AWS_SESSION_TOKEN": "session-token-for-test"}
CLIENT_KEY = "client-key-must-not-leak"
EMBED_CONFIG = seed_bedrock("embed", [TITAN, COHERE])


@pytest.fixture
def setup(tmp_path, gateway):
    tls = make_test_ca(str(tmp_path))
    fake = FakeBedrock(tls[1], tls[2], AWS["AWS_ACCESS_KEY_ID"], AWS["AWS_SECRET_ACCESS_KEY"],
                       AWS["AWS_SESSION_TOKEN"])
    files = SEED_FILES + [write_yaml(tmp_path, "embed.yaml", EMBED_CONFIG)]
    gw = gateway(files, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"], extra_args=["--extra-ca", tls[0]], env=AWS)
    yield fake, gw
    fake.close()


def oai(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def check_signed(fake, path):
    sent = fake.requests[-1]
    assert fake.signature_checks[-1] == (True, "ok")
    assert sent.path == path
    assert sent.headers["host"] == HOST
    assert sent.headers.get("accept-encoding") == "identity"
    assert CLIENT_KEY not in json.dumps(sent.headers)
    return sent.json()


def logged(gw, count=1):
    log = gw.access_log(count)[count - 1]
    return tuple(int(log[k]) for k in ("input_tokens", "output_tokens", "total_tokens"))


def post(gw, path, body):
    request = urllib.request.Request(gw.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_titan_float_and_dimensions(setup):
    fake, gw = setup
    r = oai(gw).embeddings.create(model=TITAN, input="hello there world", dimensions=256,
                                  encoding_format="float")
    assert r.object == "list" and r.model == TITAN
    assert len(r.data) == 1 and r.data[0].index == 0
    assert r.data[0].embedding == fake.vector(256, 0)
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)
    body = check_signed(fake, "/model/amazon.titan-embed-text-v2%3A0/invoke")
    assert body == {"inputText": "hello there world", "dimensions": 256, "normalize": True}
    assert logged(gw) == (3, 0, 3)


def test_titan_base64_as_the_sdk_asks_by_default(setup):
    """The openai SDK asks for base64 unless told otherwise and decodes it:
    the gateway encodes Bedrock's floats as little-endian f32."""
    fake, gw = setup
    r = oai(gw).embeddings.create(model=TITAN, input=["just one"])
    assert r.data[0].embedding == fake.vector(1024, 0)
    status, _, raw = post(gw, "/v1/embeddings", {"model": TITAN, "input": "x", "encoding_format": "base64",
                                                 "dimensions": 4})
    assert status == 200 and raw["data"][0]["embedding"] == "AAAAPwAAgL4AAAA+AACAPw=="
    assert logged(gw, 2) == (1, 0, 1)


def test_titan_refuses_several_inputs_and_reports_bedrock_errors(setup):
    fake, gw = setup
    client = oai(gw)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=TITAN, input=["a", "b"])
    assert e.value.body["param"] == "input"
    assert "one input per request" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=TITAN, input=[[1, 2, 3]])
    assert "token arrays" in e.value.body["message"]
    assert fake.requests == [], "refused requests never reach Bedrock"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=TITAN, input="fail please")
    assert "expected maxLength" in e.value.body["message"]
    assert e.value.body["type"] == "invalid_request_error"


def test_cohere_batch(setup):
    fake, gw = setup
    r = oai(gw).embeddings.create(model=COHERE, input=["first text", "second one here", "third"],
                                  encoding_format="float", extra_body={"input_type": "search_query"})
    assert [d.index for d in r.data] == [0, 1, 2]
    assert [d.embedding for d in r.data] == [fake.vector(8, i) for i in range(3)]
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (6, 6), "from x-amzn-bedrock-input-token-count"
    body = check_signed(fake, "/model/cohere.embed-english-v3/invoke")
    assert body == {"texts": ["first text", "second one here", "third"], "input_type": "search_query",
                    "embedding_types": ["float"]}
    r = oai(gw).embeddings.create(model=COHERE, input="default type")
    assert r.data[0].embedding == fake.vector(8, 0)
    assert fake.requests[-1].json()["input_type"] == "search_document"
    assert logged(gw, 2) == (2, 0, 2)


def test_endpoints_a_bedrock_backend_cannot_serve_answer_clearly(setup):
    _, gw = setup
    status, _, body = post(gw, "/v1/completions", {"model": TITAN, "prompt": "x"})
    assert status == 501 and "not supported yet on a AWSBedrock backend" in body["error"]["message"]
    status, _, body = post(gw, "/v1/embeddings", {"model": CLAUDE, "input": "x"})
    assert status == 404 and body["error"]["type"] == "invalid_request_error"


def test_count_tokens_on_bedrock(setup):
    fake, gw = setup
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0)
    r = client.messages.count_tokens(model=CLAUDE, system="be brief",
                                     messages=[{"role": "user", "content": "how many tokens is this"}])
    assert r.input_tokens == 15
    body = check_signed(fake, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens")
    assert list(body) == ["input"]
    assert fake.counted[-1] == {"system": "be brief",
                                "messages": [{"role": "user", "content": "how many tokens is this"}],
                                "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "fail please"}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "must be non-empty" in e.value.body["error"]["message"]


def test_count_tokens_native_anthropic(tmp_path, providers, gateway):
    def fake(request):
        if request.path != "/v1/messages/count_tokens" or request.headers.get("x-api-key") != "sk-ant-key":
            return 404, {"content-type": "application/json"}, json.dumps(
                {"type": "error", "error": {"type": "not_found_error", "message": request.path}}).encode()
        body = request.json()
        return 200, {"content-type": "application/json"}, json.dumps(
            {"input_tokens": 3 + len(body["messages"])}).encode()
    p = providers(fake, name="anthropic")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", anthropic_config(p.port, "sk-ant-key"))])
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0)
    r = client.messages.count_tokens(model="claude-sonnet", messages=[{"role": "user", "content": "hi"}])
    assert r.input_tokens == 4
    sent = p.requests[-1]
    assert sent.json()["model"] == "claude-sonnet"
    assert sent.headers["anthropic-version"] and CLIENT_KEY not in json.dumps(sent.headers)
