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
#: Fields that differ from chunk to chunk of one read (array_bytes, shape,
#: start_uutc, end_uutc, sample_offset, padding, group, channel_index,
#: error_message): the bytes before the first of them are the read's *head*.
_PER_CHUNK = frozenset({2, 4, 5, 6, 21, 22, 23, 24, 99})
#: A head this long or longer is remembered (see :func:`decode`).
_HEAD_MIN_BYTES = 256
#: The last head remembered, bytes (one reference: read and replaced whole).
_last_head = b""


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

    The fields every chunk of a read repeats (file, rate, channel names: 1024
    names are ~10 KB) are walked here once: when a message starts with the
    same head bytes as the last one walked (:data:`_PER_CHUNK`), the walk
    starts after them (the generated parser still reads them, in C).

    Raises ``ValueError`` on a truncated or malformed message.
    """
    global _last_head
    buf = memoryview(data)
    size = len(buf)
    rest = []                 # (start, end) of every field but array_bytes
    array = buf[0:0]
    i = 0
    head = _last_head
    head_end = -1             # where the first per-chunk field starts (-1: not yet)
    if head and size > len(head) and buf[:len(head)] == head:
        i = head_end = len(head)
        rest.append((0, i))
    while i < size:
        start = i
        key = buf[i]          # keys and lengths are mostly one byte: read inline
        i += 1
        if key >= 0x80:
            key, i = read_varint(buf, start)
        number, wt = key >> 3, key & 7
        if head_end < 0 and number in _PER_CHUNK:
            head_end = start
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
    if head_end >= _HEAD_MIN_BYTES and head_end != len(head):
        _last_head = bytes(buf[:head_end])
    fields = b"".join(buf[a:b] for a, b in rest)
    return SignalChunkView(pb2.SignalChunk.FromString(fields), array)
