"""The seed deployment's YAML, loaded unchanged, routes each model in the
body to its own backend."""
import subprocess

import openai

from conftest import AIGW
from yaml_builders import SEED_FILES



def test_models_reach_their_backends(providers, gateway):
    qwen, gpt_oss = providers(name="qwen3"), providers(name="gpt-oss")
    gw = gateway(SEED_FILES, resolve=[
        f"qwen3.default.svc.cluster.local:8000=127.0.0.1:{qwen.port}",
        f"gpt-oss.default.svc.cluster.local:8000=127.0.0.1:{gpt_oss.port}",
    ])
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for model, fake in (("Qwen/Qwen3-1.7B", qwen), ("openai/gpt-oss-20b", gpt_oss)):
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == f"{fake.name} answered {model}"
        assert fake.requests[-1].headers["host"] == f"{fake.name}.default.svc.cluster.local"
    assert len(qwen.requests) == 1 and len(gpt_oss.requests) == 1
    ids = sorted(m.id for m in client.models.list().data)
    assert ids == ["Qwen/Qwen3-1.7B", "anthropic.claude-3-haiku-20240307-v1:0", "openai/gpt-oss-20b"]


def test_translate_prints_envoy_config():
    out = subprocess.run([AIGW, "translate"] + sum((["-f", f] for f in SEED_FILES), []),
                         capture_output=True, text=True, check=True)
    # (A rule with one backend is served directly: its cluster's name goes on
    # with the backend's.)
    assert '"aigw/default/ai-gateway-route/rule/2' in out.stdout
    assert "bedrock-runtime.us-west-2.amazonaws.com" in out.stdout


def test_bad_reference_is_named_and_rest_translates(tmp_path):
    route = tmp_path / "route.yaml"
    route.write_text(open(SEED_FILES[2]).read().replace("name: qwen3", "name: qwen-typo"))
    out = subprocess.run([AIGW, "translate", "-f", SEED_FILES[0], "-f", SEED_FILES[1], "-f", str(route)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "AIServiceBackend default/qwen-typo does not exist" in out.stderr
    assert "spec.rules[0].backendRefs[0].name" in out.stderr
    assert '"aigw/default/ai-gateway-route/rule/1' in out.stdout
