"""Claude on AWS Bedrock through /anthropic/v1/messages with the seed YAML
unchanged: the official Anthropic SDK -> aigw (real Envoy + filter) ->
a fake Bedrock over TLS that checks SigV4 with botocore."""
import json

import anthropic
import openai
import pytest

from fake_bedrock import HOST, FakeBedrock, make_test_ca
from yaml_builders import SEED_FILES

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDAIGWTEST", "AWS_SECRET_ACCESS_KEY": "aigw/test+secret/key",
       "AWS_SESSION_TOKEN": "session-token-for-test"}
CLIENT_KEY = "client-key-must-not-leak"


@pytest.fixture
def tls(tmp_path):
    return make_test_ca(str(tmp_path))


@pytest.fixture
def bedrock(tls):
    made = []

    def make(**kwargs):
        args = {"access_key": AWS["AWS_ACCESS_KEY_ID"], "secret_key": AWS["AWS_SECRET_ACCESS_KEY"],
                "session_token": AWS["AWS_SESSION_TOKEN"], **kwargs}
        fake = FakeBedrock(tls[1], tls[2], **args)
        made.append(fake)
        return fake

    yield make
    for f in made:
        f.close()


def start(gateway, tls, fake, extra_resolve=()):
    return gateway(SEED_FILES, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}", *extra_resolve],
                   extra_args=["--extra-ca", tls[0]], env=AWS)


def client(gw, **kwargs):
    return anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0, **kwargs)


def assert_clean_signed_request(fake, stream):
    sent = fake.requests[-1]
    assert fake.signature_checks[-1] == (True, "ok")
    action = "invoke-with-response-stream" if stream else "invoke"
    assert sent.path == f"/model/anthropic.claude-3-haiku-20240307-v1%3A0/{action}"
    body = sent.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body and "stream" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 64
    assert sent.headers["host"] == HOST
    assert sent.headers["x-amz-security-token"] == AWS["AWS_SESSION_TOKEN"]
    assert "anthropic-version" not in sent.headers and "x-api-key" not in sent.headers
    assert CLIENT_KEY not in json.dumps(sent.headers)


def assert_usage_logged(gw, input_tokens, output_tokens):
    log = gw.access_log()[-1]
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == (
        str(input_tokens), str(output_tokens), str(input_tokens + output_tokens))


def test_messages_non_streaming(gateway, tls, bedrock):
    fake = bedrock(usage=(13, 8))
    gw = start(gateway, tls, fake)
    r = client(gw).messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"anthropic-beta": "beta-one, beta-two"})
    assert r.content[0].text == "Hello from Bedrock"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (13, 8)
    assert_clean_signed_request(fake, stream=False)
    assert fake.requests[-1].json()["anthropic_beta"] == ["beta-one", "beta-two"]
    assert "anthropic-beta" not in fake.requests[-1].headers
    assert_usage_logged(gw, 13, 8)


def test_messages_streaming(gateway, tls, bedrock):
    fake = bedrock(usage=(21, 5), text="Streaming from Bedrock")
    gw = start(gateway, tls, fake)
    with client(gw).messages.stream(model=MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streaming from Bedrock"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 5)
    assert final.stop_reason == "end_turn"
    assert_clean_signed_request(fake, stream=True)
    assert_usage_logged(gw, 21, 5)


def test_bad_signature_is_an_anthropic_permission_error(gateway, tls, bedrock):
    fake = bedrock(secret_key="a-different-secret")
    gw = start(gateway, tls, fake)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client(gw).messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert "signature we calculated does not match" in str(e.value)
    assert fake.signature_checks[-1] == (False, "signature mismatch")


def test_seed_three_of_three(gateway, tls, bedrock, providers):
    """The seed scenario: Qwen3 and gpt-oss over /v1/chat/completions, and
    Claude on Bedrock over /anthropic/v1/messages, one gateway."""
    fake = bedrock()
    qwen, gpt_oss = providers(name="qwen3"), providers(name="gpt-oss")
    gw = start(gateway, tls, fake, extra_resolve=[
        f"qwen3.default.svc.cluster.local:8000=127.0.0.1:{qwen.port}",
        f"gpt-oss.default.svc.cluster.local:8000=127.0.0.1:{gpt_oss.port}",
    ])
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for model, p in (("Qwen/Qwen3-1.7B", qwen), ("openai/gpt-oss-20b", gpt_oss)):
        r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == f"{p.name} answered {model}"
    claude = client(gw, default_headers={"anthropic-version": "bedrock-2023-05-31"})
    r = claude.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text == "Hello from Bedrock"
    assert_clean_signed_request(fake, stream=False)
    assert len(qwen.requests) == 1 and len(gpt_oss.requests) == 1 and len(fake.requests) == 1
