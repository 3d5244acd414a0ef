"""`contrail serve --backend pjrt` on the XLA CPU PJRT plugin (the same code path as libtpu and the CUDA
plugin): the whole pipeline end to end, with answers equal to the CPU backend's."""
import json
import os
import subprocess
import threading

import grpc
import pytest

from conftest import BIN, ServerProcess

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
PLUGIN = os.path.join(HOME, "fixtures", "pjrt_c_api_cpu_plugin.so")
CAPITAL = "What is the capital of France?"
# Loading (bf16/int8 conversion) and compiling every prefill bucket, insert and decode-step variant take
# minutes in a debug build on 2 cores.
PJRT_READY = 300


@pytest.fixture(scope="module")
def pjrt():
    # f32 weights and KV cache: the same arithmetic as the CPU backend, so answers compare exactly (bf16 and
    # int8 are checked in Swift).
    s = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--pjrt-weights", "f32", "--kv-cache", "f32", "--batch-size", "4",
                             "--max-cache-length", "128"],
                      test_services=False, ready_seconds=PJRT_READY)
    yield s
    assert s.stop() == 0, s.output()


def post(s, body):
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", s.url("/generate"), "-d", json.dumps(body)],
                         capture_output=True, text=True, timeout=120).stdout
    text, status = out.rsplit("\n", 1)
    return int(status), json.loads(text)


def decode_count(stubs, port):
    """Token ids of a short greedy gRPC Decode of a text prompt."""
    pb, pbg = stubs["js"], stubs["js_grpc"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        req = pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text="Count: one, two,"), max_tokens=8)
        return [i for r in pbg.OrchestratorStub(ch).Decode(req, timeout=120) for i in r.stream_content.samples[0].token_ids]


def test_generate_on_the_pjrt_backend(pjrt):
    assert post(pjrt, {"prompt": CAPITAL, "max_tokens": 20}) == (200, {"response": "The capital of France is Paris."})
    log = pjrt.output()
    assert "PJRT plugin" in log and "cpu, " in log and "warmed up" in log
    # prefill and insert for buckets 16, 32, 64, and the decode step greedy, sampling on the device, host logits
    assert "PJRT: compiled 9 programs" in log, log


def test_grpc_decode_streams_equal_the_cpu_backend(pjrt, stubs):
    """Four concurrent token-content streams (continuous batching over the device's slots) give the
    same greedy ids as the CPU backend gives each prompt alone."""
    pb, pbg = stubs["js"], stubs["js_grpc"]
    prompts = [[(i * 7919 + k * 104729) % 20000 + 100 for k in range(3 + (i * 5) % 13)] for i in range(4)]

    def decode(port, ids):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            req = pb.DecodeRequest(token_content=pb.DecodeRequest.TokenContent(token_ids=ids), max_tokens=10)
            return [i for r in pbg.OrchestratorStub(ch).Decode(req, timeout=120) for i in r.stream_content.samples[0].token_ids]

    results = [None] * len(prompts)

    def run(i):
        results[i] = decode(pjrt.grpc_port, prompts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    cpu = ServerProcess(extra=["--batch-size", "1", "--max-cache-length", "128"], test_services=False, ready_seconds=PJRT_READY)
    try:
        expected = [decode(cpu.grpc_port, p) for p in prompts]
    finally:
        assert cpu.stop() == 0
    assert results == expected
    assert all(len(r) == 10 for r in results)


def test_bad_plugin_is_a_clear_startup_error(tmp_path):
    not_a_plugin = tmp_path / "libfake.so"
    not_a_plugin.write_text("not an ELF file")
    for path, message in [("/nonexistent/libtpu.so", "cannot load PJRT plugin /nonexistent/libtpu.so"),
                          (str(not_a_plugin), "cannot load PJRT plugin")]:
        s = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", path], wait_ready=False, test_services=False, ready_seconds=PJRT_READY)
        assert s.proc.wait(timeout=60) == 1
        assert message in s.output(), s.output()


def test_disaggregated_serving_on_two_devices(pjrt, stubs):
    """--pjrt-disaggregate: prefill on device 0, decode on device 1 (the transfer thread moves each
    prefix); the answers equal the single-device server's."""
    s = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--pjrt-weights", "f32", "--kv-cache", "f32", "--pjrt-cpu-devices", "2",
                             "--pjrt-disaggregate", "--batch-size", "2", "--max-cache-length", "128"], test_services=False, ready_seconds=PJRT_READY)
    try:
        assert "prefill on devices [0], decode on devices [1]" in s.output()
        assert post(s, {"prompt": CAPITAL, "max_tokens": 20}) == (200, {"response": "The capital of France is Paris."})
        assert decode_count(stubs, s.grpc_port) == decode_count(stubs, pjrt.grpc_port)
    finally:
        assert s.stop() == 0, s.output()
    # One device is not enough to disaggregate.
    one = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--pjrt-cpu-devices", "1", "--pjrt-disaggregate"],
                        wait_ready=False, test_services=False, ready_seconds=PJRT_READY)
    assert one.proc.wait(timeout=60) == 1 and "--pjrt-disaggregate needs 2 devices; the cpu client has 1" in one.output()


def test_tensor_parallel_serving(pjrt, stubs):
    """--pjrt-tensor-parallel 2 with --pjrt-disaggregate on four CPU devices: every program partitioned over
    two devices (prefill on 0-1, decode on 2-3, the prefix's parts moved device to device); the answers
    equal the single-device server's."""
    s = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--pjrt-weights", "f32", "--kv-cache", "f32", "--pjrt-cpu-devices", "4",
                             "--pjrt-tensor-parallel", "2", "--pjrt-disaggregate", "--batch-size", "2", "--max-cache-length", "128"],
                      test_services=False, ready_seconds=PJRT_READY)
    try:
        log = s.output()
        assert "tensor-parallel over 2 devices per group" in log and "prefill on devices [0, 1], decode on devices [2, 3]" in log
        assert "device memory per device" in log
        assert post(s, {"prompt": CAPITAL, "max_tokens": 20}) == (200, {"response": "The capital of France is Paris."})
        assert decode_count(stubs, s.grpc_port) == decode_count(stubs, pjrt.grpc_port)
    finally:
        assert s.stop() == 0, s.output()
    few = ServerProcess(extra=["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--pjrt-cpu-devices", "2", "--pjrt-tensor-parallel", "4"],
                        wait_ready=False, test_services=False, ready_seconds=PJRT_READY)
    assert few.proc.wait(timeout=60) == 1 and "--pjrt-tensor-parallel 4 needs 4 devices; the cpu client has 2" in few.output()
    bad = subprocess.run([BIN, "serve", "--backend", "pjrt", "--pjrt-tensor-parallel", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--pjrt-tensor-parallel must be at least 1" in bad.stderr


def test_kv_cache_storage_on_both_backends():
    """--quantize_kv_cache=True (jetstream-pytorch's flag) is an int8 KV cache with per-token scales and
    --kv-cache bf16 halves it, on the CPU backend and on PJRT; both still answer the question. Conflicting
    or unknown values are refused."""
    for extra, logged in [(["--quantize_kv_cache=True"], "KV caches: int8"),
                          (["--backend", "pjrt", "--pjrt-plugin", PLUGIN, "--kv-cache", "int8"], "(int8)"),
                          (["--backend", "pjrt", "--pjrt-plugin", PLUGIN], "(bf16)")]:
        s = ServerProcess(extra=extra + ["--batch-size", "2", "--max-cache-length", "128"], test_services=False, ready_seconds=PJRT_READY)
        try:
            assert logged in s.output(), s.output()
            assert post(s, {"prompt": CAPITAL, "max_tokens": 20}) == (200, {"response": "The capital of France is Paris."})
        finally:
            assert s.stop() == 0, s.output()
    for args, message in [(["--quantize_kv_cache=True", "--kv-cache", "bf16"], "--quantize_kv_cache=True asks for an int8 KV cache"),
                          (["--kv-cache", "fp8"], "--kv-cache must be f32, bf16 or int8, got fp8")]:
        r = subprocess.run([BIN, "serve", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and message in r.stderr, r.stderr
