"""`aigw run` with no file: the built-in demo model, or an OpenAI-compatible
upstream named by the environment."""
import openai

from conftest import Gateway


def test_demo_model_answers_first_curl():
    gw = Gateway([], gateway_port=1975)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="aigw-demo", messages=[{"role": "user", "content": "hello"}])
        assert r.choices[0].message.content == "Hello from aigw-demo! You said: hello"
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="aigw-demo", stream=True, messages=[{"role": "user", "content": "hello"}]) if c.choices)
        assert text == "Hello from aigw-demo! You said: hello"
        assert [m.id for m in client.models.list().data] == ["aigw-demo"]
    finally:
        gw.close()


def test_openai_base_url_and_key_from_environment(providers):
    upstream = providers(name="local-vllm")
    gw = Gateway([], gateway_port=1975, env={
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1",
        "OPENAI_API_KEY": "sk-from-env",
    })
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client", max_retries=0)
        r = client.chat.completions.create(model="any-model-name", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "local-vllm answered any-model-name"
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-from-env"
        assert "sk-from-env" not in gw.config_dump()
    finally:
        gw.close()
