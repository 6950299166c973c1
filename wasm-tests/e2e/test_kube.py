"""Kubernetes mode end to end: `aigw controller` reads its configuration
from a fake Kubernetes API server (list + streaming watch over HTTP, as
kubectl-applied objects would arrive), a real Envoy gets it over ADS, and
the provider key comes from a Secret that arrives after the policy naming
it. Status conditions are patched back to the API server."""
import base64
import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import AIGW, ENVOY, ROOT, WASM, free_port
from test_openai import post

TOKEN = "e2e-credential-token-0123456789"


LEASES = "/apis/coordination.k8s.io/v1/namespaces/"


def status_error(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
            "message": message}


class FakeApiServer:
    """Collections by URL path; watches stream newline-delimited
    WatchEvents until the test ends; status PATCHes are recorded and merged
    into the object (a MODIFIED event follows, as on a real API server).
    Leases (coordination.k8s.io/v1) are served for leader election:
    get, create (409 AlreadyExists when it exists) and replace (409
    Conflict unless metadata.resourceVersion is the stored one). Every
    write is recorded in `writes` with the caller's Authorization header."""

    def __init__(self, paths):
        self.lock = threading.Lock()
        self.version = 100
        # "log": every event as (resourceVersion, line): a watch from a
        # list's resourceVersion first gets what happened since, as on a
        # real API server (objects written between a list and its watch
        # were lost, and the controller never saw them).
        self.collections = {p: {"objects": {}, "watchers": [], "log": []} for p in paths}
        self.patches = []
        self.writes = []
        self.leases = {}
        # Bearer tokens whose Lease requests get 503 (a partitioned replica).
        self.lease_refused = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, value):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                length = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _record(self, body):
                fake.writes.append({"method": self.command, "path": urllib.parse.urlparse(self.path).path,
                                    "auth": self.headers.get("authorization"), "body": body,
                                    "time": time.time()})

            def _lease(self, body):
                """Answers a Lease request; None when the path is no Lease's."""
                path = urllib.parse.urlparse(self.path).path
                if not path.startswith(LEASES):
                    return None
                parts = path[len(LEASES):].split("/")  # ns, "leases"[, name]
                if len(parts) < 2 or parts[1] != "leases":
                    return None
                if self.headers.get("authorization") in fake.lease_refused:
                    return 503, status_error(503, "ServiceUnavailable", "partitioned")
                namespace = parts[0]
                name = parts[2] if len(parts) > 2 else (body or {}).get("metadata", {}).get("name")
                key = (namespace, name)
                with fake.lock:
                    stored = fake.leases.get(key)
                    if self.command == "GET":
                        if stored is None:
                            return 404, status_error(404, "NotFound", f'leases "{name}" not found')
                        return 200, stored
                    self._record(body)
                    if self.command == "POST":
                        if stored is not None:
                            return 409, status_error(409, "AlreadyExists", f'leases "{name}" already exists')
                    elif self.command == "PUT":
                        if stored is None:
                            return 404, status_error(404, "NotFound", f'leases "{name}" not found')
                        sent = (body.get("metadata") or {}).get("resourceVersion")
                        if sent != stored["metadata"]["resourceVersion"]:
                            return 409, status_error(
                                409, "Conflict", f'Operation cannot be fulfilled on leases "{name}": '
                                "the object has been modified; please apply your changes to the latest version")
                    else:
                        return 405, status_error(405, "MethodNotAllowed", self.command)
                    fake.version += 1
                    lease = json.loads(json.dumps(body))
                    lease.update({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"})
                    lease["metadata"].update({"name": name, "namespace": namespace,
                                              "resourceVersion": str(fake.version)})
                    fake.leases[key] = lease
                    return (201 if self.command == "POST" else 200), lease

            def do_POST(self):
                answer = self._lease(self._body())
                self._send(*(answer or (404, status_error(404, "NotFound", "not found"))))

            def do_PUT(self):
                answer = self._lease(self._body())
                self._send(*(answer or (404, status_error(404, "NotFound", "not found"))))

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                lease = self._lease(None)
                if lease is not None:
                    return self._send(*lease)
                with fake.lock:
                    collection = fake.collections.get(url.path)
                    if collection is None:
                        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "reason": "NotFound", "code": 404, "message": "not found"})
                    if query.get("watch") != ["true"]:
                        items = list(collection["objects"].values())
                        return self._send(200, {"apiVersion": "v1", "kind": "List", "items": items,
                                                "metadata": {"resourceVersion": str(fake.version)}})
                    events = queue.Queue()
                    since = int((query.get("resourceVersion") or ["0"])[0] or 0)
                    for version, line in collection["log"]:
                        if version > since:
                            events.put(line)
                    collection["watchers"].append(events)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:
                    while True:
                        try:
                            line = events.get(timeout=0.5)
                        except queue.Empty:
                            continue
                        if line is None:
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_PATCH(self):
                body = self._body()
                with fake.lock:
                    path = urllib.parse.urlparse(self.path).path
                    fake.patches.append((self.command, path, self.headers.get("content-type"), body))
                    self._record(body)
                    parts = path.split("/")
                    if len(parts) > 5 and parts[-5] == "namespaces":
                        # /apis/G/V/namespaces/NS/PLURAL/NAME/status -> /apis/G/V/PLURAL, (NS, NAME)
                        collection = "/".join(parts[:-5] + [parts[-3]])
                        key = (parts[-4], parts[-2])
                    else:  # cluster-scoped: /apis/G/V/PLURAL/NAME/status -> /apis/G/V/PLURAL, ("", NAME)
                        collection = "/".join(parts[:-2])
                        key = ("", parts[-2])
                    stored = fake.collections.get(collection, {}).get("objects", {}).get(key)
                if stored is None or parts[-1] != "status":
                    return self._send(404, status_error(404, "NotFound", "not found"))
                updated = json.loads(json.dumps(stored))
                updated["status"] = {**(stored.get("status") or {}), **((body or {}).get("status") or {})}
                fake._emit(collection, "MODIFIED", updated)
                self._send(200, updated)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _emit(self, path, kind, obj):
        with self.lock:
            self.version += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.version)
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            collection = self.collections[path]
            if kind == "DELETED":
                collection["objects"].pop(key, None)
            else:
                collection["objects"][key] = obj
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            collection["log"].append((self.version, line))
            for w in collection["watchers"]:
                w.put(line)

    def put(self, path, obj):
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        existing = self.collections[path]["objects"].get(key)
        if existing is not None and "status" in existing and "status" not in obj:
            obj = {**obj, "status": existing["status"]}  # status is kept across spec updates
        self._emit(path, "MODIFIED" if key in self.collections[path]["objects"] else "ADDED", obj)

    def lease(self, namespace="default", name="aigw-controller"):
        with self.lock:
            return json.loads(json.dumps(self.leases.get((namespace, name))))

    def delete(self, path, namespace, name):
        self._emit(path, "DELETED", self.collections[path]["objects"][(namespace, name)])

    def close(self):
        with self.lock:
            for c in self.collections.values():
                for w in c["watchers"]:
                    w.put(None)
        self.server.shutdown()


AI = "/apis/aigateway.envoyproxy.io/v1alpha1/"
EG = "/apis/gateway.envoyproxy.io/v1alpha1/"
GW = "/apis/gateway.networking.k8s.io/v1/"
PATHS = [AI + "aigatewayroutes", AI + "aiservicebackends", AI + "backendsecuritypolicies",
         EG + "backends", EG + "clienttrafficpolicies", EG + "backendtrafficpolicies", EG + "envoyproxies",
         EG + "securitypolicies",
         GW + "gatewayclasses", GW + "gateways",
         "/apis/gateway.networking.k8s.io/v1alpha3/backendtlspolicies", "/api/v1/secrets",
         "/api/v1/configmaps"]


def put_gateway_and_backend(api, port):
    """The Gateway `gw` and an OpenAI AIServiceBackend `backend` at `port`."""
    api.put(GW + "gateways", obj("gateway.networking.k8s.io/v1", "Gateway", "gw",
                                 {"gatewayClassName": "aigw",
                                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}))
    api.put(EG + "backends", obj("gateway.envoyproxy.io/v1alpha1", "Backend", "backend",
                                 {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]}))
    api.put(AI + "aiservicebackends", obj("aigateway.envoyproxy.io/v1alpha1", "AIServiceBackend", "backend",
                                          {"schema": {"name": "OpenAI"},
                                           "backendRef": {"name": "backend", "kind": "Backend",
                                                          "group": "gateway.envoyproxy.io"}}))


def put_key_policy(api):
    """An APIKey BackendSecurityPolicy `key` on `backend`, from Secret `provider-key`."""
    api.put(AI + "backendsecuritypolicies", obj(
        "aigateway.envoyproxy.io/v1alpha1", "BackendSecurityPolicy", "key",
        {"targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "backend"}],
         "type": "APIKey", "apiKey": {"secretRef": {"name": "provider-key"}}}))


def put_kube_model_route(api):
    """The AIGatewayRoute `route`: kube-model -> backend."""
    api.put(AI + "aigatewayroutes", obj(
        "aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", "route",
        {"parentRefs": [{"name": "gw"}],
         "rules": [{"matches": [{"headers": [{"name": "x-ai-eg-model", "value": "kube-model"}]}],
                    "backendRefs": [{"name": "backend"}]}]}))



def obj(api_version, kind, name, spec):
    return {"apiVersion": api_version, "kind": kind, "spec": spec,
            "metadata": {"name": name, "namespace": "default", "generation": 1}}


def bootstrap(xds, creds, ratelimit, admin):
    def cluster(name, port, http2):
        c = {"name": name, "type": "STATIC", "connect_timeout": "2s",
             "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                 "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
        if http2:
            c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        return c

    return {
        "node": {"id": "aigw-envoy", "cluster": "aigw"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "aigw_xds"}}],
                           "set_node_on_first_message_only": True},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}},
        "static_resources": {"clusters": [cluster("aigw_xds", xds, True),
                                          cluster("aigw_controller", creds, False),
                                          cluster("aigw_ratelimit", ratelimit, True)]},
    }


@pytest.fixture
def cluster(providers):
    provider = providers(name="kube")
    api = FakeApiServer(PATHS)
    work = tempfile.mkdtemp(prefix="aigw-kube-")
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                   "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api.port}"}}],
                   "users": [{"name": "fake", "user": {"token": "test"}}],
                   "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}, f)
    xds, creds, ratelimit, admin, listen = (free_port() for _ in range(5))
    env = {**os.environ, "KUBECONFIG": kubeconfig, "AIGW_CREDENTIAL_TOKEN": TOKEN}
    log = open(os.path.join(work, "controller.log"), "w")
    controller = subprocess.Popen(
        [AIGW, "controller", f"--xds-address=127.0.0.1:{xds}", f"--credential-address=127.0.0.1:{creds}",
         f"--rate-limit-address=127.0.0.1:{ratelimit}", f"--credential-authority=127.0.0.1:{creds}",
         f"--wasm-path={WASM}", "--listen-address=127.0.0.1", f"--privileged-port-offset={listen - 80}",
         "--debounce-ms=50"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    boot = os.path.join(work, "bootstrap.json")
    with open(boot, "w") as f:
        json.dump(bootstrap(xds, creds, ratelimit, admin), f)
    envoy_log = open(os.path.join(work, "envoy.log"), "w")
    envoy = subprocess.Popen([ENVOY, "-c", boot, "--log-level", "warning", "--concurrency", "1",
                              "--base-id", str(os.getpid() + 7)],
                             stdout=envoy_log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def output():
        with open(os.path.join(work, "controller.log")) as f:
            return f.read()

    yield api, provider, f"http://127.0.0.1:{listen}", output
    for p in (envoy, controller):
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    api.close()
    log.close()
    envoy_log.close()


def wait_until(check, what, output, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{output()}")


def debug(api):
    return "\n".join(f"{m} {p}" for m, p, _, _ in api.patches)


def chat(url):
    try:
        return post(url + "/v1/chat/completions",
                    {"model": "kube-model", "messages": [{"role": "user", "content": "hi"}]})
    except OSError:  # Envoy has not bound the listener yet
        return 0, {}, b""


def test_controller_configures_envoy_from_kubernetes(cluster):
    api, provider, url, output = cluster
    put_gateway_and_backend(api, provider.port)
    put_key_policy(api)
    put_kube_model_route(api)

    # The policy's Secret is missing: status says so, naming the field.
    def policy_status():
        return [p for p in api.patches if p[1].endswith("/backendsecuritypolicies/key/status")]
    patches = wait_until(policy_status, "the policy's status", lambda: output() + debug(api))
    method, path, content_type, body = patches[-1]
    assert (method, content_type) == ("PATCH", "application/merge-patch+json")
    assert path == AI + "namespaces/default/backendsecuritypolicies/key/status"
    resolved = next(c for c in body["status"]["conditions"] if c["type"] == "ResolvedRefs")
    assert resolved["status"] == "False"
    assert resolved["message"].startswith("spec.apiKey.secretRef.name: Secret default/provider-key does not exist")

    # The Secret arrives: Envoy serves the model with the key from the Secret.
    api.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                "metadata": {"name": "provider-key", "namespace": "default"},
                                "data": {"apiKey": base64.b64encode(b"sk-from-secret").decode()}})
    status, _, body = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(chat(url)),
                                 "a served chat completion", output)
    assert json.loads(body)["choices"][0]["message"]["content"] == "kube answered kube-model"
    assert provider.requests[-1].headers["authorization"] == "Bearer sk-from-secret"
    wait_until(lambda: any(c["type"] == "ResolvedRefs" and c["status"] == "True"
                           for c in policy_status()[-1][3]["status"]["conditions"]),
               "the policy to resolve", output)

    # The Secret is rotated: the new key is used.
    api.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                "metadata": {"name": "provider-key", "namespace": "default"},
                                "data": {"apiKey": base64.b64encode(b"sk-rotated").decode()}})

    def rotated():
        chat(url)
        return provider.requests and provider.requests[-1].headers["authorization"] == "Bearer sk-rotated"
    wait_until(rotated, "the rotated key", output, timeout=60)

    # The route is deleted: the model is no longer served.
    api.delete(AI + "aigatewayroutes", "default", "route")
    wait_until(lambda: chat(url)[0] == 404, "the model to go away", output)


def test_policy_status_ancestors(cluster):
    """BackendTrafficPolicy and SecurityPolicy get Envoy Gateway's status:
    status.ancestors[] with the Gateway as ancestorRef, our controllerName
    and Accepted True / False (Conflicted, TargetNotFound)."""
    api, provider, url, output = cluster
    put_gateway_and_backend(api, provider.port)
    put_kube_model_route(api)
    limit = {"type": "Global", "global": {"rules": [{"limit": {"requests": 5, "unit": "Minute"}}]}}
    gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    for name, target in [("a-limit", gateway_ref), ("b-limit", gateway_ref),
                         ("lost", {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "nope"})]:
        api.put(EG + "backendtrafficpolicies", obj("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy", name,
                                                   {"targetRefs": [target], "rateLimit": limit}))
    api.put(EG + "securitypolicies", obj("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "keys",
                                         {"targetRefs": [gateway_ref],
                                          "apiKeyAuth": {"credentialRefs": [{"name": "client-keys"}],
                                                         "extractFrom": [{"headers": ["x-api-key"]}]}}))
    api.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                "metadata": {"name": "client-keys", "namespace": "default"},
                                "data": {"alice": base64.b64encode(b"key-alice").decode()}})

    def status_of(plural, name, accepted=None):
        path = f"{EG}namespaces/default/{plural}/{name}/status"
        for method, p, content_type, body in reversed(api.patches):
            if p != path:
                continue
            conditions = body["status"]["ancestors"][0]["conditions"]
            if accepted is None or conditions[0]["status"] == accepted:
                assert (method, content_type) == ("PATCH", "application/merge-patch+json")
                return body["status"]["ancestors"]
        return None

    controller = "gateway.envoyproxy.io/gatewayclass-controller"
    gw = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": "gw"}
    winner = wait_until(lambda: status_of("backendtrafficpolicies", "a-limit"), "a-limit's status",
                        lambda: output() + debug(api))
    assert [(a["ancestorRef"], a["controllerName"]) for a in winner] == [(gw, controller)]
    accepted = winner[0]["conditions"][0]
    assert (accepted["type"], accepted["status"], accepted["reason"], accepted["message"]) == \
        ("Accepted", "True", "Accepted", "Policy has been accepted.")
    assert accepted["observedGeneration"] == 1 and accepted["lastTransitionTime"]

    loser = wait_until(lambda: status_of("backendtrafficpolicies", "b-limit"), "b-limit's status", output)
    assert loser[0]["ancestorRef"] == gw
    conflicted = loser[0]["conditions"][0]
    assert (conflicted["type"], conflicted["status"], conflicted["reason"]) == ("Accepted", "False", "Conflicted")
    assert "BackendTrafficPolicy default/a-limit also sets rateLimit on Gateway default/gw" in conflicted["message"]

    lost = wait_until(lambda: status_of("backendtrafficpolicies", "lost"), "lost's status", output)
    assert lost[0]["ancestorRef"] == {**gw, "name": "nope"}
    assert [(c["status"], c["reason"], c["message"]) for c in lost[0]["conditions"]] == \
        [("False", "TargetNotFound", "Gateway default/nope does not exist")]

    security = wait_until(lambda: status_of("securitypolicies", "keys"), "the SecurityPolicy's status", output)
    assert security[0]["ancestorRef"] == gw
    assert security[0]["conditions"][0]["reason"] == "Accepted"

    # The winner goes away: the other policy is now accepted.
    api.delete(EG + "backendtrafficpolicies", "default", "a-limit")
    now_accepted = wait_until(lambda: status_of("backendtrafficpolicies", "b-limit", accepted="True"),
                              "b-limit to be accepted", output)
    assert now_accepted[0]["conditions"][0]["reason"] == "Accepted"
    assert now_accepted[0]["conditions"][0]["lastTransitionTime"] >= conflicted["lastTransitionTime"]


def test_gateway_and_gateway_class_status(cluster):
    """Our GatewayClass gets Accepted; its Gateway gets Accepted and
    Programmed and one status.listeners[] entry per listener (supportedKinds,
    attachedRoutes counted per sectionName, Accepted/Programmed/ResolvedRefs;
    a TCP listener is not supported). Another controller's GatewayClass and
    its Gateway get nothing from aigw."""
    api, provider, url, output = cluster
    controller = "gateway.envoyproxy.io/gatewayclass-controller"
    for name, controller_name in [("aigw", controller), ("other", "example.com/other")]:
        api.put(GW + "gatewayclasses", {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                                        "metadata": {"name": name, "generation": 1},
                                        "spec": {"controllerName": controller_name}})
    put_gateway_and_backend(api, provider.port)
    api.put(GW + "gateways", obj("gateway.networking.k8s.io/v1", "Gateway", "gw", {
        "gatewayClassName": "aigw",
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"},
                      {"name": "extra", "port": free_port(), "protocol": "HTTP"},
                      {"name": "tcp", "port": 9000, "protocol": "TCP"}]}))
    api.put(GW + "gateways", obj("gateway.networking.k8s.io/v1", "Gateway", "theirs", {
        "gatewayClassName": "other", "listeners": [{"name": "http", "port": free_port(), "protocol": "HTTP"}]}))
    put_kube_model_route(api)
    api.put(AI + "aigatewayroutes", obj(
        "aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", "extra-only",
        {"parentRefs": [{"name": "gw", "sectionName": "extra"}],
         "rules": [{"matches": [{"headers": [{"name": "x-ai-eg-model", "value": "extra-model"}]}],
                    "backendRefs": [{"name": "backend"}]}]}))
    wait_until(lambda: chat(url)[0] == 200, "a served chat completion", output)

    def patches_of(path):
        return [p for p in api.patches if p[1] == path]

    gateway_path = GW + "namespaces/default/gateways/gw/status"

    def counted():
        for method, _, content_type, body in reversed(patches_of(gateway_path)):
            listeners = body["status"]["listeners"]
            if [(l["name"], l["attachedRoutes"]) for l in listeners] == [("http", 1), ("extra", 2), ("tcp", 0)]:
                assert (method, content_type) == ("PATCH", "application/merge-patch+json")
                return body["status"]
        return None
    status = wait_until(counted, "the Gateway's status", lambda: output() + debug(api))
    brief = [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]
    assert brief == [("Accepted", "True", "ListenersNotValid"), ("Programmed", "True", "Programmed")]
    assert "listener protocol TCP is not supported yet; only HTTP" in status["conditions"][0]["message"]
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in status["conditions"])
    kinds = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
             {"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute"}]
    assert [l["supportedKinds"] for l in status["listeners"]] == [kinds, kinds, []]
    by_listener = {l["name"]: [(c["type"], c["status"], c["reason"]) for c in l["conditions"]]
                   for l in status["listeners"]}
    served = [("Accepted", "True", "Accepted"), ("Programmed", "True", "Programmed"),
              ("ResolvedRefs", "True", "ResolvedRefs")]
    assert by_listener == {"http": served, "extra": served,
                           "tcp": [("Accepted", "False", "UnsupportedProtocol"), ("Programmed", "False", "Invalid"),
                                   ("ResolvedRefs", "True", "ResolvedRefs")]}
    # Written only when it changes.
    def timeless(value):
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k != "lastTransitionTime"}
        return [timeless(v) for v in value] if isinstance(value, list) else value
    bodies = [timeless(p[3]["status"]) for p in patches_of(gateway_path)]
    assert all(a != b for a, b in zip(bodies, bodies[1:])), bodies

    class_patches = wait_until(lambda: patches_of(GW + "gatewayclasses/aigw/status"), "the GatewayClass's status",
                               lambda: output() + debug(api))
    method, _, content_type, body = class_patches[-1]
    assert (method, content_type) == ("PATCH", "application/merge-patch+json")
    assert [(c["type"], c["status"], c["reason"], c["observedGeneration"]) for c in body["status"]["conditions"]] == \
        [("Accepted", "True", "Accepted", 1)]
    assert not patches_of(GW + "gatewayclasses/other/status")
    assert not patches_of(GW + "namespaces/default/gateways/theirs/status")
