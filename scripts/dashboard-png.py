#!/usr/bin/env python3
"""Renders deploy/grafana/aigw-dashboard.json to docs/dashboard.png from a
real run, without Grafana (which cannot be installed on these machines).

It starts `aigw run` (real Envoy + the filter) in front of fake OpenAI and
Anthropic providers that answer with varying latency and token counts, drives
a few minutes of mixed known traffic (OpenAI passthrough, Anthropic native,
OpenAI clients on Anthropic, streams and not, upstream 500s and 529s, unknown
models), scrapes Envoy's /stats/prometheus every few seconds, and then
evaluates each panel's PromQL expression itself (the small subset the
dashboard uses: sum / sum by, rate, histogram_quantile, division, label
matchers with the dashboard variables set to All) and draws the panels where
the dashboard's gridPos puts them, with their titles and units.

    .venv/bin/python scripts/dashboard-png.py [--seconds 150] [--out docs/dashboard.png]

Needs `cargo build -p aigw`, `scripts/build-filter.sh` and matplotlib (it is
installed into .venv on first use). Not part of CI.
"""
import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "wasm-tests", "e2e"))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "aigw-dashboard.json")

CONFIG = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: openai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {openai}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: openai}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: openai, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: anthropic}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {anthropic}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: anthropic}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: anthropic, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: flaky}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {flaky}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: flaky}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: flaky, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: models}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: gpt-4o-mini}}]}}]
    backendRefs: [{{name: openai}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: claude-sonnet}}]}}]
    backendRefs: [{{name: anthropic}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: llama-3-8b}}]}}]
    backendRefs: [{{name: flaky}}]
"""


# --- fake providers: real wire formats, varying latency and usage -----------

def openai_fake(error_rate=lambda: 0.0, slow=1.0):
    def respond(request):
        body = request.json()
        model = body["model"]
        if random.random() < error_rate():
            time.sleep(random.uniform(0.01, 0.05))
            return 500, {"content-type": "application/json"}, b'{"error":{"message":"overloaded","type":"server_error"}}'
        prompt = 20 + sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        output = random.randint(8, 60)
        usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                 "prompt_tokens_details": {"cached_tokens": random.choice([0, 0, prompt // 2])}}
        if not body.get("stream"):
            time.sleep(slow * random.uniform(0.08, 0.25) + output * 0.004)
            answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * output},
                                   "finish_reason": "stop"}], "usage": usage}
            return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

        def chunks():
            time.sleep(slow * random.uniform(0.05, 0.3))
            per_token = slow * random.uniform(0.004, 0.012)
            for i in range(output):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                         "choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                time.sleep(per_token)
            final = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                u = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": [], "usage": usage}
                yield b"data: " + json.dumps(u).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return 200, {"content-type": "text/event-stream"}, chunks()

    return respond


def anthropic_fake(request):
    from fakes import anthropic_sse
    body = request.json()
    if random.random() < 0.04:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return 529, {"content-type": "application/json"}, json.dumps(error).encode()
    model = body["model"] + "-20250514"
    prompt = 30 + sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
    output = random.randint(10, 80)
    usage = {"input_tokens": prompt, "output_tokens": output,
             "cache_read_input_tokens": random.choice([0, 0, 64]), "cache_creation_input_tokens": 0}
    if not body.get("stream"):
        time.sleep(random.uniform(0.15, 0.45) + output * 0.005)
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                  "content": [{"type": "text", "text": "ok " * output}], "stop_reason": "end_turn",
                  "stop_sequence": None, "usage": usage}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

    def chunks():
        time.sleep(random.uniform(0.15, 0.5))
        start = {"type": "message_start", "message": {
            "id": "msg_2", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}
        yield from anthropic_sse([start, {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}])
        per_token = random.uniform(0.008, 0.02)
        for _ in range(output):
            yield from anthropic_sse([{"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "ok "}}])
            time.sleep(per_token)
        yield from anthropic_sse([
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": output}},
            {"type": "message_stop"}])

    return 200, {"content-type": "text/event-stream"}, chunks()


# --- traffic ----------------------------------------------------------------

RUN = {"start": time.time(), "seconds": 150.0}


def flaky_errors():
    """The self-hosted backend fails now and then, and mostly during an
    incident in the second quarter of the run (the gateway retries a 500
    once, so only double failures reach the client)."""
    t = (time.time() - RUN["start"]) / RUN["seconds"]
    return 0.75 if 0.25 < t < 0.4 else 0.1


def post(url, body, headers=None, stream=False):
    req = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def one_request(gw):
    """One request of a known mix; returns its status."""
    words = "tell me about the weather in paris " * random.randint(1, 30)
    messages = [{"role": "user", "content": words}]
    stream = random.random() < 0.5
    pick = random.random()
    if pick < 0.40:
        return post(gw.url + "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": messages, "stream": stream})
    if pick < 0.60:  # Anthropic native
        return post(gw.url + "/anthropic/v1/messages",
                    {"model": "claude-sonnet", "max_tokens": 256, "messages": messages, "stream": stream},
                    {"anthropic-version": "2023-06-01", "x-api-key": "x"})
    if pick < 0.80:  # an OpenAI client on the Anthropic backend
        return post(gw.url + "/v1/chat/completions", {"model": "claude-sonnet", "messages": messages, "stream": stream})
    if pick < 0.98:  # a self-hosted model that fails now and then
        return post(gw.url + "/v1/chat/completions", {"model": "llama-3-8b", "messages": messages, "stream": stream})
    return post(gw.url + "/v1/chat/completions", {"model": "no-such-model", "messages": messages})


def drive(gw, seconds, stop):
    """Load that rises, dips, spikes and settles: requests per second over time."""
    start = RUN["start"]
    statuses = {}
    lock = threading.Lock()

    def worker():
        while not stop.is_set() and time.time() - start < seconds:
            t = (time.time() - start) / seconds
            target = 3.0 + 4.0 * math.sin(1.5 * math.pi * t) ** 2 + (4.0 if 0.55 < t < 0.7 else 0.0)
            status = one_request(gw)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            time.sleep(random.expovariate(target / 6))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


# --- scraping ---------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(admin):
    with urllib.request.urlopen(admin + "/stats/prometheus", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and (m.group(1).startswith("gen_ai_") or m.group(1).startswith("aigw_")):
            samples[(m.group(1), frozenset(LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return samples


# --- the PromQL subset the dashboard uses -----------------------------------

class Query:
    """Parses one panel expression into a tree and evaluates it at a scrape."""

    def __init__(self, text, variables):
        for name, value in variables.items():
            text = text.replace("$" + name, value)
        self.s, self.i = text, 0
        self.tree = self.expr()
        self.ws()
        if self.i != len(self.s):
            raise ValueError(f"cannot parse {self.s[self.i:]!r} in {text!r}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def eat(self, pattern):
        self.ws()
        m = re.compile(pattern).match(self.s, self.i)
        if m:
            self.i = m.end()
        return m

    def need(self, pattern):
        m = self.eat(pattern)
        if not m:
            raise ValueError(f"expected {pattern!r} at {self.s[self.i:]!r}")
        return m

    def expr(self):
        left = self.term()
        while self.eat(r"/"):
            left = ("div", left, self.term())
        return left

    def labels(self):
        self.need(r"\(")
        names = [m.strip() for m in self.need(r"[^)]*").group(0).split(",") if m.strip()]
        self.need(r"\)")
        return names

    def term(self):
        if self.eat(r"sum\b"):
            by = self.labels() if self.eat(r"by\b") else None
            self.need(r"\(")
            inner = self.expr()
            self.need(r"\)")
            if by is None and self.eat(r"by\b"):
                by = self.labels()
            return ("sum", by or [], inner)
        if self.eat(r"rate\b"):
            self.need(r"\(")
            selector = self.selector()
            self.need(r"\[[^\]]*\]")
            self.need(r"\)")
            return ("rate", selector)
        if self.eat(r"histogram_quantile\b"):
            self.need(r"\(")
            q = float(self.need(r"[0-9.]+").group(0))
            self.need(r",")
            inner = self.expr()
            self.need(r"\)")
            return ("quantile", q, inner)
        raise ValueError(f"unsupported at {self.s[self.i:]!r}")

    def selector(self):
        name = self.need(r"[a-zA-Z_:][a-zA-Z0-9_:]*").group(0)
        matchers = []
        if self.eat(r"\{"):
            while not self.eat(r"\}"):
                m = self.need(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
                matchers.append((m.group(1), m.group(2), m.group(3)))
        return name, matchers

    @staticmethod
    def matches(labels, matchers):
        for name, op, value in matchers:
            have = labels.get(name, "")  # a missing label is the empty string
            if op == "=" and have != value or op == "!=" and have == value:
                return False
            if op == "=~" and not re.fullmatch(value, have) or op == "!~" and re.fullmatch(value, have):
                return False
        return True

    def evaluate(self, scrapes, k, window):
        return self._eval(self.tree, scrapes, k, window)

    def _eval(self, node, scrapes, k, window):
        kind = node[0]
        if kind == "rate":
            name, matchers = node[1]
            t, now = scrapes[k]
            j = k
            while j > 0 and scrapes[j - 1][0] >= t - window:
                j -= 1
            if j == k:
                return {}
            t0, before = scrapes[j]
            out = {}
            for (n, ls), v in now.items():
                labels = dict(ls)
                if n == name and self.matches(labels, matchers):
                    # A series appears at its first increment: it was 0 before.
                    out[ls] = max(0.0, v - before.get((n, ls), 0.0)) / (t - t0)
            return out
        if kind == "sum":
            by, inner = node[1], node[2]
            out = {}
            for ls, v in self._eval(inner, scrapes, k, window).items():
                key = frozenset((a, b) for a, b in ls if a in by)
                out[key] = out.get(key, 0.0) + v
            if not by and not out:
                return {}
            return out
        if kind == "div":
            left = self._eval(node[1], scrapes, k, window)
            right = self._eval(node[2], scrapes, k, window)
            return {ls: (v / right[ls] if right[ls] else math.nan) for ls, v in left.items() if ls in right}
        if kind == "quantile":
            q, inner = node[1], node[2]
            groups = {}
            for ls, v in self._eval(inner, scrapes, k, window).items():
                le = dict(ls).get("le")
                if le is None:
                    continue
                key = frozenset((a, b) for a, b in ls if a != "le")
                groups.setdefault(key, []).append((float(le), v))
            return {key: histogram_quantile(q, buckets) for key, buckets in groups.items()}
        raise ValueError(kind)


def histogram_quantile(q, buckets):
    """Prometheus' histogram_quantile over cumulative (le, rate) buckets."""
    buckets.sort()
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(le):
                return buckets[i - 1][0]
            if i == 0 and le <= 0:
                return le
            start = prev_le if i > 0 else 0.0
            if count == prev_count:
                return le
            return start + (le - start) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


def legend(fmt, labels):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels)) or "value"
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt).strip() or "{}"


UNITS = {"reqps": "req/s", "percentunit": "", "ms": "ms", "short": ""}


def fmt_value(v, unit):
    if v is None or math.isnan(v):
        return "No data"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "reqps":
        return f"{v:.2f} req/s"
    if unit == "ms":
        return f"{v:.0f} ms"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


# --- rendering --------------------------------------------------------------

def render(dashboard, scrapes, out, window, statuses, seconds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    variables = {"model": ".*", "provider": ".*", "backend": ".*", "__rate_interval": f"{window}s"}
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    bg, panel_bg, fg, grid = "#111217", "#181b1f", "#ccccdc", "#2c3235"
    fig = plt.figure(figsize=(18, rows * 0.42 + 1.6), facecolor=bg)
    spec = GridSpec(rows, 24, figure=fig, left=0.04, right=0.99, top=1 - 1.6 / (rows * 0.42 + 1.6),
                    bottom=0.03, hspace=2.2, wspace=1.6)
    fig.suptitle(dashboard["title"], color=fg, fontsize=16, x=0.04, ha="left", y=0.995)
    fig.text(0.04, 1 - 0.85 / (rows * 0.42 + 1.6),
             "Rendered by scripts/dashboard-png.py from the panel definitions in "
             "deploy/grafana/aigw-dashboard.json, with data scraped every 5 s from Envoy's "
             f"/stats/prometheus during a real {seconds:.0f} s `aigw run` with fake providers; "
             f"rates over {window} s. Not a Grafana screenshot. "
             f"Responses: {', '.join(f'{s}: {n}' for s, n in sorted(statuses.items()))}.",
             color="#8e8e8e", fontsize=9.5, ha="left", va="top", wrap=True)
    t0 = scrapes[0][0]
    times = [t - t0 for t, _ in scrapes]
    colors = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ff780a"]
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(spec[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_facecolor(panel_bg)
        for side in ax.spines.values():
            side.set_color(grid)
        ax.tick_params(colors=fg, labelsize=7)
        ax.set_title(panel["title"], color=fg, fontsize=10, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        series = {}
        for target in panel.get("targets", []):
            query = Query(target["expr"], variables)
            for k in range(len(scrapes)):
                for ls, v in query.evaluate(scrapes, k, window).items():
                    name = legend(target.get("legendFormat"), ls)
                    series.setdefault(name, [math.nan] * len(scrapes))[k] = v
        if panel["type"] == "stat":
            values = next(iter(series.values()), [math.nan])
            last = next((v for v in reversed(values) if not math.isnan(v)), math.nan)
            ax.plot(times, [v if not math.isnan(v) else None for v in values], color="#73bf69", alpha=0.35)
            ax.fill_between(times, [0 if math.isnan(v) else v for v in values], color="#73bf69", alpha=0.12)
            ax.text(0.5, 0.45, fmt_value(last, unit), transform=ax.transAxes, ha="center", va="center",
                    fontsize=22, color="#73bf69", weight="bold")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for i, (name, values) in enumerate(sorted(series.items())):
            ax.plot(times, values, label=name, color=colors[i % len(colors)], linewidth=1.4)
        if not series:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color=fg)
        ax.grid(color=grid, linewidth=0.5)
        if g["y"] + g["h"] == rows:
            ax.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=8)
        ax.set_ylabel(UNITS.get(unit, unit) or ("tokens/s" if "Tokens" in panel["title"] and "request" not in
                                                  panel["title"] else ""), color="#8e8e8e", fontsize=7)
        ax.set_ylim(bottom=0)
        if series:
            ax.legend(fontsize=7, loc="upper left", facecolor=panel_bg, edgecolor=grid, labelcolor=fg,
                      ncol=2 if len(series) > 4 else 1)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=bg)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150, help="traffic duration (default 150, at most 180)")
    parser.add_argument("--interval", type=float, default=5, help="scrape interval (Envoy flushes stats every 5 s)")
    parser.add_argument("--window", type=int, default=30, help="rate window in seconds ($__rate_interval)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    parser.add_argument("--scrapes", help="also save the raw scrapes as JSON here")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 180)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:  # fail before the run if a panel is beyond this evaluator
        for target in panel.get("targets", []):
            Query(target["expr"], {"model": ".*", "provider": ".*", "backend": ".*", "__rate_interval": "30s"})

    import tempfile
    from conftest import Gateway
    from fakes import FakeProvider

    fakes = [FakeProvider(openai_fake(), "openai"), FakeProvider(anthropic_fake, "anthropic"),
             FakeProvider(openai_fake(error_rate=flaky_errors, slow=2.0), "flaky")]
    work = tempfile.mkdtemp(prefix="aigw-dashboard-")
    config = os.path.join(work, "gateway.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(openai=fakes[0].port, anthropic=fakes[1].port, flaky=fakes[2].port))
    gw = Gateway([config], extra_args=["--traffic", "quiet"])
    stop = threading.Event()
    scrapes = []
    result = {}
    try:
        RUN.update(start=time.time(), seconds=args.seconds)
        driver = threading.Thread(target=lambda: result.update(drive(gw, args.seconds, stop)), daemon=True)
        scrapes.append((time.time(), scrape(gw.admin)))
        driver.start()
        while driver.is_alive():
            time.sleep(args.interval)
            scrapes.append((time.time(), scrape(gw.admin)))
            print(f"\r{scrapes[-1][0] - scrapes[0][0]:5.0f} s, {len(scrapes)} scrapes", end="", flush=True)
        time.sleep(args.interval)  # the last histogram flush
        scrapes.append((time.time(), scrape(gw.admin)))
        print()
    finally:
        stop.set()
        gw.close()
        for fake in fakes:
            fake.close()
    if args.scrapes:
        with open(args.scrapes, "w") as f:
            json.dump([[t, [[n, sorted(ls), v] for (n, ls), v in s.items()]] for t, s in scrapes], f)
    # The known traffic: every request the driver made is counted once.
    counted = sum(v for (n, _), v in scrapes[-1][1].items() if n == "aigw_requests_total")
    if counted != sum(result.values()):
        sys.exit(f"aigw_requests_total says {counted:.0f} requests, the driver made {sum(result.values())}")
    render(dashboard, scrapes, args.out, args.window, result, scrapes[-1][0] - scrapes[0][0])
    print(f"wrote {args.out}; responses {result}")


if __name__ == "__main__":
    main()
