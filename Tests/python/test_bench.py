"""`contrail bench`, the load generator, against a real `contrail serve` on every protocol it speaks."""
import json
import os
import subprocess

import pytest

from conftest import ServerProcess, free_port


@pytest.fixture(scope="module")
def server():
    s = ServerProcess(extra=["--batch-size", "4", "--max-cache-length", "256", "--api-key", "k1"], test_services=False)
    yield s
    assert s.stop() == 0, s.output()


def bench(*args):
    return subprocess.run([ServerProcess.bin(), "bench", "--quiet", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("protocol", ["openai", "http", "grpc"])
def test_bench_each_protocol(server, protocol, tmp_path):
    port = server.grpc_port if protocol == "grpc" else server.http_port
    out = tmp_path / "result.json"
    r = bench("--target", f"127.0.0.1:{port}", "--protocol", protocol, "--api-key", "k1", "--concurrency", "2",
              "--requests", "4", "--input-len", "20", "--output-len", "8", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 4 and result["failed"] == 0
    assert result["config"]["protocol"] == protocol and result["config"]["concurrency"] == 2
    if protocol == "openai":
        # ignore_eos: every request generates exactly its output length; usage counts 20 prompt tokens each.
        assert result["output_tokens"] == 32 and result["input_tokens"] == 80
    else:
        assert 4 <= result["output_tokens"] <= 32
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        d = result[metric]
        assert 0 < d["p50"] <= d["p90"] <= d["p99"], (metric, d)
    assert result["ttft_ms"]["p50"] < result["e2e_ms"]["p50"]
    assert "Output throughput (tok/s)" in r.stdout


def test_bench_poisson_rate_and_prompt_file(server, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The capital of France is", "output_len": 3}\n\n{"prompt": "One, two,"}\n')
    out = tmp_path / "result.json"
    r = bench("--target", f"127.0.0.1:{server.http_port}", "--api-key", "k1", "--request-rate", "20", "--requests", "6",
              "--prompts", str(prompts), "--output-len", "5", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 6 and result["config"]["request_rate"] == 20
    assert result["output_tokens"] == 3 * 3 + 3 * 5  # prompts alternate: output_len 3, then the default 5


def test_bench_reports_failures_by_kind(server, tmp_path):
    # A refused key: every request fails with HTTP 401; the run says so and exits 1.
    out = tmp_path / "result.json"
    r = bench("--target", f"127.0.0.1:{server.http_port}", "--api-key", "wrong", "--requests", "3", "--output-len", "2",
              "--output", str(out))
    assert r.returncode == 1
    result = json.loads(out.read_text())
    assert result["failures"] == {"HTTP 401": 3} and "HTTP 401" in r.stderr
    # gRPC without a key: status 16 (UNAUTHENTICATED).
    r = bench("--target", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc", "--requests", "2", "--output-len", "2")
    assert r.returncode == 1 and "gRPC status 16" in r.stdout
    # Nothing listening.
    r = bench("--target", f"127.0.0.1:{free_port()}", "--requests", "2", "--output-len", "2")
    assert r.returncode == 1 and "connect" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "nowhere"], "--target must be HOST:PORT"),
    (["--protocol", "carrier-pigeon"], "--protocol must be grpc, http or openai"),
    (["--request-rate", "0"], "--request-rate must be a positive number"),
    (["--prompts", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
])
def test_bench_rejects_bad_flags(args, message):
    r = bench(*args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_bench_rejects_bad_prompt_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    r = bench("--prompts", str(p), "--target", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and f"{p}:2: `prompt` must be a string" in r.stderr
