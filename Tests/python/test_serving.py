"""The JetStream APIs on the real pipeline and model: curl against /generate, grpcio against Decode,
probes, metrics, cancellation, deadlines, overload and SIGTERM, all on a real `contrail serve` process
serving the SmolLM2 fixture."""
import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from conftest import BIN, ServerProcess

CAPITAL = "What is the capital of France?"


@pytest.fixture(scope="module")
def llm():
    s = ServerProcess(extra=["--batch-size", "16", "--max-cache-length", "256", "--max-prefill-length", "128"],
                      test_services=False)
    yield s
    assert s.stop() == 0, s.output()


@pytest.fixture(scope="module")
def js(llm, stubs):
    channel = grpc.insecure_channel(f"127.0.0.1:{llm.grpc_port}")
    yield stubs["js"], stubs["js_grpc"].OrchestratorStub(channel)
    channel.close()


def curl(*args):
    r = subprocess.run(["curl", "-s", "-S", "--max-time", "120", *args], capture_output=True, text=True, check=True)
    return r.stdout


def post(server, path, body, timeout=120):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url(path), data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def metrics(server):
    text = server.get("/metrics")[1].decode()
    values = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:]+)(?:\{[^}]*\})? (\S+)$", line)
        if m:
            values.setdefault(m.group(1), float(m.group(2)))
    return text, values


def wait_for(predicate, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def token_prompts(n):
    # Distinct prompts of distinct lengths (ids well inside SmolLM2's vocabulary).
    return [[(i * 7919 + k * 104729) % 20000 + 100 for k in range(3 + (i * 5) % 23)] for i in range(n)]


def decode_ids(pb, stub, ids, max_tokens=12, **kw):
    req = pb.DecodeRequest(token_content=pb.DecodeRequest.TokenContent(token_ids=ids), max_tokens=max_tokens, **kw)
    out = []
    for resp in stub.Decode(req, timeout=120):
        assert len(resp.stream_content.samples) == 1
        sample = resp.stream_content.samples[0]
        assert sample.text == ""
        out += list(sample.token_ids)
    return out


# MARK: /generate (curl)

def test_generate_answers_with_model_text(llm):
    body = json.loads(curl(f"{llm.url('/generate')}", "-d", json.dumps({"prompt": CAPITAL, "max_tokens": 20})))
    assert body == {"response": "The capital of France is Paris."}


def test_generate_stream_sends_json_objects_as_text_is_produced(llm):
    out = curl("-N", f"{llm.url('/generate')}", "-d",
               json.dumps({"prompt": CAPITAL, "max_tokens": 20, "stream": True, "session_cache": "", "priority": 0}))
    chunks = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(chunks) >= 5, out
    assert {tuple(sorted(c)) for c in chunks} == {("id", "text", "time_created")}
    assert len({c["id"] for c in chunks}) == 1
    assert abs(chunks[0]["time_created"] - time.time()) < 120
    assert "".join(c["text"] for c in chunks) == "The capital of France is Paris."


def test_generate_over_http2(llm):
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", llm.url("/generate"), "-d",
                          json.dumps({"prompt": CAPITAL, "max_tokens": 20})], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"response": "The capital of France is Paris."}


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    ({"max_tokens": 5}, "prompt: field required"),
    ({"prompt": 3, "max_tokens": 5}, "prompt: must be a string"),
    ({"prompt": "hi"}, "max_tokens: field required"),
    ({"prompt": "hi", "max_tokens": "5"}, "max_tokens: must be an integer"),
    ({"prompt": "hi", "max_tokens": 0}, "at least 1"),
    ({"prompt": "hi", "max_tokens": 5, "stream": "yes"}, "stream: must be a boolean"),
    ({"prompt": "", "max_tokens": 5}, "empty"),
    ({"prompt": "word " * 400, "max_tokens": 5}, "maximum prefill length of 128"),
])
def test_generate_rejects_bad_requests_with_400(llm, body, fragment):
    status, headers, raw = post(llm, "/generate", body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert fragment in json.loads(raw)["detail"]


def test_generate_wrong_method(llm):
    status, _, raw = urllib_get(llm, "/generate")
    assert status == 405 and json.loads(raw)["detail"]


def urllib_get(server, path):
    try:
        with urllib.request.urlopen(server.url(path), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# MARK: gRPC Decode

def test_sixteen_concurrent_streams_match_each_prompt_alone(js):
    pb, stub = js
    prompts = token_prompts(16)
    alone = [decode_ids(pb, stub, p) for p in prompts]
    together = [None] * 16

    def run(i):
        together[i] = decode_ids(pb, stub, prompts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert together == alone
    assert all(len(ids) >= 1 for ids in alone)


def test_text_content_streams_text_and_ids(js, llm):
    pb, stub = js
    req = pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text=CAPITAL), max_tokens=20)
    samples = [r.stream_content.samples[0] for r in stub.Decode(req, timeout=60)]
    text = "".join(s.text for s in samples)
    ids = [i for s in samples for i in s.token_ids]
    assert text == "The capital of France is Paris."
    # JetStream reports the stop token's id, with no text.
    assert ids[-1] == 2 and samples[-1].text == ""
    assert all(len(s.token_ids) >= 1 for s in samples)


def test_token_content_round_trip(js):
    pb, stub = js
    # The SmolLM2 chat prompt for the capital question, tokenized by the client: the answer comes back as ids.
    text_req = pb.DecodeRequest(text_content=pb.DecodeRequest.TextContent(text=CAPITAL), max_tokens=20)
    expected = [i for r in stub.Decode(text_req, timeout=60) for i in r.stream_content.samples[0].token_ids]
    prompt = subprocess.run([ServerProcess.bin(), "tokenize", "--chat", CAPITAL], capture_output=True, text=True, check=True)
    ids = json.loads(prompt.stdout)
    assert decode_ids(pb, stub, ids, max_tokens=20) == expected


def test_has_bos_is_honoured(js):
    pb, stub = js
    # SmolLM2 adds no BOS, so has_bos changes nothing here; both must be accepted and agree.
    p = token_prompts(1)[0]
    assert decode_ids(pb, stub, p, has_bos=True) == decode_ids(pb, stub, p, has_bos=False)


@pytest.mark.parametrize("kwargs, code, fragment", [
    ({"max_tokens": 0, "text_content": {"text": "hi"}}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ({"max_tokens": -3, "token_content": {"token_ids": [1, 2]}}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ({"max_tokens": 5}, grpc.StatusCode.INVALID_ARGUMENT, "no content"),
    ({"max_tokens": 5, "token_content": {"token_ids": [1, 99999]}}, grpc.StatusCode.INVALID_ARGUMENT, "outside the vocabulary"),
    ({"max_tokens": 5, "token_content": {"token_ids": []}}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ({"max_tokens": 5, "token_content": {"token_ids": [300] * 200}}, grpc.StatusCode.INVALID_ARGUMENT, "prefill length"),
    ({"max_tokens": 5, "num_samples": 2, "text_content": {"text": "hi"}}, grpc.StatusCode.UNIMPLEMENTED, "num_samples"),
])
def test_decode_invalid_arguments(js, kwargs, code, fragment):
    pb, stub = js
    req = pb.DecodeRequest(**{k: (getattr(pb.DecodeRequest, "TextContent" if k == "text_content" else "TokenContent")(**v)
                                  if isinstance(v, dict) else v) for k, v in kwargs.items()})
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Decode(req, timeout=30))
    assert e.value.code() == code
    assert fragment in e.value.details()


def test_cancel_mid_stream_frees_the_slot(js, llm):
    pb, stub = js
    before = metrics(llm)[1]["contrail_requests_cancelled_total"]
    req = pb.DecodeRequest(token_content=pb.DecodeRequest.TokenContent(token_ids=token_prompts(1)[0]), max_tokens=200)
    call = stub.Decode(req, timeout=120)
    got = 0
    for _ in call:
        got += 1
        if got == 3:
            assert metrics(llm)[1]["contrail_live_slots"] == 1
            call.cancel()
            break
    assert wait_for(lambda: metrics(llm)[1]["contrail_live_slots"] == 0)
    assert wait_for(lambda: metrics(llm)[1]["contrail_requests_cancelled_total"] == before + 1)


def test_deadline_ends_the_call_and_frees_the_slot(js, llm):
    pb, stub = js
    req = pb.DecodeRequest(token_content=pb.DecodeRequest.TokenContent(token_ids=token_prompts(2)[1]), max_tokens=200)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Decode(req, timeout=0.5))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: metrics(llm)[1]["contrail_live_slots"] == 0)


def test_client_disconnect_on_http_frees_the_slot(llm):
    # A streamed /generate whose client goes away after the first chunk.
    proc = subprocess.Popen(["curl", "-s", "-N", llm.url("/generate"), "-d",
                             json.dumps({"prompt": "Tell me a very long story.", "max_tokens": 200, "stream": True})],
                            stdout=subprocess.PIPE)
    proc.stdout.readline()
    proc.kill()
    proc.wait()
    assert wait_for(lambda: metrics(llm)[1]["contrail_live_slots"] == 0)


def test_metrics_carry_jetstream_names(llm):
    text, values = metrics(llm)
    for name in ["jetstream_prefill_backlog_size", "jetstream_transfer_backlog_size", "jetstream_generate_backlog_size",
                 "jetstream_slots_used_percentage", "jetstream_time_to_first_token", "jetstream_time_per_output_token",
                 "jetstream_time_per_prefill_token", "jetstream_time_per_request", "jetstream_wait_time_per_request",
                 "jetstream_request_input_length", "jetstream_request_output_length", "jetstream_request_success_count",
                 "jetstream_model_load_time", "jetstream_server_startup_latency", "num_requests_waiting",
                 "kv_cache_utilization_perc", "contrail_requests_cancelled_total", "contrail_requests_rejected_total",
                 "contrail_generation_tokens_per_second"]:
        assert re.search(rf"^# TYPE {name}(_total)? ", text, re.M), name
    assert values["jetstream_request_success_count_total"] >= 1
    assert values["jetstream_time_to_first_token_count"] >= 1
    assert values["jetstream_model_load_time"] > 0
    assert 'model_name="SmolLM2_135M_Instruct_Q4_1_gguf"' in text


# MARK: readiness, overload, SIGTERM (their own servers)

def test_healthcheck_is_503_while_loading_then_200(stubs):
    s = ServerProcess(test_services=False, wait_ready=False)
    try:
        first = urllib_get(s, "/healthcheck")
        assert first[0] == 503 and json.loads(first[2])["response"] == {"is_live": False}
        assert post(s, "/generate", {"prompt": "hi", "max_tokens": 2})[0] == 503
        s.wait_ready()
        status, _, body = urllib_get(s, "/healthcheck")
        assert (status, json.loads(body)) == (200, {"response": {"is_live": True}})
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            assert stubs["js_grpc"].OrchestratorStub(ch).HealthCheck(stubs["js"].HealthCheckRequest(), timeout=5).is_live
    finally:
        assert s.stop() == 0


def test_overload_refuses_excess_at_once(stubs):
    s = ServerProcess(extra=["--batch-size", "1", "--max-queued", "4"], test_services=False)
    pb, pbg = stubs["js"], stubs["js_grpc"]
    prompt = token_prompts(3)[2]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            stub = pbg.OrchestratorStub(ch)
            expected = decode_ids(pb, stub, prompt, max_tokens=24)
            results = [None] * 32
            finished_at = [0.0] * 32

            def grpc_one(i):
                try:
                    results[i] = ("ok", decode_ids(pb, stub, prompt, max_tokens=24))
                except grpc.RpcError as e:
                    results[i] = (e.code(), e.details())
                finished_at[i] = time.monotonic()

            def http_one(i):
                status, headers, raw = post(s, "/generate", {"prompt": CAPITAL, "max_tokens": 24})
                results[i] = ("ok", raw) if status == 200 else (status, headers.get("Retry-After"), json.loads(raw)["detail"])
                finished_at[i] = time.monotonic()

            threads = [threading.Thread(target=grpc_one if i % 2 == 0 else http_one, args=(i,)) for i in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
        assert all(r is not None for r in results), "a request hung"
        ok = [i for i, r in enumerate(results) if r[0] == "ok"]
        refused = [i for i, r in enumerate(results) if r[0] != "ok"]
        # One slot and four queue places: at most five in the system at a time.
        assert 5 <= len(ok) < 32 and refused
        for i in refused:
            r = results[i]
            if i % 2 == 0:
                assert r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in r[1]
            else:
                assert r[0] == 503 and r[1] == "1" and "overloaded" in r[2]
        for i in ok:
            r = results[i][1]
            assert r == expected if i % 2 == 0 else json.loads(r) == {"response": "The capital of France is Paris."}
        # Refusals are immediate: each came back before the last accepted request finished.
        assert max(finished_at[i] for i in refused) < max(finished_at[i] for i in ok)
        assert metrics(s)[1]["contrail_requests_rejected_total"] == len(refused)
    finally:
        assert s.stop() == 0, s.output()


def test_sigterm_with_eight_streams_running(stubs):
    s = ServerProcess(extra=["--shutdown-grace", "60"], test_services=False)
    pb, pbg = stubs["js"], stubs["js_grpc"]
    results = [None] * 8
    started = threading.Barrier(9)

    def stream(i):
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            req = pb.DecodeRequest(token_content=pb.DecodeRequest.TokenContent(token_ids=token_prompts(8)[i]), max_tokens=48)
            n = 0
            try:
                for r in pbg.OrchestratorStub(ch).Decode(req, timeout=120):
                    n += 1
                    if n == 1:
                        started.wait()
                results[i] = ("ok", n)
            except grpc.RpcError as e:
                results[i] = (e.code(), e.details())

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait(timeout=60)
    s.proc.send_signal(signal.SIGTERM)
    # Readiness flips first: probes stop seeing 200 (503, or the listener is closed) while streams still run.
    # A probe with kubelet's habits: a short timeout, and a timeout (a closed listener's backlog) is a failure.
    def ready():
        try:
            with urllib.request.urlopen(s.url("/healthcheck"), timeout=0.2) as r:
                return r.status == 200
        except OSError:
            return False
    assert wait_for(lambda: not ready(), seconds=30)
    assert any(r is None for r in results), "readiness flipped only after every stream had finished"
    for t in threads:
        t.join(timeout=120)
    assert s.proc.wait(timeout=90) == 0, s.output()
    # Each stream either finished (OK after its last token) or ended with a clear status.
    for r in results:
        assert r is not None
        assert r[0] == "ok" or r[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), r
    assert sum(1 for r in results if r[0] == "ok") == 8
    out = s.output()
    assert "draining" in out and out.count("finish=") >= 8


def test_slow_reader_is_cut_off_without_stalling_others(stubs):
    """An HTTP/2 client that opens a tiny flow-control window and never widens it: its stream's output
    piles up in the server until --stream-buffer-bytes, then its generation is cancelled; a request
    running beside it completes normally meanwhile."""
    import socket
    import h2.config
    import h2.connection
    import h2.settings

    s = ServerProcess(extra=["--stream-buffer-bytes", "1024", "--max-cache-length", "512"], test_services=False)
    try:
        sock = socket.create_connection(("127.0.0.1", s.http_port), timeout=5)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 64})
        c.initiate_connection()
        body = json.dumps({"prompt": "Write a very long story about the sea.", "max_tokens": 400, "stream": True}).encode()
        c.send_headers(1, [(":method", "POST"), (":path", "/generate"), (":scheme", "http"), (":authority", "localhost"),
                           ("content-type", "application/json"), ("content-length", str(len(body)))])
        c.send_data(1, body, end_stream=True)
        sock.sendall(c.data_to_send())
        # Meanwhile a normal client gets its whole answer.
        out = json.loads(curl(s.url("/generate"), "-d", json.dumps({"prompt": CAPITAL, "max_tokens": 20})))
        assert out == {"response": "The capital of France is Paris."}
        # The stalled stream is given up on: cancelled, and its slot freed.
        assert wait_for(lambda: metrics(s)[1]["contrail_requests_cancelled_total"] == 1, seconds=60), s.output()
        assert wait_for(lambda: metrics(s)[1]["contrail_live_slots"] == 0)
        sock.close()
    finally:
        assert s.stop() == 0, s.output()


@pytest.mark.parametrize("mode", ["int8", "int8x2"])
def test_int8_activations_serve(stubs, mode):
    """--activations int8 (llama.cpp's scheme) and int8x2 serve the same APIs: the server says so, /generate
    answers, and tokens come back through the gRPC stream as well. int8's answer to the chat prompt is
    llama.cpp's (its server says "L'Étoile, la Marseillaise…" greedily), so its text is not pinned: the
    engine tests bound its logits. int8x2 keeps the f32 answer. Bad values are refused."""
    s = ServerProcess(extra=["--activations", mode, "--batch-size", "2", "--max-cache-length", "128"], test_services=False)
    try:
        assert f"matrix products read {mode} activations" in s.output(), s.output()
        status, _, raw = post(s, "/generate", {"prompt": CAPITAL, "max_tokens": 12})
        assert status == 200 and json.loads(raw)["response"].strip(), raw
        if mode == "int8x2":
            assert json.loads(raw)["response"] == "The capital of France is Paris.", raw
        channel = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}")
        try:
            ids = decode_ids(stubs["js"], stubs["js_grpc"].OrchestratorStub(channel), [504, 3575, 282, 4649, 314], max_tokens=8)
            assert len(ids) == 8
        finally:
            channel.close()
    finally:
        assert s.stop() == 0, s.output()
    for args, message in [(["--activations", "int4"], "--activations"),
                          (["--backend", "pjrt", "--activations", "int8"], "--activations int8 is for the CPU backend")]:
        r = subprocess.run([BIN, "serve", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and message in r.stderr, r.stderr
