"""``ChannelEnvelope`` messages encoded and decoded straight from NumPy arrays.

A day of 64 channels is half a million envelope rows; going through Python
lists and the protobuf runtime costs hundreds of milliseconds on each side
(``.tolist()``, building and serialising repeated fields, then iterating them
back into arrays). This module writes and reads the same protobuf wire bytes
with vectorised NumPy: packed ``int64`` fields as varints, packed ``double``
fields as little-endian float64. The bytes are valid ``ChannelEnvelope``
messages for any protobuf reader (see docs/protocol.md for the field numbers), and
:func:`decode` also reads messages from other writers (unpacked repeated
fields included).

Field numbers: file_path = 1, channel_name = 2, start_uutc = 3, end_uutc = 4,
min = 5, max = 6, error_message = 99.
"""
from __future__ import annotations

import numpy as np

from .protobuf_encoding import FIXED32 as _FIXED32
from .protobuf_encoding import FIXED64 as _FIXED64
from .protobuf_encoding import LEN as _LEN
from .protobuf_encoding import VARINT as _VARINT
from .protobuf_encoding import field_key as _field
from .protobuf_encoding import read_varint
from .protobuf_encoding import varint_bytes as _varint_bytes


def encode_varints(values: np.ndarray) -> bytes:
    """Varint bytes of int64 ``values`` (negative ones as 10-byte two's complement)."""
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    if u.size == 0:
        return b""
    lo_len, hi_len = (max(1, (int(v).bit_length() + 6) // 7) for v in (u.min(), u.max()))
    if lo_len == hi_len == 8:
        return _spread8(u).tobytes()
    if lo_len == hi_len:
        # The usual case (times of one recording): every value takes as many bytes.
        shifts = np.arange(hi_len, dtype=np.uint64) * np.uint64(7)
        groups = ((u[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
        groups[:, :-1] |= 0x80
        return groups.tobytes()
    # Bytes per value: 1 + (bits above the first 7) / 7, rounded up.
    lens = np.ones(u.size, dtype=np.int64)
    for k in range(1, 10):
        lens += u >= np.uint64(1 << (7 * k))
    L = int(lens.max())
    shifts = np.arange(L, dtype=np.uint64) * np.uint64(7)
    groups = ((u[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    cont = np.arange(L)[None, :] < (lens - 1)[:, None]
    groups[cont] |= 0x80
    if int(lens.min()) == L:          # the usual case: every time has as many bytes
        return groups.tobytes()
    return groups[np.arange(L)[None, :] < lens[:, None]].tobytes()


# 8-byte varints (values of 50 to 56 bits: every uUTC time from 1970 + 35 years
# to 2540) as whole 64-bit words: the eight 7-bit groups are moved together
# (or apart) in three mask-and-shift steps over the array, instead of one pass
# per byte. Little-endian words: byte k of the varint is bits 8k..8k+7.

def _gather8(words: np.ndarray) -> np.ndarray:
    """Values of 8-byte varints given as little-endian uint64 words."""
    x = words & np.uint64(0x7F7F7F7F7F7F7F7F)
    x = (x & np.uint64(0x007F007F007F007F)) | ((x & np.uint64(0x7F007F007F007F00)) >> np.uint64(1))
    x = (x & np.uint64(0x00003FFF00003FFF)) | ((x & np.uint64(0x3FFF00003FFF0000)) >> np.uint64(2))
    return (x & np.uint64(0x000000000FFFFFFF)) | ((x & np.uint64(0x0FFFFFFF00000000))
                                                 >> np.uint64(4))


def _spread8(u: np.ndarray) -> np.ndarray:
    """Little-endian uint64 words holding the 8-byte varints of ``u`` (< 2**56)."""
    x = (u & np.uint64(0x000000000FFFFFFF)) | ((u & np.uint64(0x00FFFFFFF0000000))
                                               << np.uint64(4))
    x = (x & np.uint64(0x00003FFF00003FFF)) | ((x & np.uint64(0x0FFFC0000FFFC000)) << np.uint64(2))
    x = (x & np.uint64(0x007F007F007F007F)) | ((x & np.uint64(0x3F803F803F803F80)) << np.uint64(1))
    return (x | np.uint64(0x0080808080808080)).astype("<u8", copy=False)


def decode_varints(buf) -> np.ndarray:
    """int64 values of a run of varints (the payload of a packed int64 field)."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    if b.size % 8 == 0:
        # Every value 8 bytes long (uUTC times): continuation bits set on bytes
        # 0-6 of each word and clear on byte 7, checked in one pass.
        w = b.view("<u8")
        if ((w & np.uint64(0x8080808080808080)) == np.uint64(0x0080808080808080)).all():
            return _gather8(w).view(np.int64)
    ends = np.flatnonzero(b < 0x80)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise ValueError("truncated varint in a packed field")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lens = ends - starts + 1
    if lens.max() > 10:
        raise ValueError("varint longer than 10 bytes")
    L = int(lens.max())
    if int(lens.min()) == L:          # the usual case: every time has as many bytes
        g = (b.reshape(-1, L) & 0x7F).astype(np.uint64)
        return (g << (np.arange(L, dtype=np.uint64) * np.uint64(7))).sum(
            axis=1, dtype=np.uint64).view(np.int64)
    vals = np.zeros(ends.size, dtype=np.uint64)
    for k in range(L):
        sel = lens > k
        vals[sel] |= (b[starts[sel] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    return vals.view(np.int64)


def _len_field(number: int, payload: bytes) -> bytes:
    if not payload:
        return b""                                   # proto3 leaves empty fields out
    return _field(number, _LEN) + _varint_bytes(len(payload)) + payload


def encode(file_path: str, channel_name: str, start_uutc=(), end_uutc=(), mins=(), maxs=(),
           error_message: str = "") -> bytes:
    """One ``ChannelEnvelope`` message as wire bytes."""
    parts = [
        _len_field(1, file_path.encode()),
        _len_field(2, channel_name.encode()),
        _len_field(3, encode_varints(np.asarray(start_uutc, dtype=np.int64))),
        _len_field(4, encode_varints(np.asarray(end_uutc, dtype=np.int64))),
        _len_field(5, np.ascontiguousarray(mins, dtype="<f8").tobytes()),
        _len_field(6, np.ascontiguousarray(maxs, dtype="<f8").tobytes()),
    ]
    if error_message:
        # error_message is proto3 `optional`: present even when set to "".
        payload = error_message.encode()
        parts.append(_field(99, _LEN) + _varint_bytes(len(payload)) + payload)
    return b"".join(parts)


def decode(data: bytes) -> dict:
    """A ``ChannelEnvelope``'s wire bytes as ``{"file_path", "channel_name",
    "start_uutc", "end_uutc", "min", "max", "error_message"}`` (NumPy arrays)."""
    buf = memoryview(data)
    out = {"file_path": "", "channel_name": "", "error_message": ""}
    ints = {3: [], 4: []}
    floats = {5: [], 6: []}
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wt = key >> 3, key & 7
        if wt == _LEN:
            n, i = read_varint(buf, i)
            payload = buf[i:i + n]
            if len(payload) != n:
                raise ValueError("truncated message")
            i += n
            if number == 1:
                out["file_path"] = bytes(payload).decode()
            elif number == 2:
                out["channel_name"] = bytes(payload).decode()
            elif number == 99:
                out["error_message"] = bytes(payload).decode()
            elif number in ints:
                ints[number].append(decode_varints(payload))
            elif number in floats:
                floats[number].append(np.frombuffer(payload, dtype="<f8"))
        elif wt == _VARINT:
            v, i = read_varint(buf, i)
            if number in ints:                      # an unpacked repeated int64
                ints[number].append(np.array([v], dtype=np.uint64).view(np.int64))
        elif wt == _FIXED64:
            if number in floats:                    # an unpacked repeated double
                floats[number].append(np.frombuffer(buf[i:i + 8], dtype="<f8"))
            i += 8
        elif wt == _FIXED32:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt} in a ChannelEnvelope")

    def join(parts, dtype):
        if not parts:
            return np.zeros(0, dtype=dtype)
        return np.concatenate(parts).astype(dtype, copy=False) if len(parts) > 1 \
            else np.array(parts[0], dtype=dtype)

    out["start_uutc"] = join(ints[3], np.int64)
    out["end_uutc"] = join(ints[4], np.int64)
    out["min"] = join(floats[5], np.float64)
    out["max"] = join(floats[6], np.float64)
    return out
