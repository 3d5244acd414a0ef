"""Malformed HTTP/2 from the pure-Python `h2` state machine over a raw socket: the server answers each
abuse with the right error and keeps serving."""
import socket

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import HeadersFrame, WindowUpdateFrame, DataFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect(server):
    s = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5)
    return s


def read_frames(s, limit=64):
    """Reads frames until the connection closes or goes quiet; returns (type name, flags, stream, payload)."""
    data = b""
    try:
        while len(data) < 1 << 20:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except socket.timeout:
        pass
    frames = []
    i = 0
    while i + 9 <= len(data) and len(frames) < limit:
        length = int.from_bytes(data[i:i + 3], "big")
        ftype, flags = data[i + 3], data[i + 4]
        stream = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        frames.append((ftype, flags, stream, data[i + 9:i + 9 + length]))
        i += 9 + length
    return frames


GOAWAY, RST = 0x7, 0x3


def error_code(payload, ftype):
    return int.from_bytes(payload[4:8] if ftype == GOAWAY else payload[0:4], "big")


def client(server):
    s = connect(server)
    s.settimeout(1.5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def test_bad_preface_closes(server):
    s = connect(server)
    s.settimeout(2)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[:20] + b"XXXX" + b"\x00" * 20)
    # Not an h2 preface: read as an HTTP/1.1 request line "PRI * HTTP/2.0", refused, and closed.
    out = s.recv(4096)
    assert out.startswith(b"HTTP/1.1 505") and b"connection: close" in out, out
    s.close()
    assert server.alive()


def test_garbage_after_preface_gets_goaway(server):
    s = connect(server)
    s.settimeout(2)
    s.sendall(PREFACE + b"\x00\x00\x04\x09\x00\x00\x00\x00\x00garbage-frame")  # CONTINUATION without HEADERS
    frames = read_frames(s)
    goaways = [f for f in frames if f[0] == GOAWAY]
    assert goaways and error_code(goaways[0][3], GOAWAY) == 0x1  # PROTOCOL_ERROR
    s.close()
    assert server.alive()


def test_data_on_closed_stream(server):
    s, c = client(server)
    c.send_headers(1, [(":method", "GET"), (":path", "/healthcheck"), (":scheme", "http"), (":authority", "x")], end_stream=True)
    s.sendall(c.data_to_send())
    read_frames(s)
    # DATA on the finished stream 1: STREAM_CLOSED.
    s.sendall(DataFrame(1, b"late", flags=["END_STREAM"]).serialize())
    frames = read_frames(s)
    codes = [error_code(p, t) for t, _, _, p in frames if t in (GOAWAY, RST)]
    assert codes and codes[0] == 0x5, frames  # STREAM_CLOSED
    s.close()
    assert server.alive()


def test_oversized_headers_reset_the_stream(server):
    s, c = client(server)
    c.send_headers(1, [(":method", "GET"), (":path", "/healthcheck"), (":scheme", "http"), (":authority", "x"),
                       ("x-big", "v" * 30000)], end_stream=True)
    s.sendall(c.data_to_send())
    frames = read_frames(s)
    assert any(t in (RST, GOAWAY) for t, _, _, _ in frames), frames
    statuses = [p for t, _, sid, p in frames if t == 0x1 and sid == 1]
    assert not statuses  # no response for the oversized request
    s.close()
    assert server.alive()


def test_flow_control_abuse(server):
    s, c = client(server)
    # WINDOW_UPDATE that overflows the connection window beyond 2^31-1: FLOW_CONTROL_ERROR.
    s.sendall(WindowUpdateFrame(0, window_increment=0x7FFFFFFF).serialize() * 2)
    frames = read_frames(s)
    goaways = [f for f in frames if f[0] == GOAWAY]
    assert goaways and error_code(goaways[0][3], GOAWAY) == 0x3, frames  # FLOW_CONTROL_ERROR
    s.close()
    # A stream-level window pushed past 2^31-1: that stream is reset with FLOW_CONTROL_ERROR.
    s, c = client(server)
    c.send_headers(1, [(":method", "POST"), (":path", "/healthcheck"), (":scheme", "http"), (":authority", "x")])
    s.sendall(c.data_to_send())
    s.sendall(WindowUpdateFrame(1, window_increment=0x7FFFFFFF).serialize())
    frames = read_frames(s)
    assert any(t == RST and sid == 1 and error_code(p, t) == 0x3 for t, _, sid, p in frames), frames
    s.close()
    # A DATA frame larger than SETTINGS_MAX_FRAME_SIZE (16384): FRAME_SIZE_ERROR.
    s, c = client(server)
    c.send_headers(1, [(":method", "POST"), (":path", "/healthcheck"), (":scheme", "http"), (":authority", "x")])
    s.sendall(c.data_to_send())
    big = DataFrame(1, b"x" * 20000)
    s.sendall(big.serialize())
    frames = read_frames(s)
    assert any(t == GOAWAY and error_code(p, t) == 0x6 for t, _, _, p in frames), frames
    s.close()
    assert server.alive()


def test_many_concurrent_streams_then_normal_use(server):
    s, c = client(server)
    for i in range(1, 200, 2):
        c.send_headers(i, [(":method", "GET"), (":path", "/healthcheck"), (":scheme", "http"), (":authority", "x")], end_stream=True)
    s.sendall(c.data_to_send())
    got = 0
    s.settimeout(3)
    while got < 100:
        b = s.recv(65536)
        if not b:
            break
        for e in c.receive_data(b):
            if isinstance(e, h2.events.StreamEnded):
                got += 1
        s.sendall(c.data_to_send())
    assert got == 100
    s.close()
    assert server.alive()
