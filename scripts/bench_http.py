#!/usr/bin/env python3
"""`make bench-http`: Contrail vs nginx (HTTP/1.1, wrk) and vs h2o (h2c, h2load), measured in one run on
this machine, every server with 2 workers returning the same small JSON for GET /healthcheck.
Prints req/s and p50/p99 latency per server (median of RUNS runs) and the ratios Contrail/nginx and
Contrail/h2o. A benchmark, not a test: nothing here asserts on time."""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CONTRAIL_BIN", os.path.join(ROOT, ".build", "release", "contrail"))
RUNS = int(os.environ.get("RUNS", "3"))
WORKERS = int(os.environ.get("WORKERS", "2"))
BODY = '{"response":{"is_live":true}}'
WRK = ["wrk", "-t2", "-c256", "-d8s", "--latency"]
H2LOAD = ["h2load", "-n", "200000", "-c", "16", "-m", "32"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"bench-http: server exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench-http: nothing listening on {port}")


def start_contrail(tmp):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(free_port()),
                          "--io-threads", str(WORKERS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def start_nginx(tmp):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes {WORKERS};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {tmp}/nginx-body;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location = /healthcheck {{ default_type application/json; return 200 '{BODY}'; }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def start_h2o(tmp):
    port = free_port()
    doc = os.path.join(tmp, "healthcheck")
    with open(doc, "w") as f:
        f.write(BODY)
    conf = os.path.join(tmp, "h2o.conf")
    with open(conf, "w") as f:
        # h2o switches to `nobody` when started as root unless told otherwise.
        f.write(("user: root\n" if os.geteuid() == 0 else "") + f"""num-threads: {WORKERS}
pid-file: {tmp}/h2o.pid
error-log: {tmp}/h2o-error.log
listen:
  host: 127.0.0.1
  port: {port}
hosts:
  default:
    paths:
      /healthcheck:
        file.file: {doc}
        header.set: "content-type: application/json"
""")
    p = subprocess.Popen(["h2o", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port):
    out = subprocess.run(WRK + [f"http://127.0.0.1:{port}/healthcheck"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)}
    errors = "Non-2xx" in out or "Socket errors" in out
    return rps, lat.get("50"), lat.get("99"), errors


def run_h2load(port, tmp):
    log = os.path.join(tmp, "h2load.log")
    out = subprocess.run(H2LOAD + ["--log-file", log, f"http://127.0.0.1:{port}/healthcheck"], capture_output=True, text=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    with open(log) as f:
        lat = sorted(int(line.split("\t")[2]) / 1000.0 for line in f if line.strip())
    ok = re.search(r"(\d+) succeeded", out)
    errors = ok is None or int(ok.group(1)) != int(H2LOAD[2])
    return rps, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], errors


def measure(name, start, bench, tmp):
    proc, port = start(tmp)
    try:
        bench(port)  # warm-up
        results = [bench(port) for _ in range(RUNS)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rps = statistics.median(r[0] for r in results)
    p50 = statistics.median(r[1] for r in results)
    p99 = statistics.median(r[2] for r in results)
    errors = any(r[3] for r in results)
    print(f"  {name:<10} {rps:>12,.0f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms{'   ERRORS' if errors else ''}"
          f"   runs: {', '.join(f'{r[0]:,.0f}' for r in results)}", flush=True)
    return rps


def main():
    for tool in ("wrk", "h2load", "nginx", "h2o"):
        if shutil.which(tool) is None:
            sys.exit(f"bench-http: {tool} not found (make bench-http installs it)")
    if not os.path.exists(BIN):
        sys.exit(f"bench-http: {BIN} missing (make release)")
    print(f"bench-http: {os.cpu_count()} cores, {WORKERS} server workers, load generator on the same cores, median of {RUNS}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"HTTP/1.1 keep-alive: {' '.join(WRK)}")
        c1 = measure("contrail", start_contrail, run_wrk, tmp)
        n1 = measure("nginx", start_nginx, run_wrk, tmp)
        print(f"h2c prior knowledge: {' '.join(H2LOAD)}")
        c2 = measure("contrail", start_contrail, lambda p: run_h2load(p, tmp), tmp)
        h2 = measure("h2o", start_h2o, lambda p: run_h2load(p, tmp), tmp)
    print(f"ratio contrail/nginx (HTTP/1.1): {c1 / n1:.2f}")
    print(f"ratio contrail/h2o (h2c):        {c2 / h2:.2f}")


if __name__ == "__main__":
    main()
