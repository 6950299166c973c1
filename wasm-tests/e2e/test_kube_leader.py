"""Two `aigw controller` replicas against one fake Kubernetes API server:
both watch and translate (each serves its own xDS), only the holder of the
coordination.k8s.io Lease writes status; when the leader is killed the
other takes the lease over within the lease duration (plus a poll) and
writes status from then on; a replica that is shut down releases the
lease. Each replica uses its own bearer token, so the fake API server can
tell who wrote what."""
import json
import os
import signal
import subprocess
import tempfile
import time

from conftest import AIGW, ROOT, WASM, free_port
from test_kube import (AI, PATHS, TOKEN, FakeApiServer, put_gateway_and_backend, put_key_policy,
                       put_kube_model_route, wait_until)

LEASE_SECONDS = 3
RETRY = LEASE_SECONDS * 2 / 15  # how often a follower looks at the lease
POLICY_STATUS = AI + "namespaces/default/backendsecuritypolicies/key/status"


def start(api, work, name):
    kubeconfig = os.path.join(work, f"kubeconfig-{name}")
    with open(kubeconfig, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                   "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api.port}"}}],
                   "users": [{"name": "fake", "user": {"token": f"token-{name}"}}],
                   "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                             "namespace": "aigw-system"}}]}, f)
    xds, creds, ratelimit = (free_port() for _ in range(3))
    env = {**os.environ, "KUBECONFIG": kubeconfig, "AIGW_CREDENTIAL_TOKEN": TOKEN, "POD_NAME": f"ctl-{name}"}
    log_path = os.path.join(work, f"controller-{name}.log")
    log = open(log_path, "w")
    process = subprocess.Popen(
        [AIGW, "controller", f"--xds-address=127.0.0.1:{xds}", f"--credential-address=127.0.0.1:{creds}",
         f"--rate-limit-address=127.0.0.1:{ratelimit}", f"--wasm-path={WASM}", "--debounce-ms=50",
         f"--leader-lease-seconds={LEASE_SECONDS}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def output():
        with open(log_path) as f:
            return f.read()
    return process, log, output


def holder(api):
    lease = api.lease(namespace="aigw-system")
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


def status_writes(api, token=None):
    return [w for w in api.writes if w["method"] == "PATCH" and w["path"].endswith("/status")
            and (token is None or w["auth"] == f"Bearer {token}")]


def resolved(write):
    return next(c["status"] for c in write["body"]["status"]["conditions"] if c["type"] == "ResolvedRefs")


def test_only_the_lease_holder_writes_status_and_a_follower_takes_over(providers):
    provider = providers(name="kube-leader")
    api = FakeApiServer(PATHS)
    work = tempfile.mkdtemp(prefix="aigw-leader-")
    replicas = {name: start(api, work, name) for name in ("a", "b")}
    try:
        def output():
            return "\n".join(f"--- {n}\n{r[2]()}" for n, r in replicas.items()) + "\n--- writes\n" + \
                "\n".join(f"{w['method']} {w['path']} {w['auth']}" for w in api.writes)

        first = wait_until(lambda: holder(api), "a replica to hold the lease", output)
        leader = first.split("_")[0].removeprefix("ctl-")
        follower = "b" if leader == "a" else "a"
        assert first.startswith(f"ctl-{leader}_")

        # A configuration whose policy names a missing Secret: its status
        # says ResolvedRefs False.
        put_gateway_and_backend(api, provider.port)
        put_key_policy(api)
        put_kube_model_route(api)
        wait_until(lambda: [w for w in status_writes(api) if w["path"] == POLICY_STATUS],
                   "the policy's status", output)
        # Both replicas translate and publish from their own watches.
        wait_until(lambda: all("configuration version 1 pushed" in r[2]() for r in replicas.values()),
                   "both replicas to publish", output)
        # Give the follower more than a lease duration to (wrongly) write.
        time.sleep(LEASE_SECONDS + 1)
        assert status_writes(api, f"token-{leader}"), output()
        assert status_writes(api, f"token-{follower}") == [], output()
        assert holder(api) == first
        lease_writes = [w for w in api.writes if "/leases" in w["path"]]
        assert {w["auth"] for w in lease_writes if w["method"] == "PUT"} <= {f"Bearer token-{leader}"}
        # The holder renews (about every LEASE_SECONDS / 3).
        assert len([w for w in lease_writes if w["auth"] == f"Bearer token-{leader}"]) >= 3, output()

        # The leader dies without releasing the lease.
        replicas[leader][0].send_signal(signal.SIGKILL)
        replicas[leader][0].wait(timeout=10)
        killed = time.time()
        second = wait_until(lambda: (lambda h: h if h and h != first else None)(holder(api)),
                            "the follower to take the lease over", output, timeout=LEASE_SECONDS * 4)
        took = time.time() - killed
        assert second.startswith(f"ctl-{follower}_")
        # Expiry is measured from when the follower last saw the lease
        # change (at most one poll after the last renewal before the kill).
        assert took <= LEASE_SECONDS + 2 * RETRY + 0.5, took
        assert took >= LEASE_SECONDS - LEASE_SECONDS / 3 - 0.1, took  # not before it could have expired
        assert api.lease(namespace="aigw-system")["spec"]["leaseTransitions"] == 1
        print(f"takeover {took:.2f} s after the kill (lease {LEASE_SECONDS} s)")

        # The new leader writes status: the Secret arrives, ResolvedRefs turns True.
        api.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                    "metadata": {"name": "provider-key", "namespace": "default"},
                                    "data": {"apiKey": "c2stdGVzdA=="}})
        write = wait_until(lambda: next((w for w in status_writes(api, f"token-{follower}")
                                         if w["path"] == POLICY_STATUS and resolved(w) == "True"), None),
                           "the new leader's status write", output)
        assert write["time"] > killed

        # A replica that is shut down hands the lease back at once.
        replicas[follower][0].send_signal(signal.SIGTERM)
        replicas[follower][0].wait(timeout=10)
        assert holder(api) is None, api.lease(namespace="aigw-system")
        assert "released lease aigw-system/aigw-controller" in replicas[follower][2](), output()
    finally:
        for process, log, _ in replicas.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
        api.close()


def test_a_leader_that_cannot_renew_stops_before_the_other_takes_over():
    """Split brain guard: the leader's Lease requests fail (the other
    replica still reaches the API server). The leader stops acting as
    leader at its renew deadline (2/3 of the lease), before the follower
    can take the lease over (after a full lease duration)."""
    api = FakeApiServer(PATHS)
    work = tempfile.mkdtemp(prefix="aigw-leader-")
    replicas = {name: start(api, work, name) for name in ("a", "b")}
    try:
        def output():
            return "\n".join(f"--- {n}\n{r[2]()}" for n, r in replicas.items())

        first = wait_until(lambda: holder(api), "a replica to hold the lease", output)
        leader = first.split("_")[0].removeprefix("ctl-")
        follower = "b" if leader == "a" else "a"
        wait_until(lambda: f"{first} holds lease" in replicas[leader][2](), "the leader's log line", output)
        time.sleep(RETRY * 2)  # the follower has seen the lease
        api.lease_refused.add(f"Bearer token-{leader}")
        cut = time.time()

        lost = wait_until(lambda: f"{first} lost lease" in replicas[leader][2]() and time.time(),
                          "the leader to step down", output, timeout=LEASE_SECONDS * 3)
        taken = wait_until(lambda: (lambda h: time.time() if h and h != first else None)(holder(api)),
                           "the follower to take over", output, timeout=LEASE_SECONDS * 4)
        assert holder(api).startswith(f"ctl-{follower}_")
        print(f"stepped down {lost - cut:.2f} s, taken over {taken - cut:.2f} s after the cut")
        assert lost < taken, (lost - cut, taken - cut)
        assert lost - cut <= LEASE_SECONDS * 2 / 3 + LEASE_SECONDS / 3 + 0.5
    finally:
        for process, log, _ in replicas.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
        api.close()
