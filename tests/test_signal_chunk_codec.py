"""signal_chunk_codec: SignalChunk answers read in place, from any writer."""
from __future__ import annotations

import numpy as np
import pytest

from mef3io_server import signal_chunk_codec as scc
from mef3io_server.protobuf_encoding import read_varint
from mef3io_server import messages
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.server.service import SignalChunkEncoder, serialize_signal_chunk

NAMES = [f"ch{i}" for i in range(5)]


def _rows(n=7, seed=0):
    rows = np.random.default_rng(seed).standard_normal((len(NAMES), n)).astype(np.float32)
    rows[0, 0] = np.nan
    return rows


def _same_fields(view, msg):
    for f in ("file_path", "dtype", "start_uutc", "end_uutc", "fs", "error_message"):
        assert getattr(view, f) == getattr(msg, f), f
    assert list(view.shape) == list(msg.shape)
    assert list(view.channel_names) == list(msg.channel_names)
    for f in ("total_samples", "sample_offset", "error_message"):
        assert view.HasField(f) == msg.HasField(f), f
    assert bytes(view.array_bytes) == msg.array_bytes


def test_this_servers_chunks_are_read_in_place_and_aligned():
    rows = _rows()
    data = serialize_signal_chunk(
        SignalChunkEncoder("/d/x.mefd", NAMES, 256.0, 7).encode(rows, 10, 20, 0))
    view = scc.decode(data)
    _same_fields(view, pb2.SignalChunk.FromString(data))
    arr = np.frombuffer(view.array_bytes, dtype=np.float32)
    assert arr.flags.aligned and not arr.flags.owndata
    assert np.shares_memory(arr, np.frombuffer(data, np.uint8))     # not a copy
    asm = messages.SignalAssembler()
    assert asm.feed(view)
    got = asm.result()["array"]
    assert np.shares_memory(got, arr) and np.array_equal(got, rows, equal_nan=True)


@pytest.mark.parametrize("path", ["/x.mefd", "/data/some/longer/path.mefd", ""])
def test_messages_of_the_generated_code_in_any_field_order_read_the_same(path):
    rows = _rows(9, 1)
    msg = pb2.SignalChunk(file_path=path, array_bytes=rows.tobytes(), dtype="float32",
                          shape=rows.shape, start_uutc=-5, end_uutc=2**40, fs=2048.5,
                          channel_names=NAMES, total_samples=9, sample_offset=0)
    data = msg.SerializeToString()
    _same_fields(scc.decode(data), msg)
    # reversed field order, and an unknown field of each wire type in between
    fields = []
    i = 0
    buf = memoryview(data)
    while i < len(buf):
        start = i
        key, i = read_varint(buf, i)
        if key & 7 == 2:
            n, i = read_varint(buf, i)
            i += n
        elif key & 7 == 0:
            _, i = read_varint(buf, i)
        else:
            i += 8
        fields.append(bytes(buf[start:i]))
    unknown = [bytes([(10 << 3) | 0, 0x96, 0x01]), bytes([(11 << 3) | 1]) + bytes(8),
               bytes([(12 << 3) | 5]) + bytes(4), bytes([(13 << 3) | 2, 2, 1, 2])]
    shuffled = b"".join(f + unknown[j % 4] for j, f in enumerate(reversed(fields)))
    _same_fields(scc.decode(shuffled), pb2.SignalChunk.FromString(shuffled))
    # the samples at an odd offset: the assembler copies them into an aligned array
    for prefix in (bytes([(10 << 3) | 0, 1]), bytes([(10 << 3) | 0, 0x96, 0x01])):
        odd = scc.decode(prefix + data)
        if not np.frombuffer(odd.array_bytes, np.float32).flags.aligned:
            break
    assert not np.frombuffer(odd.array_bytes, np.float32).flags.aligned
    asm = messages.SignalAssembler()
    asm.feed(odd)
    got = asm.result()["array"]
    assert got.flags.aligned and np.array_equal(got, rows, equal_nan=True)


def test_an_error_chunk_a_repeated_array_field_and_an_empty_array():
    err = pb2.SignalChunk(file_path="p", error_message="boom").SerializeToString()
    view = scc.decode(err)
    assert view.error_message == "boom" and view.HasField("error_message")
    assert bytes(view.array_bytes) == b""
    twice = (pb2.SignalChunk(array_bytes=b"first").SerializeToString()
             + pb2.SignalChunk(array_bytes=b"last").SerializeToString())
    assert bytes(scc.decode(twice).array_bytes) == b"last"     # protobuf: the last one wins
    assert bytes(scc.decode(b"").array_bytes) == b""


@pytest.mark.parametrize("bad", [b"\x12\x05abc", b"\x0a", b"\x12\x80", b"\x0b\x00", b"\x28"])
def test_truncated_or_malformed_messages_raise(bad):
    with pytest.raises(ValueError):
        scc.decode(bad)
