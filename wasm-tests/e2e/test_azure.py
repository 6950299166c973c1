"""Azure OpenAI: the official OpenAI SDK through the gateway to a fake Azure
that serves the recorded exchange (../shared/conformance/openai-cassettes/
azure-chat-basic.yaml) under Azure's deployment path, with `api-key`."""
import json
import os

import openai
import pytest
import yaml

from conftest import SHARED, write_yaml
from fakes import FakeProvider
from yaml_builders import backend, gateway, loopback, route, secret, security_policy

CASSETTE = os.path.join(SHARED, "conformance", "openai-cassettes", "azure-chat-basic.yaml")
API_VERSION = "2024-12-01-preview"
KEY = "azure-key-must-stay-secret"


def recorded():
    with open(CASSETTE) as f:
        return yaml.safe_load(f)["interactions"][0]


def azure_stream_chunks():
    """What Azure streams: a first chunk with prompt filter results and no
    choices, text deltas with content filter results, and the usage chunk
    (when asked for) before [DONE]."""
    events = [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
    ]
    for i, piece in enumerate(["Hi", " there", "!"]):
        delta = {"content": piece} if i else {"content": piece, "role": "assistant"}
        events.append({"choices": [{"content_filter_results": {}, "delta": delta,
                                    "finish_reason": None, "index": 0}],
                       "created": 1759396891, "id": "chatcmpl-az", "model": "gpt-5-nano",
                       "object": "chat.completion.chunk"})
    events.append({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}],
                   "created": 1759396891, "id": "chatcmpl-az", "model": "gpt-5-nano",
                   "object": "chat.completion.chunk"})
    usage = {"prompt_tokens": 8, "completion_tokens": 271, "total_tokens": 279,
             "completion_tokens_details": {"reasoning_tokens": 192},
             "prompt_tokens_details": {"cached_tokens": 0}}
    events.append({"choices": [], "created": 1759396891, "id": "chatcmpl-az",
                   "model": "gpt-5-nano", "object": "chat.completion.chunk", "usage": usage})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def fake_azure(request):
    path, _, query = request.path.partition("?")
    if request.headers.get("api-key") != KEY:
        return 401, {"content-type": "application/json"}, json.dumps({"error": {
            "code": "401", "message": "Access denied due to invalid subscription key."}}).encode()
    if query != f"api-version={API_VERSION}" or not path.startswith("/openai/deployments/"):
        return 404, {"content-type": "application/json"}, json.dumps(
            {"error": {"code": "404", "message": "Resource not found"}}).encode()
    deployment, endpoint = path[len("/openai/deployments/"):].split("/", 1)
    if deployment != "gpt-5-nano":
        return 404, {"content-type": "application/json"}, json.dumps({"error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist."}}).encode()
    body = request.json()
    if endpoint == "chat/completions" and body.get("stream"):
        return 200, {"content-type": "text/event-stream"}, azure_stream_chunks()
    if endpoint == "chat/completions":
        response = recorded()["response"]
        return 200, {"content-type": "application/json"}, response["body"].encode()
    return 404, {"content-type": "application/json"}, b'{"error":{"code":"404","message":"no"}}'


def azure_backend(port):
    """The Gateway and Azure OpenAI (API_VERSION) at 127.0.0.1:port, named azure."""
    return gateway() + backend("azure", "AzureOpenAI", loopback(port), version=API_VERSION)


def azure_config(port, override=None):
    ref = {"name": "azure", **({"modelNameOverride": override} if override else {})}
    return (azure_backend(port)
            + security_policy("azure-key", "azure", "AzureAPIKey", "azureAPIKey: {secretRef: {name: azure-key}}")
            + secret("azure-key", {"apiKey": KEY})
            + route("route", {"gpt-5-nano": "azure", "nano-alias": [ref]}))


@pytest.fixture
def setup(tmp_path, gateway):
    provider = FakeProvider(fake_azure, "azure")
    gw = gateway([write_yaml(tmp_path, "azure.yaml", azure_config(provider.port, "gpt-5-nano"))])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key-must-not-leak",
                           max_retries=0)
    yield provider, gw, client
    provider.close()


def test_chat_reaches_the_deployment_path_with_api_key(setup):
    provider, gw, client = setup
    r = client.chat.completions.create(model="gpt-5-nano",
                                       messages=[{"role": "user", "content": "Hello!"}])
    assert r.choices[0].message.content.startswith("Hi there! How can I help today?")
    assert r.usage.completion_tokens_details.reasoning_tokens == 192
    sent = provider.requests[-1]
    assert sent.path == f"/openai/deployments/gpt-5-nano/chat/completions?api-version={API_VERSION}"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert "client-key-must-not-leak" not in json.dumps(sent.headers)
    assert sent.json()["messages"] == [{"role": "user", "content": "Hello!"}]
    log = gw.access_log()[-1]
    assert (log["input_tokens"], log["output_tokens"], log["total_tokens"]) == ("8", "271", "279")
    assert log["reasoning_tokens"] == "192"


def test_model_override_names_the_deployment(setup):
    provider, _, client = setup
    r = client.chat.completions.create(model="nano-alias",
                                       messages=[{"role": "user", "content": "Hello!"}])
    assert r.usage.total_tokens == 279
    assert provider.requests[-1].path.startswith("/openai/deployments/gpt-5-nano/chat/completions?")


def test_streaming_keeps_azure_filter_chunk_and_counts_usage(setup):
    provider, gw, client = setup
    chunks = list(client.chat.completions.create(
        model="gpt-5-nano", messages=[{"role": "user", "content": "Hello!"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi there!"
    assert provider.requests[-1].json()["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks), "the usage chunk the gateway asked for is hidden"
    assert gw.access_log()[-1]["total_tokens"] == "279"


def test_unknown_deployment_is_azures_404_in_openai_shape(tmp_path, gateway):
    provider = FakeProvider(fake_azure, "azure")
    try:
        gw = gateway([write_yaml(tmp_path, "azure.yaml", azure_config(provider.port, "gpt-missing"))])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="nano-alias",
                                           messages=[{"role": "user", "content": "x"}])
        assert "deployment" in str(e.value).lower()
    finally:
        provider.close()


def test_key_not_in_config_dump(setup):
    _, gw, _ = setup
    assert KEY not in gw.config_dump()
