"""API keys: every generation route and gRPC Decode refuse without a valid key and accept with one;
probes and /metrics stay open; the refusal does not say whether the key was missing or wrong."""
import json
import subprocess

import grpc
import openai
import pytest

from conftest import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
KEY = "sk-contrail-test-1"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("# keys\nsk-contrail-test-2\n")
    s = ServerProcess(extra=["--api-key", KEY, "--api-key-file", str(key_file), "--max-cache-length", "256"], test_services=False)
    yield s
    assert s.stop() == 0, s.output()


def status(url, *args, key=None):
    headers = ["-H", f"Authorization: Bearer {key}"] if key else []
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *headers, url, *args],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


ROUTES = [
    ("/generate", ["-d", json.dumps({"prompt": "hi", "max_tokens": 2})]),
    ("/v1/completions", ["-d", json.dumps({"prompt": "hi", "max_tokens": 2})]),
    ("/v1/chat/completions", ["-d", json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})]),
    ("/v1/models", []),
    (f"/v2/models/{MODEL}/generate", ["-d", json.dumps({"text_input": "hi", "max_tokens": 2})]),
    (f"/v2/models/{MODEL}/generate_stream", ["-d", json.dumps({"text_input": "hi", "max_tokens": 2})]),
]


@pytest.mark.parametrize("path, args", ROUTES)
def test_http_routes_need_a_key(secured, path, args):
    assert status(secured.url(path), *args) == 401
    assert status(secured.url(path), *args, key="wrong") == 401
    assert status(secured.url(path), *args, key=KEY) == 200
    assert status(secured.url(path), *args, key="sk-contrail-test-2") == 200


def test_refusals_look_the_same(secured):
    def body(key):
        headers = ["-H", f"Authorization: Bearer {key}"] if key else []
        return subprocess.run(["curl", "-s", *headers, secured.url("/generate"), "-d", "{}"], capture_output=True, text=True).stdout
    assert body(None) == body("wrong") and "API key" in body(None)


def test_probes_and_metrics_stay_open(secured):
    for path in ["/healthcheck", "/metrics", "/v2/health/ready"]:
        assert status(secured.url(path)) == 200


def test_openai_sdk_with_and_without_key(secured):
    base = f"http://127.0.0.1:{secured.http_port}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="nope", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
    assert ok.completions.create(model=MODEL, prompt="Hello", max_tokens=2).choices[0].finish_reason == "length"


def test_grpc_decode_needs_a_key(secured, stubs):
    pb, pbg = stubs["js"], stubs["js_grpc"]
    req = pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text="hi"), max_tokens=2)
    with grpc.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as ch:
        stub = pbg.OrchestratorStub(ch)
        for metadata in [None, (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Decode(req, timeout=30, metadata=metadata))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert list(stub.Decode(req, timeout=30, metadata=(("authorization", f"Bearer {KEY}"),)))
        assert stub.HealthCheck(pb.HealthCheckRequest(), timeout=5).is_live
