"""The walking skeleton end to end: the official OpenAI SDK through aigw run,
a real Envoy and our filter, to a fake OpenAI-compatible provider."""
import json
import urllib.error
import urllib.request

import openai
import pytest

from conftest import basic_config, write_yaml


def post(url, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def setup(tmp_path, providers, gateway):
    provider = providers(name="alpha")
    config = write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, api_key="sk-provider-secret"))
    gw = gateway([config])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key-must-not-leak", max_retries=0)
    return provider, gw, client


def test_chat_non_streaming(setup):
    provider, gw, client = setup
    r = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "alpha answered test-model"
    assert r.usage.total_tokens == 18
    sent = provider.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-provider-secret"
    assert "client-key-must-not-leak" not in json.dumps(sent.headers)
    log = gw.access_log()[-1]
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == ("11", "7", "18")
    assert (log["cached_input_tokens"], log["reasoning_tokens"]) == ("2", "3")
    assert log["request_model"] == "test-model"


def test_chat_streaming_hides_usage_chunk_it_asked_for(setup):
    provider, gw, client = setup
    stream = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha answered test-model"
    assert all(c.choices for c in chunks), "usage-only chunk must not reach a client that did not ask"
    assert provider.requests[-1].json()["stream_options"] == {"include_usage": True}
    log = gw.access_log()[-1]
    assert log["total_tokens"] == "18"


def test_chat_streaming_with_client_usage(setup):
    provider, gw, client = setup
    stream = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.total_tokens == 18
    assert gw.access_log()[-1]["output_tokens"] == "7"


def test_models_list(setup):
    _, _, client = setup
    models = client.models.list()
    assert [m.id for m in models.data] == ["test-model"]


def test_unknown_model_is_404_in_openai_shape(setup):
    provider, _, client = setup
    before = len(provider.requests)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    assert len(provider.requests) == before


@pytest.mark.parametrize("body,code", [
    (b'{"model": "test-model", ', "invalid_json"),
    (b'{"messages": []}', "missing_model"),
    (b'[1,2]', "invalid_json"),
    (b'{"model": 5}', "invalid_type"),
    (b'\xff\xfe\x00', "invalid_json"),
])
def test_bad_json_is_400(setup, body, code):
    _, gw, _ = setup
    status, headers, raw = post(gw.url + "/v1/chat/completions", body)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code


def test_body_over_limit_is_413(setup):
    _, gw, _ = setup
    big = {"model": "test-model", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    status, _, raw = post(gw.url + "/v1/chat/completions", big)
    assert status == 413
    assert json.loads(raw)["error"]["code"] == "request_too_large"
    # and the gateway keeps serving
    status, _, _ = post(gw.url + "/v1/chat/completions",
                        {"model": "test-model", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200


def test_spoofed_model_header_is_overwritten(setup):
    provider, gw, _ = setup
    status, _, _ = post(gw.url + "/v1/chat/completions",
                        {"model": "test-model", "messages": []}, {"x-ai-eg-model": "other"})
    assert status == 200
    assert provider.requests[-1].headers["x-ai-eg-model"] == "test-model"


def test_secret_not_in_config_dump(setup):
    _, gw, _ = setup
    assert "sk-provider-secret" not in gw.config_dump()
    assert "sk-provider-secret" not in gw.output()


def test_prefix_and_model_override(tmp_path, providers, gateway):
    provider = providers(name="beta")
    config = write_yaml(tmp_path, "gw.yaml", basic_config(provider.port, prefix="/api/v2", override="real-name"))
    gw = gateway([config])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "beta answered real-name"
    sent = provider.requests[-1]
    assert sent.path == "/api/v2/chat/completions"
    assert sent.json()["model"] == "real-name"
    assert "authorization" not in sent.headers


def test_config_edit_is_pushed_without_restart(tmp_path, providers, gateway):
    first, second = providers(name="first"), providers(name="second")
    path = tmp_path / "gw.yaml"
    path.write_text(basic_config(first.port))
    gw = gateway([str(path)])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    ask = lambda: client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}])
    assert ask().choices[0].message.content.startswith("first")
    envoy_pid = gw.proc.pid
    path.write_text(basic_config(second.port))
    gw.wait_for_version(2)
    assert ask().choices[0].message.content.startswith("second")
    assert gw.proc.poll() is None and gw.proc.pid == envoy_pid


def test_invalid_edit_keeps_serving(tmp_path, providers, gateway):
    provider = providers(name="p")
    path = tmp_path / "gw.yaml"
    path.write_text(basic_config(provider.port))
    gw = gateway([str(path)])
    path.write_text("kind: [")
    import time
    time.sleep(2)
    assert "not valid YAML" in gw.output()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    assert client.chat.completions.create(model="test-model", messages=[]).choices
