"""The bytes HAProxy sends to ask a replica's gRPC health service (``grpc.health.v1``).

HAProxy 2.6 (Debian bookworm) cannot send a gRPC request body from
``http-check`` (a body of NUL bytes does not parse), so ``haproxy.cfg`` asks
over a raw ``tcp-check``: an HTTP/2 connection preface, an empty SETTINGS
frame, one HEADERS frame (``POST /grpc.health.v1.Health/Check``, HPACK
literals without Huffman coding) and one DATA frame holding the gRPC message
``HealthCheckRequest(service="")`` (5 bytes: not compressed, length 0).
A SERVING answer holds the gRPC message ``08 01`` (``status: SERVING``),
framed as ``00 00000002 0801``: ``tcp-check expect binary`` looks for it.

``python deploy/haproxy/grpc_health_check.py`` prints the hex for
``tcp-check send-binary``; the tests check that haproxy.cfg holds it.
"""
from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: What a SERVING answer's DATA frame holds (gRPC framing + HealthCheckResponse{status: 1}).
SERVING = bytes.fromhex("00000000020801")


def _frame(kind: int, flags: int, payload: bytes, stream: int) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") \
        + payload


def _literal(name, value: str) -> bytes:
    """An HPACK literal header field without indexing (name by static index, or new)."""
    v = value.encode("ascii")
    assert len(v) < 127
    if isinstance(name, int):                   # static table index of the name
        head = bytes([name]) if name < 15 else bytes([0x0F, name - 15])
    else:
        n = name.encode("ascii")
        head = b"\x00" + bytes([len(n)]) + n
    return head + bytes([len(v)]) + v


def request(service: str = "", authority: str = "localhost") -> bytes:
    """One grpc.health.v1.Health/Check call on a new HTTP/2 connection."""
    svc = service.encode("utf-8")
    message = (b"\x0a" + bytes([len(svc)]) + svc) if svc else b""
    headers = (b"\x83"                          # :method POST (static index 3)
               + b"\x86"                        # :scheme http (static index 6)
               + _literal(4, "/grpc.health.v1.Health/Check")    # :path
               + _literal(1, authority)                         # :authority
               + _literal(31, "application/grpc")               # content-type
               + _literal("te", "trailers"))
    return (PREFACE
            + _frame(0x4, 0x0, b"", 0)                          # SETTINGS (defaults)
            + _frame(0x1, 0x4, headers, 1)                      # HEADERS, END_HEADERS
            + _frame(0x0, 0x1, b"\x00" + len(message).to_bytes(4, "big") + message, 1))
    #                                                           # DATA, END_STREAM


if __name__ == "__main__":
    print(request().hex())
