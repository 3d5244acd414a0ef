#!/usr/bin/env python3
"""Soak: a bounded stream of requests against a release `contrail serve` (SmolLM2 fixture), watching the
server's resident memory. `make soak` (SOAK_REQUESTS, default 2000). Mixes curl-style /generate (plain
and streamed), gRPC Decode (text and token content) and cancellations mid-stream, eleven at a time
against 8 slots and 2 queue places (so some are refused). Prints RSS as it goes and fails if memory
keeps growing after the first quarter (the warm-up)."""
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Tests", "python"))
os.environ.setdefault("CONTRAIL_BIN", os.path.join(ROOT, ".build", "release", "contrail"))
import conftest  # noqa: E402
from conftest import ServerProcess  # noqa: E402
from bench_batching import stubs  # noqa: E402

import grpc  # noqa: E402

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
CONCURRENCY = 11
# Growth allowed between the end of the warm-up quarter and the end (allocator noise, not a leak).
ALLOWED_GROWTH_MB = float(os.environ.get("SOAK_ALLOWED_GROWTH_MB", "24"))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    conftest.BIN = os.environ["CONTRAIL_BIN"]
    pb, pbg = stubs()
    server = ServerProcess(extra=["--batch-size", "8", "--max-cache-length", "256", "--max-queued", "2"], test_services=False)
    counts = {"ok": 0, "cancelled": 0, "refused": 0, "error": 0}
    lock = threading.Lock()
    next_index = [0]
    samples = []
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = pbg.OrchestratorStub(channel)
    words = "river mountain cloud engine garden story number music planet window".split()

    def one(i, rng):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
        kind = i % 5
        try:
            if kind == 0:
                req = urllib.request.Request(server.url("/generate"), data=json.dumps({"prompt": prompt, "max_tokens": rng.randint(1, 24)}).encode())
                with urllib.request.urlopen(req, timeout=120) as r:
                    json.loads(r.read())["response"]
                return "ok"
            if kind == 1:
                req = urllib.request.Request(server.url("/generate"), data=json.dumps({"prompt": prompt, "max_tokens": 16, "stream": True}).encode())
                with urllib.request.urlopen(req, timeout=120) as r:
                    for line in r:
                        json.loads(line)
                return "ok"
            if kind in (2, 3):
                content = ({"text_content": pb.DecodeRequest.TextContent(text=prompt)} if kind == 2 else
                           {"token_content": pb.DecodeRequest.TokenContent(token_ids=[rng.randint(100, 20000) for _ in range(rng.randint(1, 40))])})
                for _ in stub.Decode(pb.DecodeRequest(max_tokens=rng.randint(1, 24), **content), timeout=120):
                    pass
                return "ok"
            call = stub.Decode(pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text=prompt), max_tokens=200), timeout=120)
            for n, _ in enumerate(call):
                if n == 2:
                    call.cancel()
                    break
            return "cancelled"
        except urllib.error.HTTPError as e:
            return "refused" if e.code == 503 else "error"
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return "cancelled"
            return "refused" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "error"

    def worker(seed):
        rng = random.Random(seed)
        while True:
            with lock:
                i = next_index[0]
                if i >= REQUESTS:
                    return
                next_index[0] += 1
            outcome = one(i, rng)
            if outcome == "refused":
                time.sleep(1.0)  # a client honouring Retry-After: 1
            with lock:
                counts[outcome] += 1
                done = sum(counts.values())
                if done % (REQUESTS // 8) == 0:
                    samples.append((done, rss_mb(server.proc.pid)))
                    print(f"{done:5d} requests  RSS {samples[-1][1]:7.1f} MiB  {counts}", flush=True)

    t0 = time.time()
    try:
        print(f"start: RSS {rss_mb(server.proc.pid):.1f} MiB", flush=True)
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)
        final = rss_mb(server.proc.pid)
    finally:
        channel.close()
        rc = server.stop()
    warm = samples[min(1, len(samples) - 1)][1]
    growth = final - warm
    print(f"{REQUESTS} requests in {time.time() - t0:.0f} s: {counts}; RSS after warm-up {warm:.1f} MiB, "
          f"at the end {final:.1f} MiB (growth {growth:+.1f} MiB, allowed {ALLOWED_GROWTH_MB}); exit status {rc}")
    if counts["error"] or rc != 0 or growth > ALLOWED_GROWTH_MB:
        sys.exit(1)


if __name__ == "__main__":
    main()
