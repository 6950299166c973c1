"""OpenAI chat completions served by Gemini on Vertex AI (GCPVertexAI): the
official openai SDK -> aigw (real Envoy + filter) -> a fake Vertex AI that
checks the path, the Bearer access token and the body's shape, and answers
in Gemini's exact JSON and SSE. The access token is minted by the
controller from a service-account key (GCPCredentials policy) at the fake
Google OAuth endpoint of fake_gcp.py, which verifies the signed assertion."""
import json

import openai
import pytest

from conftest import write_yaml
from fakes import openai_echo
from fake_gcp import FakeGoogleOAuth
from fake_vertex import FakeVertex
from test_observability import find, wait_for
from test_openai_to_providers import ASK, TOOLS, tool_round_trip
from yaml_builders import backend, gateway, loopback, route, security_policy

CLIENT_KEY = "client-key-must-not-leak"
PROJECT = "test-project"
LOCATION = "us-central1"
MODEL = "gemini-2.5-flash"
# prompt, completion (answer 6 + thoughts 2), total: as fake_vertex.USAGE
USAGE = (21, 8, 29)

def vertex_backend(port):
    """The Gateway and Gemini on Vertex AI at 127.0.0.1:port, named vertex."""
    return gateway() + backend("vertex", "GCPVertexAI", loopback(port))


def vertex_policy(secret):
    """GCPCredentials for vertex (PROJECT, LOCATION) from the Secret vertex-sa, `secret`."""
    return (security_policy("vertex-policy", "vertex", "GCPCredentials",
                            f"gcpCredentials:\n    projectName: {PROJECT}\n    region: {LOCATION}\n"
                            "    credentialsFile:\n      secretRef: {name: vertex-sa}")
            + "---\n" + secret)


def config(port, secret):
    return vertex_backend(port) + vertex_policy(secret) + route("route", {MODEL: "vertex"})


@pytest.fixture
def vertex(tmp_path, gateway):
    oauth = FakeGoogleOAuth()
    fake = FakeVertex(oauth.valid, PROJECT, LOCATION)
    try:
        text = config(fake.port, oauth.secret_yaml("vertex-sa"))
        gw = gateway([write_yaml(tmp_path, "vertex.yaml", text)])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        yield fake, gw, client
    finally:
        fake.close()
        oauth.close()


def logged_usage(gw):
    log = gw.access_log()[-1]
    return tuple(int(log[k]) for k in ("input_tokens", "output_tokens", "total_tokens"))


def check_sent(fake, method):
    sent = fake.requests[-1]
    assert sent.path == (f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}:{method}")
    assert sent.headers["authorization"].startswith("Bearer ya29.")
    assert fake.token_ok(sent.headers["authorization"]), "a token the Google endpoint issued"
    assert CLIENT_KEY not in json.dumps(sent.headers)
    body = sent.json()
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"][0] == {"role": "user", "parts": [{"text": "Weather in Paris?"}]}
    return body


def test_plain_chat(vertex):
    fake, gw, client = vertex
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=50, temperature=0.3, top_p=0.8,
                                       stop=["END"], seed=7)
    assert r.object == "chat.completion"
    assert r.id == "chatcmpl-vtx-resp-1"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Hello from Gemini"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == USAGE
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details.reasoning_tokens == 2
    body = check_sent(fake, "generateContent")
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 50,
                                        "stopSequences": ["END"], "seed": 7}
    assert logged_usage(gw) == USAGE
    log = gw.access_log()[-1]
    assert log["cached_input_tokens"] == "4"
    assert log["provider"] == "gcp.vertex_ai"


def test_streaming_with_usage(vertex):
    fake, gw, client = vertex
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == "chatcmpl-vtx-stream-1" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Gemini"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3, "one chunk per event"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 29
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 2
    check_sent(fake, "streamGenerateContent?alt=sse")
    assert logged_usage(gw) == USAGE


def test_streaming_without_usage_chunk_still_counts(vertex):
    _, gw, client = vertex
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert all(c.usage is None for c in chunks)
    assert logged_usage(gw) == USAGE, "usage is counted even when the client did not ask for it"
    labels = dict(gen_ai_provider_name="gcp.vertex_ai", gen_ai_request_model=MODEL, gen_ai_operation_name="chat")

    def counted(s):
        for token, n in [("input", 21), ("output", 8), ("total", 29), ("cached_input", 4), ("reasoning", 2)]:
            assert find(s, "aigw_token_usage_total", gen_ai_token_type=token, **labels) == n, token
        assert find(s, "aigw_requests_total", **labels) == 1

    wait_for(gw, counted)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(vertex, stream):
    fake, gw, client = vertex
    first, _ = tool_round_trip(client, MODEL, stream)
    call = first.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_")
    asked = fake.requests[-2].json()
    assert asked["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather in a city",
        "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}]}]
    assert asked["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    answered = fake.requests[-1].json()["contents"]
    assert answered[1]["role"] == "model"
    signature = "c2ln" if stream else "c2lnbmF0dXJl"
    assert call.id.endswith("~ts~" + signature), "the call's thought signature rides in its id"
    assert answered[1]["parts"][-1] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                        "thoughtSignature": signature}
    assert answered[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21C"}}}]}
    assert logged_usage(gw) == USAGE


def test_json_mode_and_schema(vertex):
    fake, _, client = vertex
    r = client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content) == {"city": "Paris", "temp": 21}
    assert fake.requests[-1].json()["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
              "required": ["city", "temp"], "additionalProperties": False}
    r = client.chat.completions.create(model=MODEL, messages=ASK, response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "strict": True, "schema": schema}})
    assert json.loads(r.choices[0].message.content)["temp"] == 21
    assert fake.requests[-1].json()["generationConfig"] == {"responseMimeType": "application/json",
                                                            "responseJsonSchema": schema}


def test_images_and_reasoning(vertex):
    fake, _, client = vertex
    r = client.chat.completions.create(model=MODEL, reasoning_effort="low", n=2, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert r.choices[0].message.content == "Hello from Gemini"
    body = fake.requests[-1].json()
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}]
    assert body["generationConfig"] == {"candidateCount": 2,
                                        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}


def test_logprobs(vertex):
    fake, _, client = vertex
    r = client.chat.completions.create(model=MODEL, messages=ASK, logprobs=True, top_logprobs=2)
    assert fake.requests[-1].json()["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}
    content = r.choices[0].logprobs.content
    assert [t.token for t in content] == ["Hello", " from", " Gemini"]
    assert content[0].logprob == -0.25 and content[0].bytes == list(b"Hello")
    assert len(content[0].top_logprobs) == 2


def test_errors_in_openai_shape(vertex):
    fake, gw, client = vertex
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "overload me"}])
    assert "Resource exhausted" in str(e.value)
    assert e.value.body["type"] == "rate_limit_exceeded" and e.value.body["code"] == "RESOURCE_EXHAUSTED"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, stream=True,
                                       messages=[{"role": "user", "content": "overload me"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "break the request"}])
    assert e.value.status_code == 400
    assert e.value.body["type"] == "invalid_request_error" and e.value.body["code"] == "INVALID_ARGUMENT"
    assert "made up" in e.value.body["message"]
    count = len(fake.requests)
    for kwargs, param in [
        (dict(logit_bias={"1": 5}), "logit_bias"),
        (dict(parallel_tool_calls=False, tools=TOOLS), "parallel_tool_calls"),
        (dict(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/picture"}}]}]), "messages"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**{"model": MODEL, "messages": ASK, **kwargs})
        assert e.value.body["param"] == param
    assert len(fake.requests) == count, "refused requests never reach the provider"


def failover_config(openai_port, port, secret, first, second):
    """OpenAI and Vertex AI backends for MODEL: `first`, then `second`."""
    return (gateway() + backend("openai", "OpenAI", loopback(openai_port))
            + backend("vertex", "GCPVertexAI", loopback(port)) + vertex_policy(secret)
            + route("route", {MODEL: [{"name": first, "priority": 0}, {"name": second, "priority": 1}]}))


@pytest.mark.parametrize("stream", [False, True])
def test_failover_between_openai_and_vertex(tmp_path, providers, gateway, stream):
    """Each attempt is rewritten for the backend it lands on and the answer
    translated by the schema of the backend that gave it."""
    broken = {"on": True}

    def openai_fake(request):
        if broken["on"]:
            return 500, {"content-type": "application/json"}, b'{"error":{"message":"down","type":"server_error"}}'
        return openai_echo("openai")(request)

    primary = providers(openai_fake, name="openai")
    oauth = FakeGoogleOAuth()
    fake = FakeVertex(oauth.valid, PROJECT, LOCATION)
    try:
        def start(first, second):
            text = failover_config(primary.port, fake.port, oauth.secret_yaml("vertex-sa"), first, second)
            gw = gateway([write_yaml(tmp_path, f"{first}.yaml", text)])
            return gw, openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)

        def ask(client):
            if not stream:
                return client.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content
            chunks = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        # OpenAI first and failing: Gemini answers, in OpenAI's shape.
        gw, client = start("openai", "vertex")
        assert ask(client) == "Hello from Gemini"
        assert len(primary.requests) == 1 and primary.requests[0].json()["model"] == MODEL
        check_sent(fake, "streamGenerateContent?alt=sse" if stream else "generateContent")
        assert logged_usage(gw) == USAGE
        gw.close()
        # Vertex first and failing: the OpenAI answer passes through untranslated.
        broken["on"] = False
        fake.failing = (503, "UNAVAILABLE", "The service is currently unavailable.")
        count = len(fake.requests)
        gw, client = start("vertex", "openai")
        assert ask(client) == f"openai answered {MODEL}"
        assert len(fake.requests) == count + 1
        assert logged_usage(gw) == (11, 7, 18)
        # Both failing: the client gets the last provider's error, in OpenAI's shape.
        broken["on"] = True
        with pytest.raises(openai.InternalServerError):
            ask(client)
    finally:
        fake.close()
        oauth.close()


def test_backend_without_project_is_a_clear_error(tmp_path, gateway):
    """A GCPVertexAI backend with no GCPCredentials policy has no project or
    region for its path: a 500 in OpenAI's shape that says so, and the
    provider is never called."""
    fake = FakeVertex(lambda _: True, PROJECT, LOCATION)
    try:
        text = vertex_backend(fake.port) + route("route", {MODEL: "vertex"})
        gw = gateway([write_yaml(tmp_path, "vertex.yaml", text)])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model=MODEL, messages=ASK)
        assert "GCPCredentials" in e.value.body["message"]
        assert e.value.body["code"] == "backend_misconfigured"
        assert fake.requests == []
    finally:
        fake.close()
