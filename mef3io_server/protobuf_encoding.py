"""Protobuf wire-format primitives shared by the hand-written codecs.

The codecs that read and write messages straight from NumPy arrays
(:mod:`.envelope_codec`, :mod:`.signal_chunk_codec`, and the server's
``SignalChunkEncoder``) need the same few pieces of the encoding: wire types,
varints and field keys (https://protobuf.dev/programming-guides/encoding/).
"""
from __future__ import annotations

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5     # wire types


def varint_bytes(value: int) -> bytes:
    """The varint of ``value`` (a negative int as its 10-byte two's complement)."""
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    """The key (tag) of field ``number`` with ``wire_type``."""
    return varint_bytes((number << 3) | wire_type)


def read_varint(buf: memoryview, i: int) -> tuple[int, int]:
    """The varint at ``buf[i]``: ``(value, index after it)``; ValueError if
    truncated or longer than 10 bytes."""
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated message")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
