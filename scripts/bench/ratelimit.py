#!/usr/bin/env python3
"""Rate-limit service benchmark (part of scripts/bench.sh, not CI): a real
redis-server on a free loopback port, `aigw run --redis` with
ratelimit.yaml, and the Rust load generator
(xds-controller/examples/ratelimit_load.rs) calling the service's gRPC
port directly, charging after the response and with reserve-then-settle.
Writes ratelimit-results.{json,md} next to this file."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
started = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(args, **kw):
    p = subprocess.Popen(args, **kw)
    started.append(p)
    return p


def stop_all():
    for p in reversed(started):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def ratelimit_port(work, timeout=30):
    """The service's port, from the Envoy bootstrap aigw writes."""
    path = os.path.join(work, "envoy-bootstrap.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            try:
                with open(path) as f:
                    boot = json.load(f)
                for c in boot["static_resources"]["clusters"]:
                    if c["name"] == "aigw_ratelimit":
                        lb = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
                        return lb["endpoint"]["address"]["socket_address"]["port_value"]
            except (ValueError, KeyError):
                pass
        time.sleep(0.1)
    raise RuntimeError("no rate-limit port in the bootstrap")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aigw", required=True)
    ap.add_argument("--load", required=True, help="the ratelimit_load example binary")
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="aigw-bench-rl-")
    try:
        redis_port = free_port()
        start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(redis_port)
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                       text=True).stdout.split()[2].removeprefix("v=")
        log = open(os.path.join(work, "aigw.log"), "w")
        start([args.aigw, "run", "--envoy", args.envoy, "--wasm", args.wasm, "--work-dir", work,
               "--admin-port", str(free_port()), "--map-port", f"80={free_port()}",
               "--concurrency", "1", "--traffic", "quiet", "--rate-limit-reserve",
               "--redis", f"redis://127.0.0.1:{redis_port}",
               "-f", os.path.join(HERE, "ratelimit.yaml")], stdout=log, stderr=subprocess.STDOUT)
        port = ratelimit_port(work)
        wait_port(port)
        results = []
        for mode in ("charge", "reserve"):
            out = subprocess.run([args.load, "--addr", f"http://127.0.0.1:{port}",
                                  "--seconds", str(args.seconds), "--concurrency",
                                  str(args.concurrency), "--mode", mode],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"[ratelimit] {r}", file=sys.stderr)
            results.append(r)
    finally:
        stop_all()
    res = {"redis": redis_version, "cores": os.cpu_count(), "runs": results}
    with open(os.path.join(args.out, "ratelimit-results.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = [
        "## Rate-limit service against Redis",
        "",
        f"`aigw`'s `envoy.service.ratelimit.v3` service with a local redis-server {redis_version}"
        f" on this machine ({os.cpu_count()} cores shared by the service, Redis and the load"
        " generator), called directly over gRPC by `xds-controller/examples/ratelimit_load.rs`"
        f" with {args.concurrency} calls in flight over 4 HTTP/2 connections, 1000 users. Each"
        " simulated request makes the two calls Envoy makes: admission (3 token rules and a"
        " request rule) and stream done (3 token charges). A decision is one `ShouldRateLimit`"
        " call (one Redis script run).",
        "",
        "| mode | decisions/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        name = {"charge": "charge after response", "reserve": "reserve then settle"}[r["mode"]]
        lines.append(f"| {name} | {r['decisions_per_second']:.0f} | {r['p50_ms']:.2f} |"
                     f" {r['p99_ms']:.2f} | {r['errors']} |")
    with open(os.path.join(args.out, "ratelimit-results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
