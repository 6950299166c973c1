"""Providers that compress their answers even though the gateway asks for
`accept-encoding: identity`: gzip (and zlib deflate) JSON, SSE and error
bodies are decoded by the filter's upstream role, so usage is counted, every
translator reads plain bytes and the client never gets a body labelled
`content-encoding: gzip` that is not; codings it cannot decode and corrupt
bodies become a 502 in the client's shape. OpenAI passthrough, OpenAI chat
translated from Anthropic, and native Anthropic passthrough."""
import json
import urllib.request
import zlib

import anthropic
import openai
import pytest

from conftest import anthropic_config, basic_config, write_yaml
from fakes import openai_echo
from test_openai_to_providers import ASK, PROVIDER_KEY, anthropic_fake

CLIENT_KEY = "client-key"


def compress(data, encoding):
    wbits = {"gzip": 31, "deflate": 15}[encoding]
    c = zlib.compressobj(wbits=wbits)
    return c.compress(data) + c.flush()


def compressed(respond, encoding="gzip", corrupt=False):
    """Wraps a fake's answers: whole bodies compressed; streams compressed
    as one stream flushed after each event (so each chunk decodes as it
    arrives), the final flush as a last chunk."""
    def wrapped(request):
        status, headers, payload = respond(request)
        headers = {**headers, "content-encoding": encoding}
        if encoding not in ("gzip", "deflate"):
            return status, headers, payload if isinstance(payload, bytes) else b"".join(payload)
        if isinstance(payload, (bytes, bytearray)):
            body = compress(payload, encoding)
            return status, headers, body[:len(body) // 2] if corrupt else body
        c = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
        chunks = [c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in payload]
        tail = c.flush()
        return status, headers, chunks if corrupt else chunks + [tail]
    return wrapped


def echo_or_fail(request):
    body = request.json()
    if body["messages"][-1]["content"] == "fail":
        return 400, {"content-type": "application/json"}, json.dumps(
            {"error": {"message": "Invalid value for 'messages'", "type": "invalid_request_error",
                       "param": "messages", "code": "invalid_value"}}).encode()
    return openai_echo("gz")(request)


@pytest.fixture
def openai_gw(tmp_path, providers, gateway):
    def make(respond):
        fake = providers(respond, name="gz")
        gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(fake.port))])
        return fake, gw, openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    return make


def logged(gw, count=1):
    log = gw.access_log(count)[count - 1]
    return tuple(int(log[k]) for k in ("input_tokens", "output_tokens", "total_tokens"))


def raw_post(gw, path, body, headers=None):
    """POST without a client that would undo an encoding: what exactly
    reaches the client."""
    request = urllib.request.Request(gw.url + path, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "accept-encoding": "gzip, deflate, br", **(headers or {})})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_openai_passthrough_json_is_decoded_and_counted(openai_gw, encoding):
    fake, gw, client = openai_gw(compressed(echo_or_fail, encoding))
    r = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "gz answered test-model"
    assert r.usage.total_tokens == 18
    assert fake.requests[-1].headers["accept-encoding"] == "identity", "the client's gzip is not forwarded"
    assert logged(gw) == (11, 7, 18)
    status, headers, body = raw_post(gw, "/v1/chat/completions",
                                     {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and "content-encoding" not in headers
    assert json.loads(body)["usage"]["total_tokens"] == 18
    assert logged(gw, 2) == (11, 7, 18)


def test_openai_passthrough_stream_is_decoded_and_counted(openai_gw):
    _, gw, client = openai_gw(compressed(echo_or_fail))
    chunks = list(client.chat.completions.create(model="test-model", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "gz answered test-model"
    assert all(c.usage is None for c in chunks), "the usage chunk the gateway asked for is dropped"
    assert logged(gw) == (11, 7, 18)
    status, headers, body = raw_post(gw, "/v1/chat/completions", {
        "model": "test-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and "content-encoding" not in headers
    assert headers["content-type"].startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n")


def test_openai_passthrough_error_is_decoded(openai_gw):
    _, gw, client = openai_gw(compressed(echo_or_fail))
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "fail"}])
    assert e.value.body["message"] == "Invalid value for 'messages'"
    status, headers, body = raw_post(gw, "/v1/chat/completions",
                                     {"model": "test-model", "messages": [{"role": "user", "content": "fail"}]})
    assert status == 400 and "content-encoding" not in headers
    assert json.loads(body)["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_codings_the_gateway_cannot_read_are_a_502(openai_gw, encoding):
    _, gw, client = openai_gw(compressed(echo_or_fail, encoding))
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert f'content-encoding "{encoding}"' in e.value.body["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_corrupt_gzip_is_a_502_or_an_error_event(openai_gw, stream):
    _, gw, client = openai_gw(compressed(echo_or_fail, corrupt=True))
    if not stream:
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
        assert "compressed answer" in e.value.body["message"]
        return
    status, headers, body = raw_post(gw, "/v1/chat/completions", {
        "model": "test-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and "content-encoding" not in headers
    text = body.decode()
    assert "gz" in text and "compressed answer ended early" in text, text
    assert not text.endswith("data: [DONE]\n\n")


@pytest.fixture
def anthropic_gw(tmp_path, providers, gateway):
    fake = providers(compressed(anthropic_fake), name="anthropic")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", anthropic_config(fake.port, PROVIDER_KEY))])
    return fake, gw


def test_anthropic_to_openai_chat_json_stream_and_error(anthropic_gw):
    fake, gw = anthropic_gw
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    r = client.chat.completions.create(model="claude-sonnet", messages=ASK, max_tokens=50)
    assert r.choices[0].message.content == "Hello from Claude"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (27, 6, 33)
    assert fake.requests[-1].headers["accept-encoding"] == "identity"
    assert logged(gw) == (27, 6, 33)
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Claude"
    assert chunks[-1].usage.total_tokens == 33
    assert logged(gw, 2) == (27, 6, 33)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "overload me"}])
    assert "exceeded your rate limit" in e.value.body["message"]


def test_native_anthropic_passthrough(anthropic_gw):
    _, gw = anthropic_gw
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0)
    with client.messages.stream(model="claude-sonnet", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello from Claude"
    assert logged(gw) == (27, 6, 33)
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="claude-sonnet", max_tokens=64,
                               messages=[{"role": "user", "content": "overload me"}])
    assert e.value.body["error"]["type"] == "rate_limit_error"
    status, headers, body = raw_post(gw, "/anthropic/v1/messages", {
        "model": "claude-sonnet", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        {"x-api-key": CLIENT_KEY})
    assert status == 200 and "content-encoding" not in headers
    assert json.loads(body)["content"][0]["text"] == "Hello from Claude"
