#!/usr/bin/env python3
"""`make bench-serve`: Contrail's server vs llama.cpp's server, same GGUF (the SmolLM2 fixture), same
threads and slots, both driven by `contrail bench` over the OpenAI /v1/completions route (streamed,
temperature 0, ignore_eos) at concurrency 1, 4, 16 and a Poisson rate sweep. Prints a table with the
ratios Contrail/llama.cpp, writes docs/bench-serve.svg (output throughput vs p99 latency) and rewrites
the generated section of BENCHMARKS.md. A benchmark, not a test: the machine is shared and noisy, so the
two servers take turns on every configuration.

Environment: THREADS (2), SLOTS (16), INPUT_LEN (128), OUTPUT_LEN (128), BENCH_SCALE (1.0: multiplies
request counts and durations), RATES ("0.25,0.5,0.75" req/s), NO_DOCS=1 to leave BENCHMARKS.md and the
plot alone."""
import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llamacpp_build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRAIL = os.path.join(ROOT, ".build", "release", "contrail")
MODEL = os.path.join(llamacpp_build.HOME, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf")
THREADS = int(os.environ.get("THREADS", "2"))
SLOTS = int(os.environ.get("SLOTS", "16"))
INPUT_LEN = int(os.environ.get("INPUT_LEN", "128"))
OUTPUT_LEN = int(os.environ.get("OUTPUT_LEN", "128"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
RATES = [float(r) for r in os.environ.get("RATES", "0.25,0.5,0.75").split(",") if r]
CACHE_PER_SLOT = 1024
RESULTS = os.path.join(ROOT, ".build", "bench-serve")
SVG = os.path.join(ROOT, "docs", "bench-serve.svg")
DOC = os.path.join(ROOT, "BENCHMARKS.md")
BEGIN, END = "<!-- bench-serve:begin -->", "<!-- bench-serve:end -->"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, argv, port, ready_path):
        self.name, self.port = name, port
        self.log = open(os.path.join(RESULTS, f"{name}.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bench-serve: {name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit(f"bench-serve: {name} not ready after 300 s; see {self.log.name}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_servers():
    llama_server, = llamacpp_build.tools("llama-server")
    ours = free_port()
    contrail = Server("contrail", [CONTRAIL, "serve", "--model", MODEL, "--threads", str(THREADS), "--batch-size", str(SLOTS),
                                   "--max-cache-length", str(CACHE_PER_SLOT), "--max-queued", "256", "--http-port", str(ours),
                                   "--grpc-port", str(free_port())], ours, "/healthcheck")
    theirs = free_port()
    # -c is the total context over all slots: SLOTS × CACHE_PER_SLOT gives each slot what ours has.
    llama = Server("llama.cpp", [llama_server, "-m", MODEL, "-t", str(THREADS), "-tb", str(THREADS), "-np", str(SLOTS),
                                 "-c", str(SLOTS * CACHE_PER_SLOT), "--port", str(theirs), "--host", "127.0.0.1",
                                 "--no-webui"], theirs, "/health")
    return [llama, contrail]


def configurations():
    n = lambda x: max(1, int(round(x * SCALE)))  # noqa: E731
    configs = [("c1", ["--concurrency", "1", "--requests", str(n(8))]),
               ("c4", ["--concurrency", "4", "--requests", str(n(16))]),
               ("c16", ["--concurrency", "16", "--requests", str(n(48))])]
    for r in RATES:
        configs.append((f"rate{r:g}", ["--request-rate", f"{r:g}", "--concurrency", "64", "--duration", f"{40 * SCALE:g}"]))
    return configs


def bench(server, name, args, seed):
    out = os.path.join(RESULTS, f"{server.name}-{name}.json")
    cmd = [CONTRAIL, "bench", "--target", f"127.0.0.1:{server.port}", "--protocol", "openai", "--input-len", str(INPUT_LEN),
           "--output-len", str(OUTPUT_LEN), "--seed", str(seed), "--output", out, "--tokenizer", MODEL] + args
    print(f"bench-serve: {server.name} {name}", file=sys.stderr, flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"bench-serve: `{' '.join(cmd)}` failed:\n{r.stdout}")
    with open(out) as f:
        return json.load(f)


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, contrail {commit or '?'}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


def table(results):
    """Markdown rows: per configuration, both servers' figures and Contrail/llama.cpp."""
    head = ("| load | server | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | E2E p99 ms | failed |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|\n")
    rows, ratios = [], []
    for name, by_server in results:
        for s in ("contrail", "llama.cpp"):
            r = by_server[s]
            rows.append(f"| {name} | {s} | {r['output_throughput']:.1f} | {r['ttft_ms']['p50']:.0f} | {r['ttft_ms']['p99']:.0f} | "
                        f"{r['tpot_ms']['p50']:.1f} | {r['e2e_ms']['p99']:.0f} | {r['failed']} |")
        a, b = by_server["contrail"], by_server["llama.cpp"]
        ratios.append(f"| {name} | {ratio(a['output_throughput'], b['output_throughput'])} | "
                      f"{ratio(a['ttft_ms']['p50'], b['ttft_ms']['p50'])} | {ratio(a['ttft_ms']['p99'], b['ttft_ms']['p99'])} | "
                      f"{ratio(a['tpot_ms']['p50'], b['tpot_ms']['p50'])} |")
    ratio_head = ("| load | output tok/s | TTFT p50 | TTFT p99 | TPOT p50 |\n|---|---:|---:|---:|---:|\n")
    return head + "\n".join(rows) + "\n", ratio_head + "\n".join(ratios) + "\n"


def svg(results):
    """Two panels: p99 TTFT and p99 E2E latency against output tokens/s, one line per server."""
    colors = {"contrail": "#d62728", "llama.cpp": "#1f77b4"}
    w, h, pad = 360, 260, 50
    parts = []
    for panel, (metric, label) in enumerate([("ttft_ms", "p99 TTFT (s)"), ("e2e_ms", "p99 end-to-end latency (s)")]):
        x0 = panel * (w + 30)
        points = {s: sorted((r[s]["output_throughput"], r[s][metric]["p99"] / 1000) for _, r in results) for s in colors}
        xmax = max(x for pts in points.values() for x, _ in pts) * 1.1
        ymax = max(y for pts in points.values() for _, y in pts) * 1.1
        sx = lambda x: x0 + pad + x / xmax * (w - pad - 10)  # noqa: E731
        sy = lambda y: h - pad + 10 - y / ymax * (h - pad - 10)  # noqa: E731
        parts.append(f'<rect x="{x0 + pad}" y="10" width="{w - pad - 10}" height="{h - pad}" fill="none" stroke="#999"/>')
        for i in range(5):
            xv, yv = xmax * i / 4, ymax * i / 4
            parts.append(f'<text x="{sx(xv):.1f}" y="{h - pad + 24}" font-size="10" text-anchor="middle">{xv:.0f}</text>')
            parts.append(f'<text x="{x0 + pad - 6}" y="{sy(yv) + 3:.1f}" font-size="10" text-anchor="end">{yv:.1f}</text>')
        parts.append(f'<text x="{x0 + pad + (w - pad) / 2}" y="{h - 8}" font-size="11" text-anchor="middle">output tokens/s</text>')
        parts.append(f'<text x="{x0 + 12}" y="{(h - pad) / 2 + 10}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 {x0 + 12} {(h - pad) / 2 + 10})">{label}</text>')
        for s, pts in points.items():
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colors[s]}" stroke-width="2"/>')
            for x, y in pts:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colors[s]}"/>')
    for i, (s, c) in enumerate(colors.items()):
        parts.append(f'<rect x="{pad + 10}" y="{18 + i * 16}" width="10" height="10" fill="{c}"/>'
                     f'<text x="{pad + 24}" y="{27 + i * 16}" font-size="11">{s}</text>')
    width = 2 * w + 30
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>' + "".join(parts) + "</svg>\n")


def update_doc(section):
    with open(DOC) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit(f"bench-serve: {DOC} lacks the {BEGIN} … {END} markers")
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: BEGIN + "\n" + section + END, text, flags=re.S)
    with open(DOC, "w") as f:
        f.write(text)


def main():
    if not os.path.exists(CONTRAIL):
        sys.exit("bench-serve: build the release binary first (make release)")
    os.makedirs(RESULTS, exist_ok=True)
    servers = start_servers()
    results = []
    try:
        for k, (name, args) in enumerate(configurations()):
            by_server = {}
            # Both servers take turns on each configuration (drift on a shared machine hits both); every
            # run has its own prompts (seed), so neither server's prompt cache sees a prompt twice.
            for j, server in enumerate(servers if k % 2 == 0 else servers[::-1]):
                by_server[server.name] = bench(server, name, args, seed=100 * k + j + 1)
            results.append((name, by_server))
    finally:
        for s in servers:
            s.stop()
    rows, ratios = table(results)
    print(f"\nbench-serve: {machine()}; SmolLM2-135M-Instruct Q4_1, {THREADS} threads, {SLOTS} slots, "
          f"{INPUT_LEN} prompt / {OUTPUT_LEN} output tokens\n")
    print(rows)
    print("Contrail / llama.cpp (throughput: higher is better; latencies: lower is better)\n")
    print(ratios)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if os.environ.get("NO_DOCS"):
        return
    os.makedirs(os.path.dirname(SVG), exist_ok=True)
    with open(SVG, "w") as f:
        f.write(svg(results))
    when = datetime.date.today().isoformat()
    section = (f"Generated by `make bench-serve` on {when}: {machine()}. SmolLM2-135M-Instruct Q4_1, {THREADS} threads, "
               f"{SLOTS} slots of {CACHE_PER_SLOT} tokens, {INPUT_LEN} prompt / {OUTPUT_LEN} output tokens per request.\n\n"
               + rows + "\nContrail / llama.cpp (throughput: higher is better; latencies: lower is better):\n\n" + ratios
               + "\n![output throughput vs p99 latency](docs/bench-serve.svg)\n")
    update_doc(section)
    print(f"bench-serve: wrote {os.path.relpath(SVG, ROOT)} and the table in BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
