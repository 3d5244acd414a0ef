"""gRPC with the official grpcio client: JetStream HealthCheck, server streaming, cancellation,
deadlines, unknown methods, message limits, TLS."""
import json
import time
import urllib.request

import grpc
import pytest


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


def stats(server):
    with urllib.request.urlopen(server.url("/test/stats"), timeout=5) as r:
        return json.loads(r.read())


def test_jetstream_healthcheck(server, stubs, channel):
    stub = stubs["js_grpc"].OrchestratorStub(channel)
    reply = stub.HealthCheck(stubs["js"].HealthCheckRequest(), timeout=5)
    assert reply.is_live is True
    # Both ports serve gRPC.
    with grpc.insecure_channel(f"127.0.0.1:{server.http_port}") as ch:
        assert stubs["js_grpc"].OrchestratorStub(ch).HealthCheck(stubs["js"].HealthCheckRequest(), timeout=5).is_live


def test_server_streaming(stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    replies = list(stub.Stream(stubs["test"].StreamRequest(count=50, payload_bytes=100), timeout=10))
    assert [r.index for r in replies] == list(range(50))
    assert all(len(r.payload) == 100 for r in replies)


def test_large_stream_with_flow_control(stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    total = sum(len(r.payload) for r in stub.Stream(stubs["test"].StreamRequest(count=200, payload_bytes=32768), timeout=30))
    assert total == 200 * 32768


def test_cancel_reaches_the_handler(server, stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    before = stats(server)["cancelled"]
    call = stub.Stream(stubs["test"].StreamRequest(count=1000, interval_ms=10), timeout=30)
    got = 0
    for _ in call:
        got += 1
        if got == 5:
            call.cancel()
            break
    deadline = time.time() + 5
    while stats(server)["cancelled"] == before and time.time() < deadline:
        time.sleep(0.05)
    assert stats(server)["cancelled"] == before + 1


def test_deadline_exceeded(server, stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    before = stats(server)["cancelled"]
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Stream(stubs["test"].StreamRequest(count=100, interval_ms=50), timeout=0.5))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The handler saw the deadline as cancellation.
    deadline = time.time() + 5
    while stats(server)["cancelled"] == before and time.time() < deadline:
        time.sleep(0.05)
    assert stats(server)["cancelled"] > before


def test_unknown_method_and_service(stubs, channel):
    bogus = channel.unary_unary("/jetstream_proto.Orchestrator/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as e:
        bogus(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "NoSuchMethod" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/no.Such/Service")(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_oversized_message(stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    assert stub.Echo(stubs["test"].EchoMessage(payload=b"a" * 1000), timeout=5).payload == b"a" * 1000
    with pytest.raises(grpc.RpcError) as e:
        stub.Echo(stubs["test"].EchoMessage(payload=b"a" * 100_000), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_compressed_request_is_unimplemented(stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Echo(stubs["test"].EchoMessage(payload=b"x" * 100), timeout=5, compression=grpc.Compression.Gzip)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_malformed_request_message(channel):
    call = channel.unary_unary("/jetstream_proto.Orchestrator/HealthCheck")
    with pytest.raises(grpc.RpcError) as e:
        call(b"\x0a\xff\xff", timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tls_channel(server, certs, stubs):
    with open(certs[0], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", creds) as ch:
        assert stubs["js_grpc"].OrchestratorStub(ch).HealthCheck(stubs["js"].HealthCheckRequest(), timeout=5).is_live
        replies = list(stubs["test_grpc"].TestStub(ch).Stream(stubs["test"].StreamRequest(count=10), timeout=5))
        assert len(replies) == 10


def test_many_concurrent_calls(stubs, channel):
    stub = stubs["test_grpc"].TestStub(channel)
    futures = [stub.Echo.future(stubs["test"].EchoMessage(payload=bytes([i])), timeout=10) for i in range(100)]
    assert [f.result().payload for f in futures] == [bytes([i]) for i in range(100)]
