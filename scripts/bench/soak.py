#!/usr/bin/env python3
"""Soak run (issue 4), driven by scripts/soak.sh; not part of CI.

`aigw run` (release) in front of the Rust fake upstream, wrk sending a fixed
mix at a steady rate (OpenAI JSON, streamed, Bedrock Converse translated and
SigV4-signed, Anthropic Messages, a provider 400, an unknown model 404;
per-user rate limits counted in memory) for N minutes. Every few seconds it
samples: the requests Envoy has served, Envoy's and aigw's RSS, Envoy's
tcmalloc heap (admin /memory), and each wasm VM's linear memory (the
committed part of its 8 GiB V8 reservation and its RSS, from
/proc/PID/smaps). Writes soak-results.md and soak-results.json.
"""
import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the benchmark's process helpers)

HERE = bench.HERE
ROOT = bench.ROOT

CONFIG = bench.BASE_CONFIG + bench.BEDROCK_CONFIG + """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: claude}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: fake, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-model}}]}}]
    backendRefs: [{{name: fake}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-error}}]}}]
    backendRefs: [{{name: fake}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-bedrock}}]}}]
    backendRefs: [{{name: bedrock}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: bench-claude}}]}}]
    backendRefs: [{{name: claude}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: per-user}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{{headers: [{{name: x-user-id, type: Distinct}}]}}]
        limit: {{requests: 1000000000, unit: Hour}}
"""
AWS = {"AWS_ACCESS_KEY_ID": "AKIDSOAK", "AWS_SECRET_ACCESS_KEY": "soak-secret"}


def log(*a):
    print("[soak]", *a, file=sys.stderr, flush=True)


def admin_get(admin, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as r:
        return r.read().decode()


def served(admin):
    """Requests the gateway's listeners have answered, by status class."""
    out = {}
    for line in admin_get(admin, "/stats?filter=^http\\..*downstream_rq_[0-9t]").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("http.admin.") or not value.strip().isdigit():
            continue
        key = name.rsplit(".", 1)[1]
        out[key] = out.get(key, 0) + int(value)
    return out


def wasm_vms(pid):
    """Per wasm VM (V8 reserves 8 GiB per linear memory; the committed part is
    the rw mapping just below the reservation): (committed KiB, RSS KiB)."""
    rows, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ", line)
            if m:
                cur = [int(m[1], 16), int(m[2], 16), m[3], 0]
                rows.append(cur)
            elif line.startswith("Rss:") and cur is not None:
                cur[3] = int(line.split()[1])
    vms = []
    for i, r in enumerate(rows):
        if r[1] - r[0] >= 4 << 30 and r[2] == "---p" and i > 0:
            prev = rows[i - 1]
            if prev[1] == r[0] and prev[2] == "rw-p":
                vms.append(((prev[1] - prev[0]) // 1024, prev[3]))
    return vms


def envoy_pid(aigw_pid):
    for p in bench.tree(aigw_pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if b"envoy" in f.read().split(b"\0")[0]:
                    return p
        except OSError:
            pass
    return None


def sample(t0, aigw_pid, envoy, admin):
    mem = json.loads(admin_get(admin, "/memory"))
    vms = wasm_vms(envoy)
    return {
        "t": round(time.time() - t0, 1),
        "served": served(admin),
        "envoy_rss_kib": bench.status_kib(envoy, "VmRSS"),
        "aigw_rss_kib": bench.status_kib(aigw_pid, "VmRSS"),
        "tcmalloc_allocated_kib": int(mem["allocated"]) // 1024,
        "tcmalloc_heap_kib": int(mem["heap_size"]) // 1024,
        "wasm_vms": vms,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def slope_per_100k(points):
    """Least-squares slope of (requests, KiB) in KiB per 100k requests."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    return 100_000 * sum((x - mx) * (y - my) for x, y in points) / var


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aigw", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rate", type=int, default=1000, help="target requests per second")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--sample-seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads")
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, bench.on_signal)
    signal.signal(signal.SIGINT, bench.on_signal)
    work = tempfile.mkdtemp(prefix="aigw-soak-")
    log("work dir", work)
    builds = built(args)
    load_start = open("/proc/loadavg").read().split()[:3]
    samples = []
    try:
        up_port = bench.free_port()
        bench.start("upstream", [args.upstream, "--port", str(up_port), "--chunks", "20", "--threads", "1"],
                    work)
        port, admin = bench.free_port(), bench.free_port()
        cfg = os.path.join(work, "aigw.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(port=up_port))
        os.makedirs(os.path.join(work, "aigw"))
        aigw = bench.start("aigw", [args.aigw, "run", "--envoy", args.envoy, "--wasm", args.wasm,
                                    "--admin-port", str(admin), "--work-dir", os.path.join(work, "aigw"),
                                    "--concurrency", str(args.concurrency), "--map-port", f"80={port}",
                                    "--traffic", "quiet", "-f", cfg], work, env=AWS)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        err = bench.check(url, aigw, 30, {"content-type": "application/json"})
        if err:
            raise SystemExit("aigw did not serve: " + err)
        envoy = envoy_pid(aigw.pid)
        # Each connection waits `delay` between requests: connections / delay = rate
        # (less while a request is in flight; the achieved rate is reported).
        delay_ms = max(0, int(1000 * args.connections / args.rate))
        seconds = int(args.minutes * 60)
        lua = os.path.join(HERE, "soak.lua")
        cmd = [args.wrk, "-t2", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s", "-s", lua,
               f"http://127.0.0.1:{port}"]
        log(f"{seconds} s at about {args.rate} req/s ({args.connections} connections, {delay_ms} ms apart)")
        t0 = time.time()
        samples.append(sample(t0, aigw.pid, envoy, admin))
        wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "SOAK_DELAY_MS": str(delay_ms)})
        out = []
        reader = threading.Thread(target=lambda: out.append(wrk.stdout.read()), daemon=True)
        reader.start()
        while wrk.poll() is None:
            time.sleep(args.sample_seconds)
            if aigw.poll() is not None:
                raise SystemExit("aigw exited during the soak: " + bench.tail(aigw.log_path))
            s = sample(t0, aigw.pid, envoy, admin)
            samples.append(s)
            total = sum(v for k, v in s["served"].items() if k == "downstream_rq_total")
            log(f"t={s['t']:.0f}s requests {total} envoy {s['envoy_rss_kib'] / 1024:.1f} MiB "
                f"aigw {s['aigw_rss_kib'] / 1024:.1f} MiB tcmalloc {s['tcmalloc_allocated_kib'] / 1024:.1f} MiB "
                f"wasm VMs {s['wasm_vms']} load {' '.join(s['loadavg'])}")
        reader.join(timeout=10)
        time.sleep(1)
        samples.append(sample(t0, aigw.pid, envoy, admin))
        wrk_result = None
        for line in "".join(out).splitlines():
            if line.startswith("SOAK "):
                wrk_result = json.loads(line[5:])
        if wrk_result is None:
            raise SystemExit("no result from wrk: " + "".join(out)[-500:])
        aigw_log = bench.tail(aigw.log_path, 10)
    finally:
        bench.cleanup()
    write(samples, wrk_result, args, load_start, aigw_log, builds)


def built(args):
    """What ran: the filter's sha256 and when it and aigw were built."""
    import hashlib
    stamp = lambda p: datetime.datetime.fromtimestamp(  # noqa: E731
        os.path.getmtime(p), datetime.timezone.utc).strftime("%H:%M UTC")
    with open(args.wasm, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return f"filter sha256 {digest}... built {stamp(args.wasm)}, aigw built {stamp(args.aigw)}"


def write(samples, wrk_result, args, load_start, aigw_log, builds):
    total = lambda s: s["served"].get("downstream_rq_total", 0)  # noqa: E731
    # Growth is measured from the end of the warm-up (the first 20 % of the
    # run: pools, caches and VM memories reach their working size) to the end.
    warm = next((s for s in samples if s["t"] >= 0.2 * args.minutes * 60), samples[0])
    last = samples[-1]
    steady = [s for s in samples if s["t"] >= warm["t"]]
    served_steady = total(last) - total(warm)

    def growth(key):
        per = None if served_steady <= 0 else 100_000 * (last[key] - warm[key]) / served_steady
        slope = slope_per_100k([(total(s), s[key]) for s in steady])
        return last[key] - warm[key], per, slope

    vm_committed = [sum(c for c, _ in s["wasm_vms"]) for s in samples]
    vm_rss = [sum(r for _, r in s["wasm_vms"]) for s in samples]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True,
                                 text=True).stdout.strip()[:100],
        "args": vars(args), "loadavg_start": load_start, "loadavg_end": open("/proc/loadavg").read().split()[:3],
        "wrk": wrk_result, "samples": samples, "aigw_log_tail": aigw_log, "builds": builds,
    }
    with open(os.path.join(args.out, "soak-results.json"), "w") as f:
        json.dump(result, f, indent=1)
    served_all = last["served"]
    rate = wrk_result["requests"] / (wrk_result["duration_us"] / 1e6)
    L = ["# Soak run: aigw under steady mixed traffic\n",
         f"Generated by `scripts/soak.sh` on {result['date']}, code `{result['commit']}` ({builds}). "
         f"{os.cpu_count()} CPUs shared with other work; load average (1, 5, 15 min) at the start "
         f"{' '.join(load_start)}, at the end {' '.join(result['loadavg_end'])}.\n",
         f"`aigw run` (release, Envoy {args.concurrency} workers) in front of the Rust fake upstream; wrk, "
         f"{args.connections} connections, target {args.rate} req/s for {args.minutes:g} min. Mix per 10 "
         "requests: 4 OpenAI JSON, 2 streamed (20 chunks), 1 OpenAI -> Bedrock Converse (translated, "
         "SigV4-signed), 1 Anthropic Messages, 1 provider 400, 1 unknown model (404 from the gateway); "
         "every request passes a per-user rate limit counted in memory.\n",
         f"Requests: {wrk_result['requests']:,} in {wrk_result['duration_us'] / 1e6:.0f} s "
         f"({rate:.0f} req/s achieved); p50 {wrk_result['p50_us']} us, p99 {wrk_result['p99_us']} us, "
         f"max {wrk_result['max_us'] / 1000:.0f} ms. Envoy counted 2xx {served_all.get('downstream_rq_2xx', 0):,}, "
         f"4xx {served_all.get('downstream_rq_4xx', 0):,}, 5xx {served_all.get('downstream_rq_5xx', 0):,}; "
         f"wrk socket errors: connect {wrk_result['connect_err']}, read {wrk_result['read_err']}, "
         f"write {wrk_result['write_err']}, timeout {wrk_result['timeout_err']}.\n",
         f"Memory, from the end of the warm-up (t = {warm['t']:.0f} s, {total(warm):,} requests) to the end "
         f"(t = {last['t']:.0f} s, {total(last):,} requests; {served_steady:,} requests in between):\n",
         "| what | at warm-up end (KiB) | at the end (KiB) | growth (KiB) | per 100k requests (KiB) | "
         "least-squares slope per 100k (KiB) |",
         "|---|---:|---:|---:|---:|---:|"]
    for label, key in (("Envoy RSS", "envoy_rss_kib"), ("aigw RSS", "aigw_rss_kib"),
                       ("Envoy tcmalloc allocated", "tcmalloc_allocated_kib"),
                       ("Envoy tcmalloc heap", "tcmalloc_heap_kib")):
        g, per, slope = growth(key)
        L.append(f"| {label} | {warm[key]:,} | {last[key]:,} | {g:+,} | "
                 f"{'n/a' if per is None else f'{per:+.1f}'} | {'n/a' if slope is None else f'{slope:+.1f}'} |")
    L.append("")
    L.append(f"Wasm VMs: {len(last['wasm_vms'])} (Envoy workers x the router and upstream roles). Per VM, "
             f"committed linear memory / RSS at the start: {samples[0]['wasm_vms']}, at the end: "
             f"{last['wasm_vms']} (KiB). Sum over VMs: committed {vm_committed[0]:,} -> {vm_committed[-1]:,} KiB, "
             f"resident {vm_rss[0]:,} -> {vm_rss[-1]:,} KiB (max committed during the run "
             f"{max(vm_committed):,} KiB). Read from /proc/PID/smaps: the read-write mapping just below each "
             "8 GiB V8 reservation.\n")
    L.append("## Samples\n")
    L.append("| t (s) | requests | Envoy RSS (MiB) | aigw RSS (MiB) | tcmalloc allocated (MiB) | "
             "wasm committed / resident (KiB, sum) | load 1 min |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|")
    step = max(1, len(samples) // 30)
    for i, s in enumerate(samples):
        if i % step and i != len(samples) - 1:
            continue
        L.append(f"| {s['t']:.0f} | {total(s):,} | {s['envoy_rss_kib'] / 1024:.1f} | {s['aigw_rss_kib'] / 1024:.1f} "
                 f"| {s['tcmalloc_allocated_kib'] / 1024:.1f} | {vm_committed[i]:,} / {vm_rss[i]:,} | "
                 f"{s['loadavg'][0]} |")
    L.append("")
    with open(os.path.join(args.out, "soak-results.md"), "w") as f:
        f.write("\n".join(L))
    log("wrote", os.path.join(args.out, "soak-results.md"))


if __name__ == "__main__":
    main()
