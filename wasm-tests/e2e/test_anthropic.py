"""Anthropic-native passthrough: the Anthropic SDK -> aigw -> a fake
Anthropic API (JSON and SSE), with the provider key from a Secret."""
import json
import urllib.request

import anthropic
import pytest

from conftest import anthropic_config, write_yaml
from fakes import anthropic_sse

CLIENT_KEY = "client-key-must-not-leak"
PROVIDER_KEY = "sk-ant-provider-secret"
TEXT = "Hello from Anthropic"


def anthropic_fake(request):
    body = request.json()
    usage = {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 3,
             "cache_creation_input_tokens": 0}
    if not body.get("stream"):
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                  "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn",
                  "stop_sequence": None, "usage": usage}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
    events = [
        {"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant",
                                              "model": body["model"], "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    return 200, {"content-type": "text/event-stream"}, anthropic_sse(events)




@pytest.fixture
def setup(tmp_path, providers, gateway):
    fake = providers(anthropic_fake, name="anthropic")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", anthropic_config(fake.port, PROVIDER_KEY))])
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0)
    return fake, gw, client


def check_sent(fake, version):
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == version
    assert CLIENT_KEY not in json.dumps(sent.headers)
    assert sent.json()["model"] == "claude-sonnet"


def check_usage(gw):
    log = gw.access_log()[-1]
    # input counts the whole prompt: 9 uncached + 3 read from the cache.
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == ("12", "4", "16")
    assert log["cached_input_tokens"] == "3"


def test_native_non_streaming(setup):
    fake, gw, client = setup
    r = client.messages.create(model="claude-sonnet", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text == TEXT
    check_sent(fake, version=client.default_headers["anthropic-version"])
    check_usage(gw)


def test_native_streaming(setup):
    fake, gw, client = setup
    with client.messages.stream(model="claude-sonnet", max_tokens=16,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == TEXT
    check_sent(fake, version=client.default_headers["anthropic-version"])
    check_usage(gw)


def test_native_default_version_header(setup):
    fake, gw, _ = setup
    body = json.dumps({"model": "claude-sonnet", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(gw.url + "/anthropic/v1/messages", data=body, method="POST",
                                 headers={"content-type": "application/json", "x-api-key": CLIENT_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["content"][0]["text"] == TEXT
    check_sent(fake, version="2023-06-01")
