"""deploy/envoy-gateway/ in a real Envoy, without Envoy Gateway: the
listener, route and cluster are built the way Envoy Gateway v1.5 builds
them from the HTTPRoute and the EnvoyExtensionPolicy (wasm filter in the
HCM, disabled there and enabled per route with an empty FilterConfig;
configuration as a StringValue; routes in Gateway API precedence; cluster
and endpoints named httproute/<ns>/<name>/rule/<i>), then the
EnvoyPatchPolicy's JSON patches are applied with the same semantics
(jsonPath selects, path is relative to it). Substitutions, because nothing
here can reach the network: the module is a local file instead of EG's
HTTP fetch (and patch 5, the module's source cluster, is left out), the
endpoints are static instead of EDS, the credential cluster points at
loopback.

This checks the README's claims: with the patches a chat completion goes
through both roles to the backend; without patch 1 the request hangs;
without the catch-all rule the filter never runs."""
import copy
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ENVOY, ROOT, WASM, free_port
from test_openai import post

EG_DIR = os.path.join(ROOT, "deploy", "envoy-gateway")
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def load(name):
    with open(os.path.join(EG_DIR, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


TOKEN = re.compile(r"\.(\w+)|\[(\d+)\]|\[(\*)\]|\[\?\(@\.(\w+)=='([^']*)'\)\]")


def json_pointers(doc, expr):
    """JSON pointers of what a JSONPath (the subset the patches use) selects."""
    assert expr.startswith("$"), expr
    paths, pos = [[]], 1
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        assert m, f"unsupported jsonPath at {expr[pos:]!r}"
        pos = m.end()
        found = []
        for p in paths:
            node = doc
            for step in p:
                node = node[step]
            if m.group(1):
                if isinstance(node, dict) and m.group(1) in node:
                    found.append(p + [m.group(1)])
            elif m.group(2):
                if isinstance(node, list) and int(m.group(2)) < len(node):
                    found.append(p + [int(m.group(2))])
            elif m.group(3):
                if isinstance(node, list):
                    found += [p + [i] for i in range(len(node))]
            elif isinstance(node, list):
                found += [p + [i] for i, x in enumerate(node)
                          if isinstance(x, dict) and x.get(m.group(4)) == m.group(5)]
        paths = found
    return ["".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in p) for p in paths]


def add(doc, pointer, value):
    """JSON patch `add`, creating missing objects on the way (EG's
    EnsurePathExistsOnAdd)."""
    steps = [s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:]]
    node = doc
    for step in steps[:-1]:
        node = node[int(step)] if isinstance(node, list) else node.setdefault(step, {})
    if isinstance(node, list):
        node.insert(int(steps[-1]), value)
    else:
        node[steps[-1]] = value


def apply(doc, operation):
    assert operation["op"] == "add", operation
    if "jsonPath" in operation:
        pointers = json_pointers(doc, operation["jsonPath"])
        assert pointers, f"jsonPath selects nothing: {operation['jsonPath']}"
        for p in pointers:
            add(doc, p + operation.get("path", ""), copy.deepcopy(operation["value"]))
    else:
        add(doc, operation["path"], copy.deepcopy(operation["value"]))


def eg_resources(listen, provider_port, credential_port, catch_all=True):
    """Listener, cluster and endpoints as Envoy Gateway generates them for
    httproute.yaml + envoy-extension-policy.yaml."""
    policy = load("envoy-extension-policy.yaml")[0]
    route, no_route = load("httproute.yaml")
    wasm = policy["spec"]["wasm"][0]
    filter_name = "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/0".format(
        policy["metadata"]["namespace"], policy["metadata"]["name"])
    # EG: FilterConfig{Config: &anypb.Any{}} (an empty Any enables the filter).
    enable = {filter_name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}
    prefix = "httproute/{}/{}/".format(route["metadata"]["namespace"], route["metadata"]["name"])
    routes = []
    for i, rule in enumerate(route["spec"]["rules"]):
        match = rule["matches"][0]
        if "headers" in match:
            header = match["headers"][0]
            routes.append({"name": f"{prefix}rule/{i}/match/0",
                           "match": {"prefix": "/", "headers": [{"name": header["name"],
                                                                 "string_match": {"exact": header["value"]}}]},
                           "route": {"cluster": f"{prefix}rule/{i}"}, "typed_per_filter_config": enable})
        elif catch_all:
            direct = no_route["spec"]["directResponse"]
            routes.append({"name": f"{prefix}rule/{i}/match/0", "match": {"prefix": "/"},
                           "direct_response": {"status": direct["statusCode"],
                                               "body": {"inline_string": direct["body"]["inline"]}},
                           "response_headers_to_add": [{"header": {"key": "content-type",
                                                                   "value": direct["contentType"]}}],
                           "typed_per_filter_config": enable})
    listener = {
        "name": "default/ai-gateway/http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "default_filter_chain": {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                              "typed_config": {
            "@type": HCM, "stat_prefix": "http-10080",
            "route_config": {"name": "default/ai-gateway/http",
                             "virtual_hosts": [{"name": "default/ai-gateway/http/*", "domains": ["*"],
                                                "routes": routes}]},
            "http_filters": [
                {"name": filter_name, "disabled": True, "typed_config": {"@type": WASM_TYPE, "config": {
                    "name": wasm["name"], "root_id": wasm["rootID"], "fail_open": wasm["failOpen"],
                    "vm_config": {"vm_id": filter_name.split("/", 1)[1], "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": WASM}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(wasm["config"])}}}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]},
    }
    cluster_name = f"{prefix}rule/0"
    cluster = {"name": cluster_name, "type": "STATIC", "connect_timeout": "5s"}
    endpoints = {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": [{"endpoint": {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": provider_port}}}}]}]}
    return listener, cluster, endpoints, filter_name


def patched(listen, provider_port, credential_port, skip=(), catch_all=True):
    listener, cluster, endpoints, _ = eg_resources(listen, provider_port, credential_port, catch_all)
    clusters = []
    patch_policy = load("envoy-patch-policy.yaml")[0]
    for i, patch in enumerate(patch_policy["spec"]["jsonPatches"], start=1):
        if i in skip:
            continue
        kind, name, operation = patch["type"], patch["name"], patch["operation"]
        if kind.endswith("Listener.v3.Listener") or kind.endswith("listener.v3.Listener"):
            assert name == listener["name"]
            apply(listener, operation)
        elif kind.endswith("ClusterLoadAssignment"):
            assert name == cluster["name"]
            apply(endpoints, operation)
        elif "path" in operation or "jsonPath" in operation:
            assert name == cluster["name"]
            apply(cluster, operation)
        else:  # a whole new cluster
            added = copy.deepcopy(operation["value"])
            if added["name"] == "aigw_wasm_source":
                continue  # substituted: the module is a local file
            added["type"] = "STATIC"
            added["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
                "socket_address": {"address": "127.0.0.1", "port_value": credential_port}}
            clusters.append(added)
    # Substitution: EG's remote fetch of the module -> the local file.
    hcm = listener["default_filter_chain"]["filters"][0]["typed_config"]
    router = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router")
    for f in router["typed_config"].get("upstream_http_filters", []):
        code = f["typed_config"].get("config", {}).get("vm_config", {}).get("code")
        if code and "remote" in code:
            code.pop("remote")
            code["local"] = {"filename": WASM}
    cluster["load_assignment"] = endpoints
    return listener, [cluster] + clusters


class Envoy:
    def __init__(self, listener, clusters):
        self.port = listener["address"]["socket_address"]["port_value"]
        self.work = tempfile.mkdtemp(prefix="aigw-eg-shape-")
        config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
                  "static_resources": {"listeners": [listener], "clusters": clusters}}
        path = os.path.join(self.work, "envoy.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.log_path = os.path.join(self.work, "envoy.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([ENVOY, "-c", path, "--log-level", "warning", "--concurrency", "1",
                                      "--base-id", str(os.getpid() % 10000 + free_port() % 1000)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "AIGW_CREDENTIAL_TOKEN": "eg-shape-token-0123456789"})
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Envoy did not start\n" + self.output())

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def envoys():
    made = []

    def start(listener, clusters):
        e = Envoy(listener, clusters)
        made.append(e)
        return e

    yield start
    for e in made:
        e.close()


CHAT = {"model": "Qwen/Qwen3-1.7B", "messages": [{"role": "user", "content": "hi"}]}


def test_patched_envoy_gateway_config_serves_through_both_roles(providers, envoys):
    provider = providers(name="qwen3")
    envoy = envoys(*patched(free_port(), provider.port, free_port()))
    status, _, body = post(f"http://127.0.0.1:{envoy.port}/v1/chat/completions", CHAT)
    assert status == 200, (status, body, envoy.output())
    assert json.loads(body)["choices"][0]["message"]["content"] == "qwen3 answered Qwen/Qwen3-1.7B"
    seen = provider.requests[-1]
    # The upstream role rewrote the attempt for the backend of the metadata.
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["host"] == "qwen3.default.svc.cluster.local"
    assert "x-aigw-endpoint" not in seen.headers
    # The router role answers unknown models itself, in OpenAI's shape.
    status, _, body = post(f"http://127.0.0.1:{envoy.port}/v1/chat/completions", {**CHAT, "model": "nope"})
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found", body


def test_without_allow_on_headers_stop_iteration_the_request_hangs(providers, envoys):
    provider = providers(name="qwen3")
    envoy = envoys(*patched(free_port(), provider.port, free_port(), skip=(1,)))
    req = urllib.request.Request(f"http://127.0.0.1:{envoy.port}/v1/chat/completions",
                                 data=json.dumps(CHAT).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with pytest.raises(OSError):  # socket timeout: no answer at all
        urllib.request.urlopen(req, timeout=3)
    assert provider.requests == []


def test_without_the_catch_all_rule_the_filter_never_runs(providers, envoys):
    provider = providers(name="qwen3")
    envoy = envoys(*patched(free_port(), provider.port, free_port(), catch_all=False))
    status, _, body = post(f"http://127.0.0.1:{envoy.port}/v1/chat/completions", CHAT)
    # Envoy's own "no route" answer: the router role would have set the
    # header and the model's rule would have matched.
    assert (status, body) == (404, b""), (status, body)
    assert provider.requests == []
