"""Faults while the gateway serves (issue 4): Redis killed and restarted
under rate-limited traffic; the control plane killed and restarted (the
Kubernetes controller with a separately started Envoy, and `aigw run`, whose
Envoy is its child); a provider that accepts connections and never answers,
under concurrent load; clients that disconnect in the middle of a stream."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import openai
import pytest

from conftest import AIGW, ENVOY, ROOT, WASM, basic_config, free_port, write_yaml
from test_openai import post

USER = [{"role": "user", "content": "hi"}]


def envoy_pid(gw):
    """The Envoy `aigw run` started (its child)."""
    with open(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/cmdline", "rb") as c:
                if b"envoy" in c.read().split(b"\0")[0]:
                    return int(pid)
    raise AssertionError("no Envoy child")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(admin, filter_):
    """Envoy's counters and gauges whose name matches `filter_` (a regex)."""
    with urllib.request.urlopen(f"{admin}/stats?filter={filter_}", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def active(admin):
    """Envoy's active request gauges of the gateway's listener and route
    clusters (not the admin listener's or the xDS stream's)."""
    return {k: v for k, v in stats(admin, "(downstream_rq_active|upstream_rq_active)$").items()
            if k.startswith("cluster.aigw/") or (k.startswith("http.") and not k.startswith("http.admin."))}


def wait_until(check, what, timeout=20, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# --- (a) Redis killed while rate-limited traffic is served ------------------

RATE_LIMIT = """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: per-user}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
        limit: {requests: 3, unit: Hour}
"""


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._up, "redis-server to accept", timeout=10, interval=0.05)

    def _up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self):
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.close()


def timed_chat(url, user):
    started = time.time()
    status, _, body = post(url + "/v1/chat/completions", {"model": "test-model", "messages": USER},
                           headers={"x-user-id": user})
    return status, body, time.time() - started


@pytest.mark.parametrize("fail_closed", [False, True])
def test_redis_killed_under_rate_limited_traffic(tmp_path, providers, gateway, redis, fail_closed):
    fake = providers(name="fake")
    args = ["--redis", f"redis://127.0.0.1:{redis.port}"] + (["--rate-limit-fail-closed"] if fail_closed else [])
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(fake.port, extra=RATE_LIMIT))], extra_args=args)

    # Redis up: 3 requests per hour for alice, then 429.
    for _ in range(3):
        assert timed_chat(gw.url, "alice")[0] == 200
    assert timed_chat(gw.url, "alice")[0] == 429

    redis.kill()
    # Redis down: every request gets a prompt answer (no hang), fail open by
    # default (served, even for alice, whose counter cannot be read), fail
    # closed with --rate-limit-fail-closed (refused before the provider).
    served_before = len(fake.requests)
    results = [timed_chat(gw.url, user) for user in ("alice", "bob", "carol", "bob", "alice", "dave")]
    slowest = max(r[2] for r in results)
    assert slowest < 3, results
    statuses = {r[0] for r in results}
    if fail_closed:
        # A 503 in OpenAI's shape (Envoy's own would be an empty 500).
        assert statuses == {503}, results
        error = json.loads(results[0][1])["error"]
        assert error["code"] == "rate_limit_service_unavailable", error
        assert len(fake.requests) == served_before, "a request refused for want of Redis reached the provider"
        assert "refusing (fail closed)" in gw.output()
    else:
        assert statuses == {200}, results
        assert len(fake.requests) == served_before + len(results)
        assert "allowing the request (fail open)" in gw.output()

    # Redis back (empty: it kept nothing): limits hold again within seconds.
    redis.start()

    def limited_again():
        # A fresh user each try: a try that fails open spends nothing.
        user = f"erin-{time.time()}"
        got = [timed_chat(gw.url, user)[0] for _ in range(4)]
        return got == [200, 200, 200, 429]
    wait_until(limited_again, "rate limits to apply again after Redis returned", timeout=15, interval=0.5)


# --- (b) the control plane killed and restarted -----------------------------

def kube_fixture_parts():
    from test_kube import AI, EG, GW, PATHS, TOKEN, FakeApiServer, bootstrap, obj
    return AI, EG, GW, PATHS, TOKEN, FakeApiServer, bootstrap, obj


class FlakyApiServer:
    """The fake API server of test_kube.py that can be made to answer 503."""

    @staticmethod
    def make(paths):
        _, _, _, _, _, FakeApiServer, _, _ = kube_fixture_parts()
        api = FakeApiServer(paths)
        api.down = False
        api.refused = 0
        handler = api.server.RequestHandlerClass
        original = handler.do_GET

        def do_get(self):
            if api.down:
                api.refused += 1
                return self._send(503, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "ServiceUnavailable", "code": 503, "message": "down"})
            return original(self)
        handler.do_GET = do_get
        return api


def route(obj, name, model, port_backend="backend"):
    return obj("aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", name,
               {"parentRefs": [{"name": "gw"}],
                "rules": [{"matches": [{"headers": [{"name": "x-ai-eg-model", "value": model}]}],
                           "backendRefs": [{"name": port_backend}]}]})


def chat_status(url, model):
    try:
        return post(url + "/v1/chat/completions", {"model": model, "messages": USER})[0]
    except OSError:
        return 0


def test_kube_controller_killed_envoy_keeps_serving_then_reconnects(providers):
    AI, EG, GW, PATHS, TOKEN, _, bootstrap, obj = kube_fixture_parts()
    provider = providers(name="kube")
    api = FlakyApiServer.make(PATHS)
    work = tempfile.mkdtemp(prefix="aigw-faults-")
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                   "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api.port}"}}],
                   "users": [{"name": "fake", "user": {"token": "test"}}],
                   "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}, f)
    xds, creds, ratelimit, admin, listen = (free_port() for _ in range(5))
    env = {**os.environ, "KUBECONFIG": kubeconfig, "AIGW_CREDENTIAL_TOKEN": TOKEN}
    url = f"http://127.0.0.1:{listen}"
    log_path = os.path.join(work, "controller.log")
    log = open(log_path, "a")

    def controller():
        return subprocess.Popen(
            [AIGW, "controller", f"--xds-address=127.0.0.1:{xds}", f"--credential-address=127.0.0.1:{creds}",
             f"--rate-limit-address=127.0.0.1:{ratelimit}", f"--credential-authority=127.0.0.1:{creds}",
             f"--wasm-path={WASM}", "--listen-address=127.0.0.1", f"--privileged-port-offset={listen - 80}",
             "--debounce-ms=50"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def output():
        with open(log_path) as f:
            return f.read()

    procs = [controller()]
    boot = os.path.join(work, "bootstrap.json")
    with open(boot, "w") as f:
        json.dump(bootstrap(xds, creds, ratelimit, admin), f)
    envoy_log = open(os.path.join(work, "envoy.log"), "w")
    envoy = subprocess.Popen([ENVOY, "-c", boot, "--log-level", "warning", "--concurrency", "1",
                              "--base-id", str(os.getpid() + 11)],
                             stdout=envoy_log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        from test_kube import put_gateway_and_backend
        put_gateway_and_backend(api, provider.port)
        api.put(AI + "aigatewayroutes", route(obj, "one", "model-one"))
        wait_until(lambda: chat_status(url, "model-one") == 200, "the first model to be served")

        # The controller dies, and while it is down the API server is
        # unreachable too and a new route is applied.
        procs[0].kill()
        procs[0].wait(timeout=10)
        api.down = True
        api.put(AI + "aigatewayroutes", route(obj, "two", "model-two"))
        for _ in range(10):
            assert chat_status(url, "model-one") == 200, "Envoy stopped serving without its control plane"
            time.sleep(0.2)

        # Restarted while the API server is still down: it has no
        # configuration yet and must not push an empty one over the old.
        procs.append(controller())
        refused_before = api.refused
        wait_until(lambda: api.refused > refused_before, "the restarted controller to try the API",
                   timeout=15)
        deadline = time.time() + 4
        while time.time() < deadline:
            assert chat_status(url, "model-one") == 200, \
                "a controller without configuration emptied Envoy's:\n" + output()
            time.sleep(0.2)

        # The API server is back: Envoy (reconnected over ADS) gets the new
        # route, and the old one is still served.
        api.down = False
        wait_until(lambda: chat_status(url, "model-two") == 200, "the new route after the restart", timeout=30)
        assert chat_status(url, "model-one") == 200
        assert provider.requests[-1].json()["model"] == "model-one"
    finally:
        for p in [envoy] + procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        api.close()
        log.close()
        envoy_log.close()


def test_aigw_run_killed_takes_its_envoy_with_it(tmp_path, providers, gateway):
    """`aigw run` owns its Envoy: on SIGTERM it stops Envoy; killed outright
    (SIGKILL, OOM) Envoy gets SIGTERM from the kernel (parent-death signal),
    so no orphan keeps the ports and a new `aigw run` starts cleanly."""
    fake = providers(name="fake")
    config = write_yaml(tmp_path, "gw.yaml", basic_config(fake.port))
    gw = gateway([config])
    # The first request may meet a listener still warming on a loaded machine.
    wait_until(lambda: chat_status(gw.url, "test-model") == 200, "the gateway to answer", timeout=15)
    pid = envoy_pid(gw)
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=10)

    def envoy_gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    wait_until(envoy_gone, "Envoy to exit after aigw was killed", timeout=10)

    # Nothing holds the gateway's port any more. Polled: the leader thread
    # shows "Z" while Envoy's other threads may still be closing its sockets.
    def port_refused():
        try:
            socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
            return False
        except OSError:
            return True
    wait_until(port_refused, "the gateway's port to be released", timeout=10)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "upstream-role"])
def test_frozen_controller_credentials_fetched_before_keep_serving(tmp_path, providers, gateway, direct):
    """The controller stops answering (here: `aigw run` frozen with SIGSTOP;
    the same holds for a dead or hung Kubernetes controller): once the
    filter's credentials are older than their TTL, its background refresh
    fails (the call's 5 s timeout), and every request meanwhile is served at
    once with the credentials fetched before: none waits for the refresh."""
    fake = providers(name="fake")
    config = basic_config(fake.port, api_key="sk-provider-key")
    extra = ["--credential-ttl", "1"] + ([] if direct else ["--no-direct"])
    gw = gateway([write_yaml(tmp_path, "gw.yaml", config)], extra_args=extra)
    # Every worker's VM fetches once (connections spread over both workers).
    for _ in range(12):
        assert chat_status(gw.url, "test-model") == 200
    os.kill(gw.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)
        # Across a whole refresh timeout and the retry after it.
        slowest, deadline = 0.0, time.time() + 8
        while time.time() < deadline:
            started = time.time()
            assert chat_status(gw.url, "test-model") == 200
            slowest = max(slowest, time.time() - started)
            assert fake.requests[-1].headers["authorization"] == "Bearer sk-provider-key"
            time.sleep(0.05)
        assert slowest < 1, f"a request waited {slowest:.1f} s for the frozen controller"
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)
    assert chat_status(gw.url, "test-model") == 200


# --- (c) a provider that accepts connections and never answers ---------------

class BlackHole:
    """Accepts TCP connections, reads what arrives, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


TWO_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: hole}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {hole}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: good}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {good}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: hole}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: hole, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: good}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: good, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: silent-model}}]}}]
    backendRefs: [{{name: hole}}]
    timeouts: {{request: 3s}}
  - matches: [{{headers: [{{name: x-ai-eg-model, value: good-model}}]}}]
    backendRefs: [{{name: good}}]
"""


def test_silent_provider_under_concurrent_load(tmp_path, providers, gateway):
    hole = BlackHole()
    good = providers(name="good")
    try:
        gw = gateway([write_yaml(tmp_path, "gw.yaml", TWO_ROUTES.format(hole=hole.port, good=good.port))])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
        assert client.chat.completions.create(model="good-model", messages=USER).choices[0].message.content
        envoy = envoy_pid(gw)
        rss_before = rss_kib(envoy)

        results, lock = [], threading.Lock()

        def silent(stream):
            started = time.time()
            try:
                if stream:
                    list(client.chat.completions.create(model="silent-model", messages=USER, stream=True))
                else:
                    client.chat.completions.create(model="silent-model", messages=USER)
                outcome = ("answered", None)
            except openai.APIStatusError as e:
                outcome = (e.status_code, e.body)
            except Exception as e:  # noqa: BLE001
                outcome = ("failed", repr(e))
            with lock:
                results.append((outcome, time.time() - started))

        threads = [threading.Thread(target=silent, args=(i % 4 == 0,)) for i in range(64)]
        for t in threads:
            t.start()
        # Meanwhile the other route is served promptly.
        time.sleep(0.5)
        fast = []
        for _ in range(10):
            started = time.time()
            assert client.chat.completions.create(model="good-model", messages=USER).choices[0].message.content
            fast.append(time.time() - started)
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 64
        assert max(fast) < 1.5, fast
        # Every silent request ends at the route's 3 s timeout with a 504 in
        # OpenAI's shape, streamed or not (nothing was sent before it).
        for (status, body), took in results:
            assert status == 504, (status, body)
            assert body["code"] == "upstream_timeout", body
            assert 2.5 < took < 10, took
        wait_until(lambda: not any(active(gw.admin).values()), "no request left active", timeout=10)
        growth = rss_kib(envoy) - rss_before
        assert growth < 64 * 1024, f"Envoy grew {growth} KiB for 64 timed-out requests"
        assert len(hole.conns) >= 1
    finally:
        hole.close()


# --- (d) clients that disconnect mid-stream ----------------------------------

def slow_stream(progress):
    def respond(request):
        count = 3 if request.json().get("user") == "whole" else 100

        def chunks():
            for i in range(count):
                progress.append(i)
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                time.sleep(0.1)
            yield b"data: [DONE]\n\n"
        return 200, {"content-type": "text/event-stream"}, chunks()
    return respond


def test_clients_disconnecting_mid_stream_leave_nothing_active(tmp_path, providers, gateway):
    progress = []
    fake = providers(slow_stream(progress), name="slow")
    gw = gateway([write_yaml(tmp_path, "gw.yaml", basic_config(fake.port))])
    body = json.dumps({"model": "test-model", "stream": True, "messages": USER}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body

    def hang_up():
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(request)
        got = b""
        while b"data: " not in got:
            data = s.recv(4096)
            assert data, got
            got += data
        assert got.startswith(b"HTTP/1.1 200"), got
        s.close()

    threads = [threading.Thread(target=hang_up) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(active(gw.admin)) >= 2
    wait_until(lambda: not any(active(gw.admin).values()), "Envoy's active request gauges to return to 0",
               timeout=10)
    # The provider saw its streams cut: none ran to the end.
    time.sleep(0.5)
    assert len(fake.requests) == 8
    assert len(progress) < 8 * 100 / 2, len(progress)
    # And the gateway serves the next client whole.
    status, _, answer = post(gw.url + "/v1/chat/completions", {"model": "test-model", "stream": True,
                                                                "user": "whole", "messages": USER})
    assert status == 200 and answer.endswith(b"data: [DONE]\n\n"), answer[-200:]
    assert not any(active(gw.admin).values()), active(gw.admin)
