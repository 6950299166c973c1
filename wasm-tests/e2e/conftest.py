"""Starts the real thing for each test: `aigw run` (our controller) with a
real Envoy and our built filter, in front of fake providers on loopback."""
import os
import random
import re
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from fakes import FakeProvider

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
AIGW = os.environ.get("AIGW_BIN", os.path.join(ROOT, "target", "debug", "aigw"))
ENVOY = os.environ.get("AIGW_ENVOY", os.path.join(ROOT, ".venv", "bin", "envoy"))
WASM = os.path.join(ROOT, "target", "aigw_filter.wasm")


_HANDED_OUT = set()


def free_port():
    """A loopback port for a process the test starts (Envoy binds it later).
    Taken below the kernel's ephemeral range (32768-60999): a port from there
    can be taken by any outgoing connection before Envoy binds it (CI saw
    'Address already in use'). Never the same port twice in one run."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


class Gateway:
    def __init__(self, files, resolve=(), extra_args=(), env=None, gateway_port=80):
        self.port = free_port()
        self.admin_port = free_port()
        self.work = tempfile.mkdtemp(prefix="aigw-test-")
        args = [AIGW, "run", "--envoy", ENVOY, "--wasm", WASM, "--admin-port", str(self.admin_port),
                "--work-dir", self.work, "--concurrency", "2",
                "--map-port", f"{gateway_port}={self.port}",
                "--access-log", os.path.join(self.work, "access.log")]
        for f in files:
            args += ["-f", f]
        for r in resolve:
            args += ["--resolve", r]
        args += list(extra_args)
        self.log_path = os.path.join(self.work, "aigw.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self._wait_ready()

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def _wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("aigw exited:\n" + self.output())
            if "listening on" in self.output():
                return
            time.sleep(0.1)
        raise RuntimeError("aigw did not become ready:\n" + self.output())

    def wait_for_version(self, version, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if f"configuration version {version} pushed" in self.output():
                # Give Envoy a moment to apply what it received.
                time.sleep(1.0)
                return
            time.sleep(0.1)
        raise RuntimeError("configuration was not pushed:\n" + self.output())

    def access_log(self, count=1, timeout=10):
        """The last `count` access log entries, waiting for them to be written."""
        import json
        path = os.path.join(self.work, "access.log")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    lines = [json.loads(l) for l in f if l.strip()]
                if len(lines) >= count:
                    return lines
            time.sleep(0.1)
        raise RuntimeError(f"fewer than {count} access log entries")

    def config_dump(self):
        with urllib.request.urlopen(self.admin + "/config_dump?include_eds") as r:
            return r.read().decode()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def providers():
    made = []

    def make(respond=None, name="fake"):
        p = FakeProvider(respond, name)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def gateway():
    made = []

    def start(files, **kwargs):
        g = Gateway(files, **kwargs)
        made.append(g)
        return g

    yield start
    for g in made:
        g.close()


def write_yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def basic_config(port, model="test-model", api_key=None, prefix=None, override=None, extra=""):
    """One Gateway, one OpenAI-schema backend at 127.0.0.1:port, one route."""
    schema = "{name: OpenAI" + (f", prefix: {prefix}" if prefix else "") + "}"
    ref = "name: backend" + (f", modelNameOverride: {override}" if override else "")
    text = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: limits}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  connection: {{bufferLimit: 1Mi}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: backend}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: backend}}
spec:
  schema: {schema}
  backendRef: {{name: backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: {model}}}]}}]
    backendRefs: [{{{ref}}}]
"""
    if api_key:
        text += f"""---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: key}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: backend}}]
  type: APIKey
  apiKey: {{secretRef: {{name: provider-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: provider-key}}
stringData: {{apiKey: {api_key}}}
"""
    return text + extra


def counters(gateway_url_admin):
    with urllib.request.urlopen(gateway_url_admin + "/stats") as r:
        text = r.read().decode()
    return dict(re.findall(r"^(\S+): (\d+)$", text, re.M))


ANTHROPIC_CONFIG = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: claude}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: claude}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: claude, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: key}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}]
  type: AnthropicAPIKey
  anthropicAPIKey: {{secretRef: {{name: anthropic-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-key}}
stringData: {{apiKey: {key}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: claude-sonnet}}]}}]
    backendRefs: [{{name: claude}}]
"""


def anthropic_config(port, key):
    """One Gateway and a native Anthropic backend at 127.0.0.1:port with an
    AnthropicAPIKey policy, serving model claude-sonnet."""
    return ANTHROPIC_CONFIG.format(port=port, key=key)
