#!/usr/bin/env python3
"""Side-by-side benchmark (issue 4), driven by scripts/bench.sh.

Starts, all on 127.0.0.1: the Rust fake upstream, plain Envoy (no filter),
Envoy with our filter through `aigw run`, the LiteLLM proxy and Portkey's
gateway (when installed). Then, in rounds, for each test (concurrency 1,
streamed 200 chunks at concurrency 1, saturation at concurrency 64) it runs wrk
against every scenario in turn, so machine noise hits all of them alike.
Writes results.md, results.json and results.png next to this file.
Also: OpenAI chat -> AWS Bedrock Converse with SigV4 through the same aigw
(scenario `bedrock`), and the time a configuration of 2000 AIGatewayRoutes
takes from the file write to Envoy's ACK (`push`, release and debug aigw),
plus `aigw translate` on it. `--only bedrock,push` runs just those (with
direct, plain Envoy and aigw passthrough for comparison) and writes
results-only.{md,json} instead, leaving the full run's results alone.
Every process is started in its own process group and killed at exit.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LUA = os.path.join(HERE, "chat.lua")
CHAT_BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello."}]}'
STREAM_BODY = (b'{"model":"bench-model","stream":true,"stream_options":{"include_usage":true},'
               b'"messages":[{"role":"user","content":"Say hello."}]}')

PROCS = []


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def cleanup(*_):
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + 8
    for p in PROCS:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    PROCS.clear()


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, work, env=None, cwd=None):
    out = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, **(env or {})}, cwd=cwd or ROOT)
    p.log_path = out.name
    PROCS.append(p)
    return p


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def post(url, body, timeout=10, headers=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer sk-bench", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def check_stream(url, headers=None, model="bench-model"):
    """None when a streamed chat completion comes back whole, else the reason."""
    try:
        status, body = post(url, STREAM_BODY.replace(b"bench-model", model.encode()), timeout=10,
                            headers=headers)
    except urllib.error.HTTPError as e:
        return f"stream answered {e.code}: {e.read()[:300]!r}"
    except Exception as e:
        return f"stream failed: {e!r}"
    if status != 200:
        return f"stream answered {status}: {body[:300]!r}"
    if b"[DONE]" not in body:
        return f"stream had no [DONE]: {body[-300:]!r}"
    return None


def check(url, proc, timeout, headers=None, model="bench-model"):
    """Waits until a chat completion comes back with usage.
    Returns None when they do, else the reason."""
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"exited with {proc.returncode}: {tail(proc.log_path)}"
        try:
            status, body = post(url, CHAT_BODY.replace(b"bench-model", model.encode()), timeout=5,
                                headers=headers)
            if status == 200 and b'"usage"' in body:
                return None
            last = f"answered {status}: {body[:300]!r}"
        except urllib.error.HTTPError as e:
            last = f"answered {e.code}: {e.read()[:300]!r}"
        except Exception as e:  # connection refused while starting
            last = repr(e)
        time.sleep(0.5)
    return f"not ready after {timeout}s: {last}"


# ---- process tree memory -------------------------------------------------

def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the summed VmRSS of a process tree every 100 ms while active."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        self._pids = tree(self.pid)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(status_kib(p, "VmRSS") for p in self._pids))
            self._stop.wait(0.1)

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


# ---- scenarios -------------------------------------------------------------

def envoy_bootstrap(port, admin_port, upstream_port):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "upstream", "timeout": "60s"}}]}]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/"
                                             "envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": [{
                "name": "upstream", "type": "STATIC", "connect_timeout": "5s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }


def floor_bootstrap(port, admin_port, upstream_port, wasm, upstream_role=True, router_role="router"):
    """Plain Envoy plus the floor filter where aigw's filter runs: in the
    listener (holding the request and reading its body; with `router_role`
    `router+answer` also reading every chunk of the answer) and, with
    `upstream_role`, in the router's upstream filters (a context per attempt)."""
    boot = envoy_bootstrap(port, admin_port, upstream_port)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]

    def wasm_filter(name, role):
        return {"name": name, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": name, "root_id": "floor", "allow_on_headers_stop_iteration": True,
                       "vm_config": {"vm_id": "floor", "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": wasm}}},
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                         "value": role}}}}
    router = hcm["http_filters"][0]
    if upstream_role:
        router["typed_config"]["upstream_http_filters"] = [
            wasm_filter("floor.upstream", "upstream"),
            {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]
    hcm["http_filters"].insert(0, wasm_filter("floor.router", router_role))
    return boot


# The Gateway, and the fake upstream as an OpenAI backend `{name}`
# (templates for str.format: literal braces are doubled).
GATEWAY_CONFIG = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"""
OPENAI_BACKEND = """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
"""
# Every run's configuration starts with these (soak.py's too), backend
# `fake`; still a template for {port}.
BASE_CONFIG = GATEWAY_CONFIG + OPENAI_BACKEND.replace("{name}", "fake")
# The fake upstream again as Bedrock Converse, signed with the AWS
# credentials of aigw's environment.
BEDROCK_CONFIG = """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: bedrock}}
spec:
  schema: {{name: AWSBedrock}}
  backendRef: {{name: fake, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: aws}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}]
  type: AWSCredentials
  awsCredentials: {{region: us-east-1}}
"""
AIGW_CONFIG = BASE_CONFIG + """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-model}}]}}]
    backendRefs: [{{name: fake}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-bedrock}}]}}]
    backendRefs: [{{name: bedrock}}]
""" + BEDROCK_CONFIG
# Static AWS credentials from aigw's environment sign the Bedrock requests.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench/secret/key"}

LITELLM_CONFIG = """
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: sk-bench
"""


NO_DIRECT_LABEL = "Envoy + aigw filter with `--no-direct` (every request through the upstream role)"
FLOOR_LABEL = "Envoy + no-op proxy-wasm filters (the floor: hold the request, read its body)"
# The same without the upstream-role instance: what a context per attempt costs.
FLOOR_ROUTER_LABEL = "Envoy + the no-op filter in the listener only (no upstream wasm filter)"
# The same, also reading every chunk of the answer: the least a filter that
# counts tokens does (aigw also holds a JSON answer to check it).
FLOOR_ANSWER_LABEL = "Envoy + the no-op filter in the listener only, also reading the answer (a token counter's floor)"


class Scenario:
    def __init__(self, key, label, url, proc=None):
        self.key, self.label, self.url, self.proc = key, label, url, proc
        self.error = None
        self.runs = {}  # test -> list of wrk results
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.headers = {}
        self.stream_error = None
        self.model = "bench-model"


def run_wrk(args, url, test, duration, headers=None, model="bench-model"):
    threads, conns = (2, 64) if test == "c64" else (1, 1)
    cmd = [args.wrk, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", LUA, url]
    env = {**os.environ, "BENCH_STREAM": "1" if test == "stream" else "0", "BENCH_MODEL": model,
           "BENCH_HEADERS": ";".join(f"{k}: {v}" for k, v in (headers or {}).items())}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             timeout=duration + 30).stdout
    except subprocess.TimeoutExpired:
        return {"error": "wrk timed out"}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            r = json.loads(line[6:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in ("connect_err", "read_err", "write_err",
                                             "timeout_err", "status_err"))
            return r
    return {"error": "no result from wrk: " + out[-300:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aigw", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--floor-wasm", default="", help="scripts/bench/floor-filter, built")
    ap.add_argument("--litellm", default="")
    ap.add_argument("--portkey", default="", help="path to Portkey's built start-server.js")
    ap.add_argument("--skip", default="", help="why LiteLLM/Portkey are missing, key=reason;...")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-seconds", type=int, default=5)
    ap.add_argument("--load-seconds", type=int, default=10)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads")
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--only", default="", help="comma list of bedrock,push: run just these")
    ap.add_argument("--push-routes", type=int, default=2000)
    ap.add_argument("--aigw-debug", default="", help="a debug aigw build, also timed for the push")
    ap.add_argument("--hot-paths", default="",
                    help="filter/examples/hot_paths: native binary and wasm32-wasip1 module, comma-separated")
    ap.add_argument("--timing-wasm", default="",
                    help="the filter built with --features callback-timing: time inside the VM per callback")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    work = tempfile.mkdtemp(prefix="aigw-bench-")
    load_start = open("/proc/loadavg").read().split()[:3]
    log("work dir", work)
    scenarios = []
    only = {o.strip() for o in args.only.split(",") if o.strip()}
    unknown = only - {"bedrock", "push"}
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))} (bedrock, push)")
    want_scenarios = not only or "bedrock" in only
    callbacks = None
    try:
        logs = {}
        if want_scenarios:
            # The fake upstream.
            up_port = free_port()
            up = start("upstream", [args.upstream, "--port", str(up_port), "--chunks", str(args.chunks),
                                    "--threads", "2"], work)
            direct = Scenario("direct", "direct to upstream",
                              f"http://127.0.0.1:{up_port}/v1/chat/completions", up)
            scenarios.append(direct)

            # Plain Envoy.
            port, admin = free_port(), free_port()
            boot = os.path.join(work, "envoy-plain.json")
            with open(boot, "w") as f:
                json.dump(envoy_bootstrap(port, admin, up_port), f)
            p = start("envoy-plain", [args.envoy, "-c", boot, "--concurrency", str(args.concurrency),
                                      "--log-level", "warning", "--base-id", str(os.getpid() + 1)], work)
            scenarios.append(Scenario("envoy", "plain Envoy (no filter)",
                                      f"http://127.0.0.1:{port}/v1/chat/completions", p))

            # The floor: what any proxy-wasm filter that routes by model costs,
            # with and without a context per attempt upstream.
            for key, label, upstream_role, router_role, base_id in (
                    ("floor", FLOOR_LABEL, True, "router", 2),
                    ("floor_router", FLOOR_ROUTER_LABEL, False, "router", 3),
                    ("floor_answer", FLOOR_ANSWER_LABEL, False, "router+answer", 4)):
                if not args.floor_wasm:
                    s = Scenario(key, label, "")
                    s.error = "the floor filter was not built (needs the wasm32-wasip1 target)"
                    scenarios.append(s)
                    continue
                port, admin = free_port(), free_port()
                boot = os.path.join(work, f"envoy-{key}.json")
                with open(boot, "w") as f:
                    json.dump(floor_bootstrap(port, admin, up_port, args.floor_wasm, upstream_role,
                                              router_role), f)
                p = start(f"envoy-{key}", [args.envoy, "-c", boot, "--concurrency", str(args.concurrency),
                                           "--log-level", "warning",
                                           "--base-id", str(os.getpid() + base_id)], work)
                scenarios.append(Scenario(key, label, f"http://127.0.0.1:{port}/v1/chat/completions", p))

            # Envoy with our filter, through aigw run.
            port, admin = free_port(), free_port()
            cfg = os.path.join(work, "aigw.yaml")
            with open(cfg, "w") as f:
                f.write(AIGW_CONFIG.format(port=up_port))
            aigw_work = os.path.join(work, "aigw")
            os.makedirs(aigw_work)
            p = start("aigw", [args.aigw, "run", "--envoy", args.envoy, "--wasm", args.wasm,
                               "--admin-port", str(admin), "--work-dir", aigw_work,
                               "--concurrency", str(args.concurrency), "--map-port", f"80={port}",
                               # Like plain Envoy: no access log, no terminal lines.
                               "--traffic", "quiet", "-f", cfg], work, env=AWS_ENV)
            scenarios.append(Scenario("aigw", "Envoy + aigw filter",
                                      f"http://127.0.0.1:{port}/v1/chat/completions", p))
            # The same gateway, a route to an AWSBedrock backend on the same fake
            # upstream: OpenAI chat translated to Converse, SigV4-signed, the
            # Converse answer translated back.
            s = Scenario("bedrock", "Envoy + aigw filter, OpenAI -> Bedrock Converse + SigV4",
                         f"http://127.0.0.1:{port}/v1/chat/completions", p)
            s.model = "bench-bedrock"
            scenarios.append(s)
            # The same with every request through the upstream role
            # (`--no-direct`): what serving single-backend rules from the
            # listener saves.
            if not only:
                port, admin = free_port(), free_port()
                aigw_work = os.path.join(work, "aigw-no-direct")
                os.makedirs(aigw_work)
                p = start("aigw-no-direct", [args.aigw, "run", "--envoy", args.envoy, "--wasm", args.wasm,
                                             "--admin-port", str(admin), "--work-dir", aigw_work,
                                             "--concurrency", str(args.concurrency), "--map-port", f"80={port}",
                                             "--traffic", "quiet", "--no-direct", "-f", cfg], work, env=AWS_ENV)
                scenarios.append(Scenario("aigw_upstream", NO_DIRECT_LABEL,
                                          f"http://127.0.0.1:{port}/v1/chat/completions", p))

            skipped = dict(kv.split("=", 1) for kv in args.skip.split(";") if "=" in kv)
            # LiteLLM.
            if only:
                pass
            elif args.litellm:
                port = free_port()
                cfg = os.path.join(work, "litellm.yaml")
                with open(cfg, "w") as f:
                    f.write(LITELLM_CONFIG.format(port=up_port))
                p = start("litellm", [args.litellm, "--config", cfg, "--host", "127.0.0.1",
                                      "--port", str(port), "--num_workers", "2"], work,
                          env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                               "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"})
                scenarios.append(Scenario("litellm", "LiteLLM proxy (2 workers)",
                                          f"http://127.0.0.1:{port}/v1/chat/completions", p))
            else:
                s = Scenario("litellm", "LiteLLM proxy (2 workers)", "")
                s.error = skipped.get("litellm", "not installed")
                scenarios.append(s)
            # Portkey.
            if only:
                pass
            elif args.portkey:
                port = free_port()
                p = start("portkey", ["node", args.portkey, f"--port={port}", "--headless"], work)
                s = Scenario("portkey", "Portkey gateway (Node)",
                             f"http://127.0.0.1:{port}/v1/chat/completions", p)
                s.headers = {"x-portkey-provider": "openai",
                             "x-portkey-custom-host": f"http://127.0.0.1:{up_port}/v1"}
                scenarios.append(s)
            elif "portkey" in skipped:
                s = Scenario("portkey", "Portkey gateway (Node)", "")
                s.error = skipped["portkey"]
                scenarios.append(s)

            for s in scenarios:
                if s.error:
                    continue
                s.error = check(s.url, s.proc, 90 if s.key in ("litellm", "portkey") else 30, s.headers,
                                s.model)
                if s.error is None and s.key == "bedrock":
                    s.stream_error = "not measured (the fake upstream answers Converse JSON only)"
                elif s.error is None:
                    s.stream_error = check_stream(s.url, s.headers, s.model)
                log(s.key, "ready" if s.error is None else "FAILED: " + s.error,
                    "" if s.stream_error is None else ("(stream " if s.key == "bedrock" else "(stream FAILED: ")
                    + s.stream_error + ")")
            live = [s for s in scenarios if s.error is None]
            if not any(s.key == "direct" for s in live):
                raise SystemExit("the fake upstream does not answer: " + (direct.error or ""))

            # Warm-up: a short load on each.
            for s in live:
                run_wrk(args, s.url, "c64", 2, s.headers, s.model)

            tests = [("c1", args.latency_seconds), ("stream", args.latency_seconds),
                     ("c64", args.load_seconds)]
            for rnd in range(args.rounds):
                order = live[rnd % len(live):] + live[:rnd % len(live)]
                for test, seconds in tests:
                    for s in order:
                        if s.proc is not None and s.proc.poll() is not None:
                            s.error = s.error or f"exited during the run: {tail(s.proc.log_path)}"
                            continue
                        if test == "stream" and s.stream_error:
                            continue
                        if s.key == "direct" or s.proc is None:
                            r = run_wrk(args, s.url, test, seconds, s.headers, s.model)
                        else:
                            with Sampler(s.proc.pid) as smp:
                                r = run_wrk(args, s.url, test, seconds, s.headers, s.model)
                            s.peak_rss_kib = max(s.peak_rss_kib, smp.peak)
                        s.runs.setdefault(test, []).append(r)
                        log(f"round {rnd + 1} {test:6} {s.key:8}",
                            r.get("error") or f"p50 {r['p50_us']} us p99 {r['p99_us']} us "
                                              f"{r['rps']:.0f} req/s errors {r['errors']}")
            for s in live:
                if s.proc is not None:
                    s.hwm_kib = sum(status_kib(p, "VmHWM") for p in tree(s.proc.pid))
            logs = {s.key: tail(s.proc.log_path, 5) for s in scenarios if s.proc is not None}
            if args.timing_wasm:
                # Alone with the fake upstream, so nothing else runs while it
                # is timed.
                for s in scenarios:
                    if s.proc is not None and s.key != "direct":
                        stop(s.proc)
                callbacks = callback_timing(args, work, up_port)
    finally:
        cleanup()

    push = None
    if not only or "push" in only:
        try:
            push = measure_push(args, work)
        finally:
            cleanup()

    results = summarize(scenarios, args)
    results["loadavg"] = {"start": load_start, "end": open("/proc/loadavg").read().split()[:3]}
    results["logs_tail"] = logs
    results["push"] = push
    results["callbacks"] = callbacks
    results["hot_paths"] = hot_paths(args) if args.hot_paths and not only else None
    name = "results-only" if only else "results"
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(results, os.path.join(args.out, name + ".md"))
    if not only:
        try:
            chart(results, os.path.join(args.out, "results.png"))
        except Exception as e:  # matplotlib missing: the table still stands
            log("no chart:", e)
    log("wrote", os.path.join(args.out, name + ".md"))


# ---- where the filter's time goes: callbacks timed inside the VM ------------

TIMING_PREFIX = "aigw callback timing "


def callback_timing(args, work, up_port):
    """Per model: microseconds per request in each callback of each role,
    from the filter built with `callback-timing`, at concurrency 1. A fresh
    gateway per model, so that no report mixes the two."""
    out = {}
    for model in ("bench-model", "bench-bedrock"):
        port, admin = free_port(), free_port()
        aigw_work = os.path.join(work, f"aigw-timing-{model}")
        os.makedirs(aigw_work)
        p = start(f"aigw-timing-{model}",
                  [args.aigw, "run", "--envoy", args.envoy, "--wasm", args.timing_wasm,
                   "--admin-port", str(admin), "--work-dir", aigw_work,
                   "--concurrency", str(args.concurrency), "--map-port", f"80={port}",
                   "--traffic", "quiet", "-f", os.path.join(work, "aigw.yaml")], work, env=AWS_ENV)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        error = check(url, p, 30, model=model)
        if error is None:
            # Warm-up, as every scenario gets: V8 compiles the hot functions
            # again, optimized, only after enough calls.
            run_wrk(args, url, "c64", 2, model=model)
            r = run_wrk(args, url, "c1", max(2 * args.latency_seconds, 10), model=model)
            error = r.get("error")
            if error is None:
                log("callbacks", model, f"c1 p50 {r['p50_us']} us, {r['rps']:.0f} req/s")
        time.sleep(0.5)
        reports = []
        with open(p.log_path, errors="replace") as f:
            for line in f:
                if TIMING_PREFIX in line:
                    try:
                        reports.append(json.loads(line.split(TIMING_PREFIX, 1)[1]))
                    except ValueError:
                        pass
        stop(p)
        if not reports:
            out[model] = {"error": error or "no timing report in the log"}
            continue
        # The first report of each worker includes the warm-up; the rest
        # are steady state.
        steady = reports[2:] or reports
        out[model] = merge_reports(steady)
        log("callbacks", model, f"{out[model]['in_vm_us_per_request']:.1f} us per request in the VM")
    return out


HOT_STEPS = {
    "bench-model": ["parse_request", "prepare openai", "openai headers to write", "openai answer check",
                    "openai answer usage"],
    "bench-bedrock": ["parse_request", "prepare converse", "sigv4 sign converse",
                      "converse answer to chat"],
}


def hot_paths(args):
    """The filter's pure per-request steps timed natively and in V8 (Node,
    optimizing compiler only, as Envoy runs it), with nothing else running."""
    native, wasm = args.hot_paths.split(",")
    runs = {"native": [native], "v8": ["node", "--no-liftoff", os.path.join(HERE, "run-wasi.mjs"), wasm]}
    out = {}
    for engine, argv in runs.items():
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            out[engine] = {"error": str(e)}
            continue
        steps = {}
        for line in text.splitlines():
            if line.startswith("HOT "):
                step = json.loads(line[4:])
                steps[step["name"]] = step["us"]
        out[engine] = steps or {"error": "no output"}
        log("hot paths", engine, steps)
    return out


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except Exception:
        pass


def merge_reports(reports):
    """The median over `reports` of every figure."""
    def median(values):
        return statistics.median(values) if values else 0.0
    merged = {"reports": len(reports),
              "clock_read_us": median([r["clock_read_us"] for r in reports]),
              "in_vm_us_per_request": median([r["in_vm_us_per_request"] for r in reports]),
              "roles": {}}
    for role in ("router", "upstream"):
        names = {c for r in reports for c in r["roles"].get(role, {})}
        merged["roles"][role] = {
            c: {k: median([r["roles"][role][c][k] for r in reports if c in r["roles"].get(role, {})])
                for k in ("us", "calls")}
            for c in sorted(names)}
    return merged


# ---- configuration push: N AIGatewayRoutes ---------------------------------

PUSH_ROUTE = """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route-{i}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: model-{i}}}]}}]
    backendRefs: [{{name: {backend}}}]
"""
# How the routes' backends are laid out: every route to one backend (rules
# with the same backends share a cluster), or a backend of its own each
# (one cluster per route: the most Envoy has to apply).
PUSH_SHAPES = {"one backend": False, "a backend each": True}


def push_config(port, routes, distinct=False):
    text = GATEWAY_CONFIG.format()
    if not distinct:
        text += OPENAI_BACKEND.format(name="fake", port=port)
    for i in range(routes):
        backend = f"fake-{i}" if distinct else "fake"
        if distinct:
            text += OPENAI_BACKEND.format(name=backend, port=port)
        text += PUSH_ROUTE.format(i=i, backend=backend)
    return text


def wait_log(path, pattern, deadline):
    """Polls a log every 5 ms for a regex; returns (seconds when seen, match)."""
    import re
    while time.time() < deadline:
        with open(path, errors="replace") as f:
            m = re.search(pattern, f.read())
        if m:
            return time.time(), m
        time.sleep(0.005)
    return None, None


def push_once(binary, args, work, up_port, tag, distinct):
    """One aigw run serving one route; then the file is replaced by one with
    args.push_routes AIGatewayRoutes. Times: the write -> aigw's "pushed" ->
    its "acknowledged by Envoy" line -> the last model answering 200."""
    d = os.path.join(work, f"push-{tag}".replace(" ", "-"))
    os.makedirs(d)
    cfg = os.path.join(d, "routes.yaml")
    with open(cfg, "w") as f:
        f.write(push_config(up_port, 1))
    port, admin = free_port(), free_port()
    p = start(f"aigw-push-{tag}".replace(" ", "-"), [binary, "run", "--envoy", args.envoy, "--wasm", args.wasm,
                                   "--admin-port", str(admin), "--work-dir", d,
                                   "--concurrency", str(args.concurrency), "--map-port", f"80={port}",
                                   "--traffic", "quiet", "-f", cfg], work)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = b'{"model":"model-%d","messages":[{"role":"user","content":"hi"}]}'
    err = check(url, p, 60, model="model-0")
    if err:
        return {"error": err}
    big = push_config(up_port, args.push_routes, distinct)
    tmp = cfg + ".new"
    with open(tmp, "w") as f:
        f.write(big)
    time.sleep(1.1)  # a later mtime than the first file's
    t0 = time.time()
    os.replace(tmp, cfg)
    deadline = t0 + 300
    t_pushed, _ = wait_log(p.log_path, r"configuration version 2 pushed", deadline)
    t_ack, m = wait_log(p.log_path, r"configuration version 2 acknowledged by Envoy (\d+) ms", deadline)
    t_served = None
    last = args.push_routes - 1
    while t_ack and time.time() < deadline:
        try:
            status, _ = post(url, body % last, timeout=5)
            if status == 200:
                t_served = time.time()
                break
        except Exception:
            pass
        time.sleep(0.01)
    rss = sum(status_kib(q, "VmRSS") for q in tree(p.pid))
    out = {"routes": args.push_routes, "yaml_bytes": len(big),
           "write_to_pushed_ms": None if t_pushed is None else 1000 * (t_pushed - t0),
           "write_to_ack_ms": None if t_ack is None else 1000 * (t_ack - t0),
           "seen_to_ack_ms": None if m is None else int(m.group(1)),
           "write_to_served_ms": None if t_served is None else 1000 * (t_served - t0),
           "rss_after_mib": rss / 1024}
    if t_ack is None:
        out["error"] = "no ACK within 300 s: " + tail(p.log_path)
    return out


def time_translate(binary, args, work, up_port, runs, distinct):
    path = os.path.join(work, "translate-routes.yaml")
    with open(path, "w") as f:
        f.write(push_config(up_port, args.push_routes, distinct))
    times = []
    for _ in range(runs):
        t0 = time.time()
        r = subprocess.run([binary, "translate", "-f", path, "--wasm", args.wasm],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            return {"error": r.stderr[-300:]}
        times.append(1000 * (time.time() - t0))
    return {"runs_ms": times, "median_ms": statistics.median(times)}


def measure_push(args, work):
    """The push of args.push_routes AIGatewayRoutes, release (and debug) aigw."""
    up_port = free_port()
    start("upstream-push", [args.upstream, "--port", str(up_port), "--threads", "1"], work)
    out = {"loadavg_start": open("/proc/loadavg").read().split()[:3]}
    for build, binary in (("release", args.aigw), ("debug", args.aigw_debug)):
        if not binary or not os.path.exists(binary):
            continue
        for shape, distinct in PUSH_SHAPES.items():
            tag = f"{build}, {shape}"
            log(f"push: {args.push_routes} AIGatewayRoutes, {shape}, with the {build} aigw")
            out[tag] = push_once(binary, args, work, up_port, tag, distinct)
            out[tag]["translate"] = time_translate(
                binary, args, work, up_port, 3 if build == "release" else 1, distinct)
            log(f"push {tag}:", json.dumps(out[tag]))
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    return out


def med(runs, key):
    vals = [r[key] for r in runs if "error" not in r]
    return statistics.median(vals) if vals else None


def summarize(scenarios, args):
    rows = {}
    for s in scenarios:
        row = {"label": s.label, "error": s.error, "stream_error": s.stream_error}
        for test in ("c1", "stream", "c64"):
            runs = s.runs.get(test, [])
            row[test] = {k: med(runs, k) for k in ("p50_us", "p99_us", "rps")}
            row[test]["errors"] = sum(r.get("errors", 0) for r in runs if "error" not in r)
            row[test]["requests"] = sum(r.get("requests", 0) for r in runs if "error" not in r)
            row[test]["runs"] = runs
        row["peak_rss_mib"] = s.peak_rss_kib / 1024 if s.peak_rss_kib else None
        row["hwm_sum_mib"] = s.hwm_kib / 1024 if s.hwm_kib else None
        rows[s.key] = row
    d = rows.get("direct")
    if d is None:  # --only push: no scenarios ran
        d = {"c1": {"p50_us": None, "p99_us": None}, "stream": {"p50_us": None}}

    def sub(a, b):
        return None if a is None or b is None else a - b

    for key, row in rows.items():
        row["added_p50_us"] = sub(row["c1"]["p50_us"], d["c1"]["p50_us"])
        row["added_p99_us"] = sub(row["c1"]["p99_us"], d["c1"]["p99_us"])
        ttlb = sub(row["stream"]["p50_us"], d["stream"]["p50_us"])
        row["per_chunk_us"] = None if ttlb is None else ttlb / args.chunks
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    envoy_version = subprocess.run([args.envoy, "--version"], capture_output=True,
                                   text=True).stdout.strip().split("version:")[-1].strip()
    envoy_version = (envoy_version.split("/") + ["", ""])[1] or envoy_version
    git = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "filter",
                            "xds-controller"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "envoy": envoy_version, "commit": git, "tree_dirty": bool(dirty),
        "rounds": args.rounds, "chunks": args.chunks, "concurrency": args.concurrency,
        "latency_seconds": args.latency_seconds, "load_seconds": args.load_seconds,
        "rows": rows,
    }


def fmt(v, spec="{:.0f}", none="n/a"):
    return none if v is None else spec.format(v)


def write_markdown(res, path):
    rows = res["rows"]
    e, a, l = rows.get("envoy"), rows.get("aigw"), rows.get("litellm")
    L = []
    L.append("# Benchmark: aigw (Envoy + Rust wasm filter) side by side\n")
    L.append(f"Generated by `scripts/bench.sh` on {res['date']}. Machine: {res['nproc']} CPUs, "
             f"{res['cpu']}, Linux {res['kernel']}. Envoy {res['envoy']}. Code: `{res['commit']}`"
             + (" plus uncommitted work in filter/ or xds-controller/" if res["tree_dirty"] else "")
             + ".\n")
    L.append(f"Load average (1, 5, 15 min) at the start: {' '.join(res['loadavg']['start'])}; at "
             f"the end: {' '.join(res['loadavg']['end'])} (other work on the machine shares the "
             f"cores; compare scenarios within this run, not across runs).\n")
    L.append(f"Everything on 127.0.0.1 in one run: {res['rounds']} rounds; in each round every test "
             f"runs against every scenario in turn (medians of the rounds below). Load generator: "
             f"wrk. Concurrency 1: `wrk -t1 -c1 -d{res['latency_seconds']}s`; saturation: "
             f"`wrk -t2 -c64 -d{res['load_seconds']}s`; streaming: {res['chunks']} SSE chunks plus "
             f"a usage chunk, concurrency 1, time to last byte. Envoy runs {res['concurrency']} "
             f"worker threads in every Envoy scenario. The fake upstream, wrk and the gateway share "
             f"the same {res['nproc']} cores.\n")
    L.append("| scenario | p50 c=1 (us) | p99 c=1 (us) | added p50 over direct (us) | added p99 over "
             "direct (us) | req/s at c=64 | % of plain Envoy | stream TTLB p50 (us) | per-chunk "
             "overhead vs direct (us) | peak RSS (MiB) | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in rows.items():
        if r["error"]:
            L.append(f"| {r['label']} | did not run: {r['error'][:200].replace('|', '/')} "
                     "| | | | | | | | | |")
            continue
        pct = None
        if e and e["c64"]["rps"] and r["c64"]["rps"]:
            pct = 100 * r["c64"]["rps"] / e["c64"]["rps"]
        errs = sum(r[t]["errors"] for t in ("c1", "stream", "c64"))
        L.append(f"| {r['label']} | {fmt(r['c1']['p50_us'])} | {fmt(r['c1']['p99_us'])} | "
                 f"{fmt(r['added_p50_us'], '{:+.0f}')} | {fmt(r['added_p99_us'], '{:+.0f}')} | "
                 f"{fmt(r['c64']['rps'])} | {fmt(pct, '{:.1f} %')} | {fmt(r['stream']['p50_us'])} | "
                 f"{fmt(r['per_chunk_us'], '{:+.2f}')} | "
                 f"{fmt(r['peak_rss_mib'], '{:.1f}', 'n/a (not a gateway)')} | {errs} |")
    L.append("")
    for key, r in rows.items():
        if r.get("stream_error") and not r["error"]:
            L.append(f"- {r['label']}: streaming not measured: {r['stream_error'][:300]}")
    L.append("")
    L.append("Peak RSS: the largest sum of VmRSS over the gateway's process tree (Envoy + aigw, or "
             "all LiteLLM processes), sampled every 100 ms during its tests.\n")
    L.append("## Against the targets of issue 4 (same run)\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")

    def target(name, val, ok):
        L.append(f"| {name} | {val} | {'n/a' if ok is None else ('yes' if ok else 'NO')} |")

    if a and e and not a["error"] and not e["error"]:
        d50 = a["c1"]["p50_us"] - e["c1"]["p50_us"]
        target("filter adds <= 60 us p50 over plain Envoy (c=1)", f"{d50:+.0f} us", d50 <= 60)
        d99 = a["c1"]["p99_us"] - e["c1"]["p99_us"]
        target("(for information) filter's added p99 over plain Envoy", f"{d99:+.0f} us", None)
        pct = 100 * a["c64"]["rps"] / e["c64"]["rps"]
        target(">= 80 % of plain Envoy's throughput (c=64)", f"{pct:.1f} %", pct >= 80)
        pc = a["per_chunk_us"]
        target("< 20 us per streamed chunk (vs direct)", f"{pc:+.2f} us", pc < 20)
        pce = (a["stream"]["p50_us"] - e["stream"]["p50_us"]) / res["chunks"]
        target("(for information) per chunk vs plain Envoy", f"{pce:+.2f} us", None)
    def against_plain(row, added, throughput):
        """Two lines for information: what `row` adds at c=1 and its share of
        plain Envoy's throughput."""
        if row and e and not row["error"] and not e["error"] and row["c64"]["rps"]:
            target(f"(for information) {added}, p50 c=1",
                   f"{row['c1']['p50_us'] - e['c1']['p50_us']:+.0f} us", None)
            target(f"(for information) {throughput}",
                   f"{100 * row['c64']['rps'] / e['c64']['rps']:.1f} % of plain Envoy", None)

    f = rows.get("floor")
    against_plain(f, "the floor: any proxy-wasm filter that reads the body adds", "the floor's throughput")
    if f and not f["error"]:
        against_plain(rows.get("floor_router"), "the floor without its upstream wasm filter adds",
                      "its throughput")
        against_plain(rows.get("floor_answer"), "that floor also reading every chunk of the answer adds",
                      "its throughput")
    against_plain(rows.get("aigw_upstream"), "`--no-direct` (the upstream role on every request) adds",
                  "its throughput")
    b = rows.get("bedrock")
    if b and e and a and not b["error"] and not e["error"] and b["c1"]["p50_us"] and b["c64"]["rps"]:
        d50 = b["c1"]["p50_us"] - e["c1"]["p50_us"]
        target("OpenAI -> Bedrock Converse + SigV4 adds <= 120 us p50 over plain Envoy (c=1)",
               f"{d50:+.0f} us", d50 <= 120)
        pct = 100 * b["c64"]["rps"] / e["c64"]["rps"]
        target(">= 60 % of plain Envoy's throughput with translation and signing (c=64)",
               f"{pct:.1f} %", pct >= 60)
        if not a["error"] and a["c1"]["p50_us"]:
            target("(for information) translation + signing vs OpenAI passthrough, p50 c=1",
                   f"{b['c1']['p50_us'] - a['c1']['p50_us']:+.0f} us", None)
            target("(for information) translation + signing vs OpenAI passthrough, req/s c=64",
                   f"{100 * b['c64']['rps'] / a['c64']['rps']:.1f} % of passthrough", None)
    if a and l and not a["error"] and not l["error"] and l["c64"]["rps"]:
        x = a["c64"]["rps"] / l["c64"]["rps"]
        target(">= 50x LiteLLM's throughput", f"{x:.1f}x", x >= 50)
    elif l:
        target(">= 50x LiteLLM's throughput", "LiteLLM did not run", None)
    p = rows.get("portkey")
    if a and p and not a["error"] and not p["error"] and p["c64"]["rps"]:
        target("(for information) our throughput / Portkey's",
               f"{a['c64']['rps'] / p['c64']['rps']:.1f}x", None)
    L.append("")
    push = res.get("push")
    if push:
        n = next((v["routes"] for v in push.values() if isinstance(v, dict) and "routes" in v), "?")
        L.append(f"## Configuration push: {n} AIGatewayRoutes\n")
        L.append(f"`aigw run` serving one route; its `-f` file is then replaced (atomic rename) by one with {n} "
                 "AIGatewayRoutes (one rule, one model each), either all to one backend (rules with the same "
                 f"backends share one cluster) or each to a backend of its own ({n} clusters). Times from the "
                 "rename: aigw's `configuration version 2 pushed` line, its `acknowledged by Envoy` line (Envoy "
                 "ACKed clusters, listeners and routes), and the last model answering 200. aigw polls its files "
                 "every 200 ms, so up to 0.2 s of \"write -> pushed\" is that poll; \"seen -> ACK\" is aigw's "
                 "own figure from noticing the change (load, translate, encode, push, Envoy applies and "
                 "ACKs). `aigw translate -f` is the whole CLI on the same file, to stdout (/dev/null). "
                 f"Load average at the start {' '.join(push['loadavg_start'])}, at the end "
                 f"{' '.join(push['loadavg_end'])}.\n")
        L.append("| aigw build, backends | write -> pushed (ms) | write -> ACK (ms) | seen -> ACK (ms) | "
                 "write -> last model served (ms) | `aigw translate` (ms) | RSS of aigw + Envoy after (MiB) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for tag, r in push.items():
            if not isinstance(r, dict):
                continue
            if r.get("error"):
                L.append(f"| {tag} | {r['error'][:200]} | | | | | |")
                continue
            t = r.get("translate", {})
            L.append(f"| {tag} | {fmt(r['write_to_pushed_ms'])} | {fmt(r['write_to_ack_ms'])} | "
                     f"{fmt(r['seen_to_ack_ms'])} | {fmt(r['write_to_served_ms'])} | "
                     f"{fmt(t.get('median_ms'))} | {fmt(r['rss_after_mib'], '{:.0f}')} |")
        L.append("")
    callbacks = res.get("callbacks")
    if callbacks:
        L.append("## Where the filter's time goes (callbacks timed inside the VM)\n")
        L.append("The filter built with `--features callback-timing` (never shipped) times each callback "
                 "of both roles with the host clock (one clock read subtracted per callback) and logs "
                 "microseconds per request every 2000 requests per worker; medians of the steady-state "
                 "reports, concurrency 1, a fresh gateway per model. The rest of what the filter adds "
                 "over plain Envoy is Envoy's own work around the callbacks: entering the VM (a dozen "
                 "times per request), buffering the bodies the filter holds, routing again after "
                 "`clear_route_cache`, and the upstream filter chain of each attempt. Both benchmark "
                 "rules have one backend, so the router role serves them directly and the upstream "
                 "role does not run (see README, Failover).\n")
        names = ["request_headers", "request_body", "response_headers", "response_body", "log"]
        L.append("| model | role | " + " | ".join(names) + " | role total |")
        L.append("|---|---|" + "---:|" * (len(names) + 1))
        for model, c in callbacks.items():
            if c.get("error"):
                L.append(f"| {model} | {c['error'][:200]} |" + " |" * (len(names) + 1))
                continue
            for role, cbs in c["roles"].items():
                if not cbs:
                    continue  # a role that did not run (rules served directly)
                cells = [f"{cbs[n]['us']:.1f}" + (f" ({cbs[n]['calls']:.0f} calls)" if cbs[n]['calls'] > 1.05 else "")
                         if n in cbs else "" for n in names]
                total = sum(cbs[n]["us"] for n in cbs)
                L.append(f"| {model} | {role} | " + " | ".join(cells) + f" | {total:.1f} |")
            L.append(f"| {model} | **in the VM, us per request** | " + " | " * len(names)
                     + f"**{c['in_vm_us_per_request']:.1f}** |")
        clock = next((c["clock_read_us"] for c in callbacks.values() if "clock_read_us" in c), None)
        if clock is not None:
            L.append(f"\nOne host clock read cost {clock:.2f} us (subtracted).\n")
        L.append("")
    hot = res.get("hot_paths")
    if hot and not any("error" in v for v in hot.values()):
        L.append("## The filter's own computation (pure functions, no host calls)\n")
        L.append("`filter/examples/hot_paths.rs` runs the steps of the benchmark's two requests 20,000 "
                 "times each, natively and built for wasm32-wasip1 in Node's V8 with the optimizing "
                 "compiler only (as Envoy runs the filter); microseconds per call, hot caches. Compared "
                 "with the time the callbacks take inside Envoy's VM (above), the rest is host calls, "
                 "entering the VM and cold caches: computation is not where the filter's time goes.\n")
        L.append("| model | step | native (us) | V8 (us) |")
        L.append("|---|---|---:|---:|")
        for model, steps in HOT_STEPS.items():
            for step in steps:
                L.append(f"| {model} | {step} | {fmt(hot['native'].get(step), '{:.2f}')} | "
                         f"{fmt(hot['v8'].get(step), '{:.2f}')} |")
            total = {e: sum(hot[e].get(s, 0) for s in steps) for e in ("native", "v8")}
            in_vm = (res.get("callbacks") or {}).get(model, {}).get("in_vm_us_per_request")
            share = f"; {100 * total['v8'] / in_vm:.0f} % of the {in_vm:.1f} us in the VM" if in_vm else ""
            L.append(f"| {model} | **all steps** | **{total['native']:.2f}** | **{total['v8']:.2f}**{share} |")
        L.append("")
    L.append("## Every run (round by round)\n")
    L.append("| scenario | test | round | p50 (us) | p99 (us) | req/s | requests | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, r in rows.items():
        for t in ("c1", "stream", "c64"):
            for i, run in enumerate(r[t]["runs"]):
                if "error" in run:
                    L.append(f"| {key} | {t} | {i + 1} | {run['error'][:100]} | | | | |")
                else:
                    L.append(f"| {key} | {t} | {i + 1} | {run['p50_us']} | {run['p99_us']} | "
                             f"{run['rps']:.0f} | {run['requests']} | {run['errors']} |")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [(k, r) for k, r in res["rows"].items() if not r["error"]]
    short = {"aigw_upstream": "aigw --no-direct"}
    names = [short.get(k, k) for k, _ in rows]
    colors = {"direct": "#999999", "envoy": "#4c72b0", "aigw": "#dd8452", "litellm": "#55a868",
              "portkey": "#c44e52"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panels = [
        ("added p50 latency over direct, c=1 (us, lower is better)",
         [r["added_p50_us"] or 0 for _, r in rows], True),
        ("throughput at c=64 (req/s, higher is better)", [r["c64"]["rps"] or 0 for _, r in rows],
         True),
        ("peak RSS of the gateway (MiB, lower is better)",
         [r["peak_rss_mib"] or 0 for _, r in rows], True),
        (f"streaming overhead per chunk vs direct (us, {res['chunks']} chunks)",
         [r["per_chunk_us"] or 0 for _, r in rows], True),
    ]
    for ax, (title, vals, log_scale) in zip(axes.flat, panels):
        bars = ax.bar(names, vals, color=[colors.get(n, "#8172b3") for n in names])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if log_scale and all(v >= 0 for v in vals) and max(vals) > 0 and \
                max(vals) / max(min(v for v in vals if v > 0), 1e-9) > 50:
            ax.set_yscale("log")
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}",
                        (b.get_x() + b.get_width() / 2, max(b.get_height(), 1e-9)),
                        ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"aigw benchmark, {res['date']}, {res['nproc']} CPUs ({res['cpu']}), loopback",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
