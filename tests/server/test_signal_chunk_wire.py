"""The hand-encoded SignalChunk bytes of GetSignalRange are valid, equal SignalChunk messages."""
from __future__ import annotations

import numpy as np
import pytest

from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.server.service import (SAMPLES_ALIGN, SignalChunkEncoder,
                                          serialize_signal_chunk)
from tests.conftest import T0, direct_read, random_walk


def reference(path, names, fs, total, rows, a, b, j0) -> pb2.SignalChunk:
    return pb2.SignalChunk(file_path=path, array_bytes=rows.tobytes(), dtype="float32",
                           shape=rows.shape, start_uutc=a, end_uutc=b, fs=fs,
                           channel_names=names, total_samples=total, sample_offset=j0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 2560), (2, 0), (300, 9000)])
def test_encoded_chunk_parses_to_the_same_message(shape):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal(shape).astype(np.float32)
    if rows.size:
        rows.flat[0] = np.nan
    names = [f"ch{i}" for i in range(shape[0])]
    enc = SignalChunkEncoder("/data/x.mefd", names, 256.0, 10_000)
    wire = enc.encode(rows, T0 + 7, T0 + 9_000_000, 123)
    assert wire.sample_bytes == rows.nbytes
    data = serialize_signal_chunk(wire)
    parsed = pb2.SignalChunk.FromString(data)
    ref = reference("/data/x.mefd", names, 256.0, 10_000, rows, T0 + 7, T0 + 9_000_000, 123)
    assert set(parsed.padding) <= {0}             # zeros, only to align the samples:
    assert data.endswith(rows.tobytes())          # they are last, at a multiple of 16
    assert (len(data) - rows.nbytes) % SAMPLES_ALIGN == 0
    parsed.ClearField("padding")
    assert parsed == ref
    got = np.frombuffer(parsed.array_bytes, dtype=parsed.dtype).reshape(tuple(parsed.shape))
    assert np.array_equal(got, rows, equal_nan=True)


def test_first_chunk_offset_zero_is_present_and_strided_rows_are_made_contiguous():
    rows = np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::2]   # not contiguous
    parsed = pb2.SignalChunk.FromString(serialize_signal_chunk(
        SignalChunkEncoder("p", ["a", "b", "c", "d"], 1.5, 5).encode(rows, 0, 10, 0)))
    assert parsed.HasField("sample_offset") and parsed.sample_offset == 0
    assert np.array_equal(np.frombuffer(parsed.array_bytes, np.float32).reshape(4, 5), rows)


def test_messages_still_serialize():
    msg = pb2.SignalChunk(file_path="p", error_message="boom")
    assert serialize_signal_chunk(msg) == msg.SerializeToString()


def test_served_windows_equal_direct_reads(write_recording, start_server, client_factory):
    """End to end through a real server: multi-chunk reads are exact."""
    chans = {f"c{i}": random_walk(256 * 120, seed=i) for i in range(6)}
    path = write_recording("wire", chans)
    srv = start_server(CHUNK_BYTES="8192")     # many chunks per read
    c = client_factory(srv.address)
    assert c.open_file(str(path))["file_opened"]
    for t0, t1 in [(T0, T0 + 10_000_000), (T0 + 3_333_333, T0 + 97_000_001),
                   (T0 - 2_000_000, T0 + 1_000_000)]:
        res = c.get_signal_range(str(path), list(chans), t0, t1)
        assert res["error_message"] == ""
        ref = direct_read(path, list(chans), t0, t1)
        assert np.array_equal(res["array"], ref, equal_nan=True)


def test_a_one_chunk_answer_reaches_the_client_in_place(write_recording, start_server,
                                                        client_factory):
    """Through a real server, for every channel count (so every header length): the
    client's array is the received message's samples, aligned, not a copy, and exact."""
    chans = {f"channel_{i}": random_walk(256 * 30, seed=i) for i in range(7)}
    path = write_recording("inplace", chans)
    srv = start_server()
    c = client_factory(srv.address)
    assert c.open_file(str(path))["file_opened"]
    names = list(chans)
    for n in range(1, len(names) + 1):
        res = c.get_signal_range(str(path), names[:n], T0, T0 + 10_000_000)
        arr = res["array"]
        assert arr.flags.aligned and not arr.flags.owndata and not arr.flags.writeable
        base = arr
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview)              # the message's bytes, in place
        assert np.array_equal(arr, direct_read(path, names[:n], T0, T0 + 10_000_000),
                              equal_nan=True)
