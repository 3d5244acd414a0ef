"""Triton's generate extension and health routes, driven by curl against a real `contrail serve`."""
import json
import subprocess

import pytest

from conftest import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def triton():
    s = ServerProcess(extra=["--batch-size", "4", "--max-cache-length", "256"], test_services=False)
    yield s
    assert s.stop() == 0, s.output()


def curl(*args):
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_health_routes(triton):
    for path in ["/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"]:
        assert curl(triton.url(path))[0] == 200


def test_generate(triton):
    status, body = curl(triton.url(f"/v2/models/{MODEL}/generate"), "-d",
                        json.dumps({"text_input": "What is the capital of France?", "parameters": {"max_tokens": 20, "temperature": 0}}))
    assert status == 200
    assert json.loads(body) == {"model_name": MODEL, "model_version": "1", "text_output": "The capital of France is Paris."}
    # Inputs-as-keys form, with a stop word.
    status, body = curl(triton.url(f"/v2/models/{MODEL}/generate"), "-d",
                        json.dumps({"text_input": "What is the capital of France?", "max_tokens": 20, "stop_words": ["Paris"]}))
    assert status == 200 and json.loads(body)["text_output"] == "The capital of France is "


def test_generate_stream(triton):
    status, body = curl("-N", triton.url(f"/v2/models/{MODEL}/generate_stream"), "-d",
                        json.dumps({"text_input": "What is the capital of France?", "parameters": {"max_tokens": 20, "stream": True}}))
    assert status == 200
    events = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
    assert len(events) >= 5
    assert all(set(e) == {"model_name", "model_version", "text_output"} for e in events)
    assert "".join(e["text_output"] for e in events) == "The capital of France is Paris."


@pytest.mark.parametrize("body, fragment", [
    ({"parameters": {"max_tokens": 5}}, "text_input"),
    ({"text_input": "hi", "max_tokens": 0}, "max_tokens"),
    ({"text_input": "hi", "parameters": {"temperature": 9}}, "temperature"),
])
def test_generate_errors(triton, body, fragment):
    status, raw = curl(triton.url(f"/v2/models/{MODEL}/generate"), "-d", json.dumps(body))
    assert status == 400 and fragment in json.loads(raw)["error"]


def test_unknown_model_is_404(triton):
    assert curl(triton.url("/v2/models/other/generate"), "-d", json.dumps({"text_input": "hi"}))[0] == 404
