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


def test_chunks_sharing_a_long_head_decode_as_the_generated_parser_does():
    """The head (file, rate, 1024 channel names) walked once is reused only for
    messages that start with exactly those bytes; any other message is walked
    whole. Chunks as this server writes them, and as the generated code does."""
    names = [f"ch{i:04d}" for i in range(1024)]
    rng = np.random.default_rng(5)

    def ours(file_path, names, j0, n):
        rows = rng.standard_normal((len(names), n)).astype(np.float32)
        enc = SignalChunkEncoder(file_path, names, 256.0, 999)
        return serialize_signal_chunk(enc.encode(rows, j0, j0 + n, j0))

    def generated(file_path, names, j0, n):
        rows = rng.standard_normal((len(names), n)).astype(np.float32)
        return pb2.SignalChunk(file_path=file_path, dtype="float32", fs=256.0,
                               channel_names=names, total_samples=999, shape=rows.shape,
                               start_uutc=j0, end_uutc=j0 + n, sample_offset=j0,
                               array_bytes=rows.tobytes()).SerializeToString()
    wires = [ours("/a.mefd", names, 0, 3), ours("/a.mefd", names, 3, 2),
             generated("/a.mefd", names, 5, 1), ours("/b.mefd", names, 6, 1),
             ours("/a.mefd", names[:-1] + ["other"], 7, 2), ours("/a.mefd", names, 9, 4)]
    for data in wires:
        m = pb2.SignalChunk.FromString(data)
        got = scc.decode(data)
        assert bytes(got.array_bytes) == m.array_bytes
        assert list(got.channel_names) == list(m.channel_names)
        assert (got.file_path, got.dtype, got.fs, list(got.shape), got.start_uutc,
                got.end_uutc, got.sample_offset, got.total_samples) == \
            (m.file_path, m.dtype, m.fs, list(m.shape), m.start_uutc, m.end_uutc,
             m.sample_offset, m.total_samples)
