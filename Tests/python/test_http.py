"""HTTP/1.1, h2c and TLS against a real server with real clients (curl, nghttp, h2load, wrk) and raw sockets."""
import json
import re
import socket
import subprocess
import time


def curl(*args):
    r = subprocess.run(["curl", "-s", "-S", "--max-time", "10", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_healthcheck_every_protocol_every_port(server):
    for port in (server.http_port, server.grpc_port):
        for flags in ([], ["--http2-prior-knowledge"], ["--http2"]):
            out = curl("-i", *flags, f"http://127.0.0.1:{port}/healthcheck")
            assert json.loads(out.replace("\r\n", "\n").split("\n\n")[-1]) == {"response": {"is_live": True}}, out
        for flags in (["--http2"], ["--http1.1"]):
            out = curl("-ik", *flags, f"https://127.0.0.1:{port}/healthcheck")
            assert out.startswith("HTTP/2 200" if "--http2" in flags else "HTTP/1.1 200"), out


def test_tls_refuses_old_versions(server):
    r = subprocess.run(["curl", "-sk", "--tls-max", "1.1", f"https://127.0.0.1:{server.http_port}/healthcheck"],
                       capture_output=True)
    assert r.returncode != 0


def test_not_found_and_method_not_allowed(server):
    out = curl("-i", server.url("/nope"))
    assert out.startswith("HTTP/1.1 404") and '"detail"' in out
    out = curl("-i", "-X", "DELETE", server.url("/healthcheck"))
    assert out.startswith("HTTP/1.1 405") and "allow: get" in out.lower()


def test_head_has_no_body(server):
    out = curl("-I", server.url("/healthcheck"))
    assert out.startswith("HTTP/1.1 200") and "content-length: 29" in out


def test_nghttp(server):
    r = subprocess.run(["nghttp", "-nv", server.url("/healthcheck", server.grpc_port)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and ":status: 200" in r.stdout
    r = subprocess.run(["nghttp", "-nvu", server.url("/healthcheck")], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "HTTP Upgrade success" in r.stdout and ":status: 200" in r.stdout


def test_h2load_many_streams(server):
    r = subprocess.run(["h2load", "-n", "4000", "-c", "8", "-m", "32", server.url("/healthcheck")],
                       capture_output=True, text=True, timeout=60)
    assert "4000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout


def test_wrk_keepalive(server):
    r = subprocess.run(["wrk", "-t1", "-c32", "-d1s", server.url("/healthcheck")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Requests/sec" in r.stdout
    assert "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout, r.stdout


def raw(server, data, read_until_close=True, timeout=5):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout)
    s.sendall(data)
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
    except socket.timeout:
        pass
    s.close()
    return b"".join(chunks)


def test_pipelining_in_order(server):
    req = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(server, req)
    statuses = re.findall(rb"HTTP/1.1 (\d{3})", out)
    assert statuses == [b"200", b"404", b"200"], out
    assert out.count(b"connection: close") == 1


def test_chunked_request_and_expect_continue(server):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    s.sendall(b"POST /healthcheck HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"4\r\nbody\r\n0\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 405")  # the route exists for GET only
    s.close()


def test_malformed_requests_get_status_and_close(server):
    cases = {
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n": b"400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n": b"400",
        b"GET / HTTP/3.0\r\nHost: a\r\n\r\n": b"505",
        b"POST / HTTP/1.0\r\n\r\n": b"411",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n": b"413",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: a\r\n\r\n": b"414",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 20000 + b"\r\n\r\n": b"431",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n": b"501",
    }
    for req, status in cases.items():
        out = raw(server, req)
        assert out.startswith(b"HTTP/1.1 " + status), (req[:60], out[:200])
        assert b"connection: close" in out and b'"detail"' in out
    assert server.alive()


def test_slowloris_header_timeout(server):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: a\r\n")
    start = time.time()
    out = s.recv(4096)
    assert out.startswith(b"HTTP/1.1 408"), out
    assert s.recv(10) == b""  # closed
    assert time.time() - start < 4
    s.close()


def test_idle_keepalive_timeout(server):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: a\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    start = time.time()
    assert s.recv(10) == b""  # the server closes the idle connection (--idle-timeout 3)
    assert 2 < time.time() - start < 8
    s.close()


def test_garbage_and_half_requests_do_not_hurt(server):
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
        raw(server, junk, timeout=3)
    assert server.alive()


def test_streamed_response_chunked_and_h2(server):
    out = curl("-i", "--http1.1", server.url("/test/stream?n=5&size=3"))
    assert "transfer-encoding: chunked" in out.lower()
    assert out.replace("\r\n", "\n").split("\n\n", 1)[1] == "aaabbbcccdddeee"
    body = curl("--http2-prior-knowledge", server.url("/test/stream?n=100&size=1000"))
    assert len(body) == 100_000
    # HTTP/1.0 has no chunked coding: the body ends when the connection closes.
    out = raw(server, b"GET /test/stream?n=3&size=2 HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"aabbcc") and b"connection: close" in out


def test_slow_reader_gets_backpressure_without_stalling_others(server):
    def stats():
        return json.loads(curl(server.url("/test/stats")))
    before = stats()
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /test/stream?n=400&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")  # 26 MB, never read
    deadline = time.time() + 10
    while stats()["pushback"] == before["pushback"] and time.time() < deadline:
        time.sleep(0.1)
    assert stats()["pushback"] > before["pushback"]
    # Other clients are served normally meanwhile.
    assert json.loads(curl(server.url("/healthcheck"))) == {"response": {"is_live": True}}
    s.close()
    # The abandoned stream is cancelled (reset on close), not left running.
    deadline = time.time() + 10
    while stats()["cancelled"] == before["cancelled"] and time.time() < deadline:
        time.sleep(0.1)
    assert stats()["cancelled"] > before["cancelled"]
