"""SIGTERM: readiness flips, in-flight streams finish, new connections are refused, exit status 0."""
import signal
import socket
import threading
import time

import grpc

from conftest import ServerProcess


def test_sigterm_drains_in_flight_streams(stubs):
    s = ServerProcess(extra=["--shutdown-grace", "10"])
    results = {}

    def stream():
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            stub = stubs["test_grpc"].TestStub(ch)
            results["n"] = len(list(stub.Stream(stubs["test"].StreamRequest(count=20, interval_ms=50), timeout=20)))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=20)
    assert results.get("n") == 20
    assert s.proc.wait(timeout=20) == 0, s.output()
    assert "draining" in s.output()
    try:
        socket.create_connection(("127.0.0.1", s.http_port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    assert refused


def test_sigterm_grace_deadline_cuts_long_streams(stubs):
    s = ServerProcess(extra=["--shutdown-grace", "1"])
    errors = []

    def stream():
        try:
            with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
                list(stubs["test_grpc"].TestStub(ch).Stream(stubs["test"].StreamRequest(count=1000, interval_ms=20), timeout=30))
        except grpc.RpcError as e:
            errors.append(e.code())

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.3)
    start = time.time()
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=15) == 0
    assert time.time() - start < 6
    t.join(timeout=10)
    assert errors and errors[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)
