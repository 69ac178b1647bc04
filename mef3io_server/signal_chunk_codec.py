"""``SignalChunk`` answers read without copying their samples.

A 10 s x 64 channel answer is 655 KB of float32. The generated parser
(``SignalChunk.FromString``) copies ``array_bytes`` out of the message gRPC
hands over into a new buffer; with two such buffers made and freed per read
the process gave memory back to the system and faulted it in again on every
read. Reading the bare transport on this project's 2-core VM, client CPU
per warm read went from 1.28 ms (325 page faults) to 0.60-0.71 ms (11-29)
with this module (benchmarks/decisions.md).

:func:`decode` finds ``array_bytes`` (field 2) in the wire bytes itself and
leaves it where it is: :attr:`SignalChunkView.array_bytes` is a memoryview
of the received message; every other field is parsed by the generated code
from the few bytes left. The result reads like a ``SignalChunk`` for
:class:`mef3io_server.messages.SignalAssembler`. Messages from any writer are
read (fields in any order, unknown fields, a repeated field 2: the last one
wins, as in protobuf).
"""
from __future__ import annotations

from .protobuf_encoding import FIXED32 as _FIXED32
from .protobuf_encoding import FIXED64 as _FIXED64
from .protobuf_encoding import LEN as _LEN
from .protobuf_encoding import VARINT as _VARINT
from .protobuf_encoding import read_varint
from .protobufs import gRPCMef3Server_pb2 as pb2
_ARRAY_BYTES = 2          # SignalChunk.array_bytes


class SignalChunkView:
    """A parsed ``SignalChunk`` whose ``array_bytes`` is a read-only memoryview
    into the received message (the message stays alive as long as it does)."""

    __slots__ = ("_msg", "array_bytes")

    def __init__(self, msg: pb2.SignalChunk, array_bytes: memoryview):
        self._msg = msg
        self.array_bytes = array_bytes

    def HasField(self, name: str) -> bool:  # noqa: N802 - the protobuf method's name
        return self._msg.HasField(name)

    def __getattr__(self, name: str):
        return getattr(self._msg, name)


def decode(data: bytes) -> SignalChunkView:
    """``SignalChunk`` wire bytes as a :class:`SignalChunkView` (samples not copied).

    Raises ``ValueError`` on a truncated or malformed message.
    """
    buf = memoryview(data)
    size = len(buf)
    rest = []                 # (start, end) of every field but array_bytes
    array = buf[0:0]
    i = 0
    while i < size:
        start = i
        key = buf[i]          # keys and lengths are mostly one byte: read inline
        i += 1
        if key >= 0x80:
            key, i = read_varint(buf, start)
        number, wt = key >> 3, key & 7
        if wt == _LEN:
            if i < size and buf[i] < 0x80:
                n = buf[i]
                i += 1
            else:
                n, i = read_varint(buf, i)
            if i + n > size:
                raise ValueError("truncated SignalChunk")
            if number == _ARRAY_BYTES:
                array = buf[i:i + n]
                i += n
                continue
            i += n
        elif wt == _VARINT:
            _, i = read_varint(buf, i)
        elif wt == _FIXED64:
            i += 8
        elif wt == _FIXED32:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt} in a SignalChunk")
        if i > size:
            raise ValueError("truncated SignalChunk")
        if rest and rest[-1][1] == start:
            rest[-1] = (rest[-1][0], i)           # contiguous with the previous field
        else:
            rest.append((start, i))
    head = b"".join(buf[a:b] for a, b in rest)
    return SignalChunkView(pb2.SignalChunk.FromString(head), array)
