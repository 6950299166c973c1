"""OpenAI chat completions served by non-OpenAI backends: the official
openai SDK -> aigw (real Envoy + filter) -> (a) a fake native Anthropic API
that speaks exact Messages JSON and SSE, tool_use included, and (b) the fake
Bedrock (TLS, SigV4 checked with botocore) for Claude over InvokeModel
(AWSAnthropic) and for Converse / ConverseStream (AWSBedrock)."""
import json

import openai
import pytest

from conftest import anthropic_config, write_yaml
from fakes import anthropic_sse
from fake_bedrock import HOST, FakeBedrock, make_test_ca
from yaml_builders import SEED_FILES, seed_bedrock

CLIENT_KEY = "client-key-must-not-leak"
PROVIDER_KEY = "sk-ant-provider-secret"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}]
USAGE = {"input_tokens": 21, "output_tokens": 6, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}


def anthropic_plan(body):
    """Answers with a tool call when tools are offered and no tool result came
    back yet; otherwise with text (echoing a tool result if there is one)."""
    last = body["messages"][-1]["content"]
    blocks = last if isinstance(last, list) else [{"type": "text", "text": last}]
    results = [b for b in blocks if b["type"] == "tool_result"]
    if body.get("tools") and not results:
        return "Let me check.", {"type": "tool_use", "id": "toolu_01", "name": body["tools"][0]["name"],
                                 "input": {"city": "Paris"}}
    if results:
        return f"Tool said: {results[0]['content']}", None
    return "Hello from Claude", None


def anthropic_fake(request):
    if request.path != "/v1/messages" or request.headers.get("x-api-key") != PROVIDER_KEY:
        return 401, {"content-type": "application/json"}, json.dumps(
            {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}).encode()
    body = request.json()
    if body["messages"][-1]["content"] == "overload me":
        return 429, {"content-type": "application/json"}, json.dumps(
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}}).encode()
    text, tool = anthropic_plan(body)
    stop = "tool_use" if tool else "end_turn"
    if not body.get("stream"):
        content = [{"type": "text", "text": text}] + ([tool] if tool else [])
        answer = {"id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
                  "content": content, "stop_reason": stop, "stop_sequence": None, "usage": USAGE}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
    events = [
        {"type": "message_start", "message": {"id": "msg_02", "type": "message", "role": "assistant",
                                              "model": body["model"], "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": {**USAGE, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    for i, word in enumerate(text.split(" ")):
        events.append({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}})
    events.append({"type": "content_block_stop", "index": 0})
    if tool:
        events.append({"type": "content_block_start", "index": 1,
                       "content_block": {**tool, "input": {}}})
        arguments = json.dumps(tool["input"])
        for piece in ("", arguments[:4], arguments[4:]):
            events.append({"type": "content_block_delta", "index": 1,
                           "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": 1})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
         "usage": {"output_tokens": USAGE["output_tokens"]}},
        {"type": "message_stop"},
    ]
    return 200, {"content-type": "text/event-stream"}, anthropic_sse(events)




@pytest.fixture
def anthropic_setup(tmp_path, providers, gateway):
    fake = providers(anthropic_fake, name="anthropic")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", anthropic_config(fake.port, PROVIDER_KEY))])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    return fake, gw, client


def logged_usage(gw):
    log = gw.access_log()[-1]
    return tuple(int(log[k]) for k in ("input_tokens", "output_tokens", "total_tokens"))


def check_anthropic_sent(fake):
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert CLIENT_KEY not in json.dumps(sent.headers)
    body = sent.json()
    assert body["model"] == "claude-sonnet"
    assert body["system"] == "You are terse."
    return body


def test_anthropic_non_streaming(anthropic_setup):
    fake, gw, client = anthropic_setup
    r = client.chat.completions.create(model="claude-sonnet", messages=ASK, max_tokens=50, temperature=0.3,
                                       stop=["END"])
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "Hello from Claude"
    assert r.choices[0].finish_reason == "stop"
    # prompt = input + cache reads + cache writes
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (27, 6, 33)
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    body = check_anthropic_sent(fake)
    assert body["max_tokens"] == 50 and body["temperature"] == 0.3 and body["stop_sequences"] == ["END"]
    assert body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert "stream" not in body
    assert logged_usage(gw) == (27, 6, 33)
    assert gw.access_log()[-1]["cached_input_tokens"] == "4"


def test_anthropic_streaming_with_usage(anthropic_setup):
    fake, gw, client = anthropic_setup
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 33
    body = check_anthropic_sent(fake)
    assert body["stream"] is True and body["max_tokens"] == 4096
    assert logged_usage(gw) == (27, 6, 33)


def test_anthropic_streaming_without_usage_chunk(anthropic_setup):
    _, gw, client = anthropic_setup
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=ASK, stream=True))
    assert all(c.usage is None for c in chunks)
    assert logged_usage(gw) == (27, 6, 33), "usage is counted even when the client did not ask for it"


def tool_round_trip(client, model, stream):
    """Asks, gets a tool call (streamed deltas assembled by the SDK), answers
    it, and returns (first completion, second completion)."""
    kwargs = dict(model=model, messages=ASK, tools=TOOLS, tool_choice="auto")
    if stream:
        with client.chat.completions.stream(**kwargs) as s:
            for _ in s:
                pass
            first = s.get_final_completion()
    else:
        first = client.chat.completions.create(**kwargs)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    follow = ASK + [
        {"role": "assistant", "content": choice.message.content,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model=model, messages=follow, tools=TOOLS)
    assert second.choices[0].message.content == "Tool said: sunny, 21C"
    assert second.choices[0].finish_reason == "stop"
    return first, second


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_round_trip(anthropic_setup, stream):
    fake, _, client = anthropic_setup
    first, _ = tool_round_trip(client, "claude-sonnet", stream)
    assert first.choices[0].message.tool_calls[0].id == "toolu_01"
    asked = fake.requests[-2].json()
    assert asked["tools"] == [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"],
                               "description": "Weather in a city"}]
    assert asked["tool_choice"] == {"type": "auto"}
    answered = fake.requests[-1].json()["messages"]
    assert answered[1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]}
    assert answered[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21C"}]}


def test_anthropic_errors_in_openai_shape(anthropic_setup):
    fake, _, client = anthropic_setup
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="claude-sonnet", messages=[{"role": "user", "content": "overload me"}])
    assert "exceeded your rate limit" in str(e.value)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="claude-sonnet", stream=True,
                                       messages=[{"role": "user", "content": "overload me"}])
    count = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-sonnet", messages=ASK, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-sonnet", messages=ASK, response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"
    assert len(fake.requests) == count, "refused requests never reach the provider"


# --- Bedrock: Claude over InvokeModel (seed YAML) and Converse (AWSBedrock) ---

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-pro-v1:0"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDAIGWTEST", "AWS_SECRET_ACCESS_KEY": "aigw/test+secret/key",
       "AWS_SESSION_TOKEN": "session-token-for-test"}
CONVERSE_CONFIG = seed_bedrock("converse", [NOVA])


@pytest.fixture
def bedrock_setup(tmp_path, gateway):
    tls = make_test_ca(str(tmp_path))
    fake = FakeBedrock(tls[1], tls[2], AWS["AWS_ACCESS_KEY_ID"], AWS["AWS_SECRET_ACCESS_KEY"],
                       AWS["AWS_SESSION_TOKEN"], text="Hello from Bedrock", usage=(17, 9))
    files = SEED_FILES + [write_yaml(tmp_path, "converse.yaml", CONVERSE_CONFIG)]
    gw = gateway(files, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"], extra_args=["--extra-ca", tls[0]], env=AWS)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    yield fake, gw, client
    fake.close()


def check_signed(fake, path):
    sent = fake.requests[-1]
    assert fake.signature_checks[-1] == (True, "ok")
    assert sent.path == path
    assert sent.headers["host"] == HOST
    assert CLIENT_KEY not in json.dumps(sent.headers)
    return sent.json()


def test_claude_on_bedrock_non_streaming(bedrock_setup):
    fake, gw, client = bedrock_setup
    r = client.chat.completions.create(model=CLAUDE, messages=ASK, max_completion_tokens=64)
    assert r.choices[0].message.content == "Hello from Bedrock"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (17, 9)
    body = check_signed(fake, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke")
    assert body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in body
    assert body["system"] == "You are terse." and body["max_tokens"] == 64
    assert logged_usage(gw) == (17, 9, 26)


def test_claude_on_bedrock_streaming(bedrock_setup):
    fake, gw, client = bedrock_setup
    chunks = list(client.chat.completions.create(model=CLAUDE, messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Bedrock"
    assert chunks[-1].usage.prompt_tokens == 17 and chunks[-1].usage.completion_tokens == 9
    check_signed(fake, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream")
    assert logged_usage(gw) == (17, 9, 26)


def test_converse_non_streaming(bedrock_setup):
    fake, gw, client = bedrock_setup
    r = client.chat.completions.create(model=NOVA, messages=ASK, max_tokens=32, temperature=0.5, top_p=0.9,
                                       stop="END")
    assert r.choices[0].message.content == "Hello from Bedrock"
    assert r.choices[0].finish_reason == "stop"
    assert r.id == "chatcmpl-2b6a0a6e-1111-4a2b-9c3d-000000000001"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (17, 9, 26)
    body = check_signed(fake, "/model/amazon.nova-pro-v1%3A0/converse")
    assert body == {"messages": [{"role": "user", "content": [{"text": "Weather in Paris?"}]}],
                    "system": [{"text": "You are terse."}],
                    "inferenceConfig": {"maxTokens": 32, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}}
    assert logged_usage(gw) == (17, 9, 26)


def test_converse_streaming(bedrock_setup):
    fake, gw, client = bedrock_setup
    chunks = list(client.chat.completions.create(model=NOVA, messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Bedrock"
    assert chunks[-1].usage.total_tokens == 26
    check_signed(fake, "/model/amazon.nova-pro-v1%3A0/converse-stream")
    assert logged_usage(gw) == (17, 9, 26)


@pytest.mark.parametrize("stream", [False, True])
def test_converse_tool_round_trip(bedrock_setup, stream):
    fake, gw, client = bedrock_setup
    first, _ = tool_round_trip(client, NOVA, stream)
    assert first.choices[0].message.tool_calls[0].id == "tooluse_bdrk_1"
    asked = fake.requests[-2].json()
    assert asked["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_weather", "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},
        "description": "Weather in a city"}}], "toolChoice": {"auto": {}}}
    answered = fake.requests[-1].json()["messages"]
    assert answered[1]["content"][1] == {"toolUse": {"toolUseId": "tooluse_bdrk_1", "name": "get_weather",
                                                     "input": {"city": "Paris"}}}
    assert answered[2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_bdrk_1", "content": [{"text": "sunny, 21C"}]}}]}
    assert all(ok for ok, _ in fake.signature_checks)
    assert logged_usage(gw) == (17, 9, 26)


def test_converse_bad_signature_is_an_openai_error(tmp_path, gateway):
    tls = make_test_ca(str(tmp_path))
    fake = FakeBedrock(tls[1], tls[2], AWS["AWS_ACCESS_KEY_ID"], "another-secret", AWS["AWS_SESSION_TOKEN"])
    try:
        files = SEED_FILES + [write_yaml(tmp_path, "converse.yaml", CONVERSE_CONFIG)]
        gw = gateway(files, resolve=[f"{HOST}:443=127.0.0.1:{fake.port}"], extra_args=["--extra-ca", tls[0]],
                     env=AWS)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as e:
            client.chat.completions.create(model=NOVA, messages=ASK)
        assert "signature we calculated does not match" in str(e.value)
        assert e.value.body["type"] == "permission_error"
    finally:
        fake.close()
