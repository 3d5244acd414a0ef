#!/usr/bin/env python3
"""Continuous batching, measured: total output tokens/s of 1 stream vs 16 concurrent gRPC Decode streams
against a release `contrail serve` (SmolLM2 fixture, 16 slots). Prints both figures and their ratio
(`make bench-batching`; a benchmark, not a test: the machine is shared and noisy, so it takes medians)."""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Tests", "python"))
from conftest import ServerProcess, free_port  # noqa: E402

import grpc  # noqa: E402
from grpc_tools import protoc  # noqa: E402

TOKENS = int(os.environ.get("BENCH_TOKENS", "96"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PROMPTS = [f"Write a short story about a {animal} who learns to {skill}." for animal, skill in [
    ("cat", "swim"), ("dog", "paint"), ("fox", "sing"), ("owl", "cook"), ("bear", "dance"), ("wolf", "read"),
    ("horse", "fly"), ("mouse", "juggle"), ("frog", "skate"), ("duck", "knit"), ("goat", "surf"), ("lion", "whistle"),
    ("seal", "write"), ("crow", "count"), ("deer", "climb"), ("hare", "sail")]]


def stubs():
    out = tempfile.mkdtemp(prefix="contrail-stubs-")
    assert protoc.main(["protoc", f"-I{ROOT}/Protos", f"--python_out={out}", f"--grpc_python_out={out}", "jetstream.proto"]) == 0
    sys.path.insert(0, out)
    import jetstream_pb2, jetstream_pb2_grpc  # noqa: E401
    return jetstream_pb2, jetstream_pb2_grpc


def run(stub, pb, prompts):
    """Streams every prompt concurrently (max_tokens TOKENS, EOS ignored by taking the full budget if
    reached); returns total tokens / wall seconds."""
    counts = [0] * len(prompts)

    def one(i):
        req = pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text=prompts[i]), max_tokens=TOKENS)
        for resp in stub.Decode(req, timeout=600):
            counts[i] += sum(len(s.token_ids) for s in resp.stream_content.samples)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts)


def main():
    os.environ.setdefault("CONTRAIL_BIN", os.path.join(ROOT, ".build", "release", "contrail"))
    import conftest
    conftest.BIN = os.environ["CONTRAIL_BIN"]
    pb, pbg = stubs()
    server = ServerProcess(extra=["--batch-size", "16", "--max-cache-length", "512"], test_services=False)
    try:
        stub = pbg.OrchestratorStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        run(stub, pb, PROMPTS[:2])  # warm the connection and caches
        single, batched = [], []
        for _ in range(ROUNDS):
            single.append(run(stub, pb, PROMPTS[:1]))
            batched.append(run(stub, pb, PROMPTS))
        s = statistics.median(r for r, _ in single)
        b = statistics.median(r for r, _ in batched)
        print(f"1 stream:   {s:7.1f} output tokens/s  (runs: {', '.join(f'{r:.1f}' for r, _ in single)}; tokens {single[0][1]})")
        print(f"16 streams: {b:7.1f} output tokens/s  (runs: {', '.join(f'{r:.1f}' for r, _ in batched)}; tokens {batched[0][1]})")
        print(f"ratio 16/1: {b / s:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
