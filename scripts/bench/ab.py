#!/usr/bin/env python3
"""A/B of filter variants by Envoy CPU per request (not part of bench.sh).

`aigw run` serves the benchmark's configuration once; its Envoy's
/config_dump becomes a static bootstrap, which each variant changes before
its own Envoy runs it. Variants alternate over the rounds; each gets a short
warm-up, `wrk -c64` (req/s and Envoy's CPU seconds per request from /proc)
and `wrk -c1` (p50). On a noisy 2-core VM the CPU per request moves by about
3 us between identical runs, far less than the c=1 latency does.

Variants (comma-separated):
  aigw          the configuration as served
  plain         no filter at all (routes match on the path only)
  noupstream    the router's upstream filters removed from every cluster
  w:NAME        the .wasm in $WASM_NAME instead of the built one
  abl:A+B       $AIGW_ABLATE=A,B in the VMs (for a probe build that reads it)
  rt:NAME       the wasm runtime envoy.wasm.runtime.NAME (the PyPI Envoy has v8 only)
  noretry       the routes' retry policies removed
  noretryplug   the routes' retry host predicate and priority plugins removed

Needs the release aigw and fake upstream (`cargo build --release -p aigw -p
aigw-fake-upstream`), target/aigw_filter.wasm and wrk. Example:
  scripts/bench/ab.py aigw,noupstream,plain --rounds 3
  MODEL=bench-bedrock scripts/bench/ab.py aigw,plain
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the benchmark's configuration and helpers)

PROCS = []


def start(work, name, argv, env=None):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    PROCS.append(p)
    return p


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception as e:  # an HTTP error status means it answers
            if hasattr(e, "code"):
                return
            time.sleep(0.2)
    raise SystemExit(f"not answering: {url}")


def cpu_seconds(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url, connections, seconds, model):
    out = subprocess.run(["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s",
                          "-s", bench.LUA, url], capture_output=True, text=True,
                         env={**os.environ, "BENCH_MODEL": model}).stdout
    line = next(l for l in out.splitlines() if l.startswith("BENCH "))
    return json.loads(line[len("BENCH "):])


def served_config(args, work, upstream_port):
    """aigw's listeners, routes and clusters, and its Envoy's environment
    (the credential service's token); aigw keeps running for the filter's
    credential fetches."""
    cfg = os.path.join(work, "aigw.yaml")
    with open(cfg, "w") as f:
        f.write(bench.AIGW_CONFIG.format(port=upstream_port))
    port, admin = bench.free_port(), bench.free_port()
    aigw = start(work, "aigw", [args.aigw, "run", "--envoy", args.envoy, "--wasm", args.wasm,
                                "--admin-port", str(admin), "--work-dir", os.path.join(work, "aigw"),
                                "--concurrency", "2", "--map-port", f"80={port}", "--traffic", "quiet",
                                "-f", cfg], env=bench.AWS_ENV)
    wait_http(f"http://127.0.0.1:{port}/v1/models")
    dump = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump"))
    found = {}
    for c in dump["configs"]:
        kind = c["@type"]
        if "ListenersConfigDump" in kind:
            found["listeners"] = [l["active_state"]["listener"] for l in c.get("dynamic_listeners", [])]
        elif "ClustersConfigDump" in kind:
            found["clusters"] = [x["cluster"] for x in c.get("dynamic_active_clusters", [])]
            found["static"] = [x["cluster"] for x in c.get("static_clusters", [])]
        elif "RoutesConfigDump" in kind:
            found["routes"] = [x["route_config"] for x in c.get("dynamic_route_configs", [])]
    env = dict(bench.AWS_ENV)
    children = subprocess.run(["pgrep", "-P", str(aigw.pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        with open(f"/proc/{child}/environ", "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"AIGW_CREDENTIAL_TOKEN="):
                    env["AIGW_CREDENTIAL_TOKEN"] = kv.split(b"=", 1)[1].decode()
    return found, env


def each_vm_config(obj, change):
    if isinstance(obj, dict):
        if "vm_config" in obj:
            change(obj["vm_config"])
        for v in obj.values():
            each_vm_config(v, change)
    elif isinstance(obj, list):
        for v in obj:
            each_vm_config(v, change)


def bootstrap(found, variant, admin_port):
    listeners, clusters = copy.deepcopy(found["listeners"]), copy.deepcopy(found["clusters"])
    port = None
    for l in listeners:
        hcm = l["filter_chains"][0]["filters"][0]["typed_config"]
        routes = next(r for r in found["routes"] if r["name"] == hcm["rds"]["route_config_name"])
        del hcm["rds"]
        hcm["route_config"] = {k: v for k, v in copy.deepcopy(routes).items() if k != "@type"}
        port = bench.free_port()
        l["address"]["socket_address"]["port_value"] = port
        if variant == "plain":
            hcm["http_filters"] = [{k: v for k, v in f.items() if k != "typed_config"}
                                   | {"typed_config": {"@type": f["typed_config"]["@type"]}}
                                   for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
            for vh in hcm["route_config"]["virtual_hosts"]:
                for r in vh["routes"]:
                    r["match"].pop("headers", None)
        elif variant == "noretry":
            for vh in hcm["route_config"]["virtual_hosts"]:
                for r in vh["routes"]:
                    r.get("route", {}).pop("retry_policy", None)
        elif variant == "noretryplug":
            for vh in hcm["route_config"]["virtual_hosts"]:
                for r in vh["routes"]:
                    for key in ("retry_priority", "retry_host_predicate", "host_selection_retry_max_attempts"):
                        r.get("route", {}).get("retry_policy", {}).pop(key, None)
        elif variant == "noupstream":
            for c in clusters:
                options = c.setdefault("typed_extension_protocol_options", {}).setdefault(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
                options["http_filters"] = [{"name": "envoy.filters.http.upstream_codec", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]
    if variant.startswith("w:"):
        path = os.environ["WASM_" + variant[2:]]
        each_vm_config(listeners, lambda vm: vm["code"]["local"].update(filename=path))
    elif variant.startswith("rt:"):
        each_vm_config(listeners, lambda vm: vm.update(runtime="envoy.wasm.runtime." + variant[3:]))
    elif variant.startswith("abl:"):
        values = {"AIGW_ABLATE": variant[4:].replace("+", ",")}
        each_vm_config(listeners, lambda vm: vm.setdefault("environment_variables", {}).update(
            key_values=values))
    for x in listeners + clusters:
        x.pop("@type", None)
    static = [{k: v for k, v in c.items() if k != "@type"} for c in found["static"]]
    return port, {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
                  "static_resources": {"listeners": listeners, "clusters": clusters + static}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=6, help="of wrk -c64 per variant and round")
    ap.add_argument("--perf", action="store_true",
                    help="sample Envoy with perf during the c=64 load; print time by DSO")
    ap.add_argument("--aigw", default=os.path.join(ROOT, "target/release/aigw"))
    ap.add_argument("--upstream", default=os.path.join(ROOT, "target/release/aigw-fake-upstream"))
    ap.add_argument("--envoy", default=os.path.join(ROOT, ".venv/bin/envoy"))
    ap.add_argument("--wasm", default=os.path.join(ROOT, "target/aigw_filter.wasm"))
    args = ap.parse_args()
    model = os.environ.get("MODEL", "bench-model")
    variants = args.variants.split(",")
    work = tempfile.mkdtemp(prefix="aigw-ab-")
    upstream_port = bench.free_port()
    start(work, "upstream", [args.upstream, "--port", str(upstream_port), "--threads", "2"])
    time.sleep(0.5)
    found, env = served_config(args, work, upstream_port)
    results = {}
    for rnd in range(args.rounds):
        for i, variant in enumerate(variants):
            admin = bench.free_port()
            port, boot = bootstrap(found, variant, admin)
            path = os.path.join(work, f"boot-{i}.json")
            with open(path, "w") as f:
                json.dump(boot, f)
            envoy = start(work, f"envoy-{i}-{rnd}", [args.envoy, "-c", path, "--concurrency", "2",
                                                      "--log-level", "warning",
                                                      "--base-id", str(os.getpid() + 100 + i)], env=env)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            wait_http(f"http://127.0.0.1:{admin}/ready")
            wrk(url, 8, 3, model)  # warm-up: V8 optimizes the hot functions
            before = cpu_seconds(envoy.pid)
            perf = None
            if args.perf:
                data = os.path.join(work, f"perf-{i}-{rnd}.data")
                perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-p",
                                         str(envoy.pid), "-o", data, "--", "sleep", str(args.seconds - 1)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            load = wrk(url, 64, args.seconds, model)
            if perf:
                perf.wait()
                report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio", "-q"],
                                        capture_output=True, text=True).stdout
                print("\n".join(l for l in report.splitlines()[:8] if l.strip()), flush=True)
            cpu_us = (cpu_seconds(envoy.pid) - before) / max(load["requests"], 1) * 1e6
            rps = load["requests"] / (load["duration_us"] / 1e6)
            p50 = wrk(url, 1, 4, model)["p50_us"]
            results.setdefault(variant, []).append((rps, cpu_us))
            print(f"round {rnd + 1} {variant:14} {rps:8.0f} req/s  Envoy CPU {cpu_us:6.1f} us/request  "
                  f"c=1 p50 {p50} us  errors {load['status_err']}", flush=True)
            envoy.terminate()
            envoy.wait()
    for variant, runs in results.items():
        rps = sorted(r for r, _ in runs)[len(runs) // 2]
        cpu = sorted(c for _, c in runs)[len(runs) // 2]
        print(f"median {variant:14} {rps:8.0f} req/s  Envoy CPU {cpu:6.1f} us/request")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
