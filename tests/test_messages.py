"""The request/answer layer shared by the sync and asyncio clients (mef3io_server.messages)."""
from __future__ import annotations

import numpy as np

from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.messages import SignalAssembler


def chunk(rows: np.ndarray, j0: int, total: int | None) -> pb2.SignalChunk:
    msg = pb2.SignalChunk(file_path="/x.mefd", array_bytes=rows.astype(np.float32).tobytes(),
                          dtype="float32", shape=rows.shape, fs=256.0,
                          channel_names=[f"c{i}" for i in range(rows.shape[0])],
                          start_uutc=j0, end_uutc=j0 + rows.shape[1])
    if total is not None:
        msg.total_samples = total
        msg.sample_offset = j0
    return pb2.SignalChunk.FromString(msg.SerializeToString())


def test_one_chunk_read_is_the_message_buffer_without_a_copy():
    data = np.arange(3 * 100, dtype=np.float32).reshape(3, 100)
    data[1, 7] = np.nan
    a = SignalAssembler()
    assert a.feed(chunk(data, 0, 100))
    res = a.result()
    assert np.array_equal(res["array"], data, equal_nan=True)
    assert res["shape"] == (3, 100) and res["error_message"] == ""
    assert not res["array"].flags.writeable      # the message's bytes, as the published client


def test_chunks_are_assembled_in_place_by_offset():
    data = np.random.default_rng(1).standard_normal((4, 1000)).astype(np.float32)
    a = SignalAssembler()
    for j0 in (600, 0, 300):                     # any order
        j1 = {0: 300, 300: 600, 600: 1000}[j0]
        assert a.feed(chunk(data[:, j0:j1], j0, 1000))
    res = a.result()
    assert np.array_equal(res["array"], data) and res["array"].flags.writeable


def test_a_missing_chunk_is_an_error_not_a_short_array():
    data = np.ones((2, 100), dtype=np.float32)
    a = SignalAssembler()
    a.feed(chunk(data[:, :40], 0, 100))
    res = a.result()
    assert res["array"] is None and "40 of 100" in res["error_message"]


def test_an_error_chunk_fails_the_whole_read():
    a = SignalAssembler()
    a.feed(chunk(np.ones((1, 10), dtype=np.float32), 0, 20))
    assert not a.feed(pb2.SignalChunk(file_path="/x.mefd", error_message="unknown channel: Q"))
    res = a.result()
    assert res["array"] is None and res["error_message"] == "unknown channel: Q"


def test_chunks_without_total_are_concatenated():
    data = np.arange(2 * 50, dtype=np.float32).reshape(2, 50)
    a = SignalAssembler()
    a.feed(chunk(data[:, :20], 0, None))
    a.feed(chunk(data[:, 20:], 20, None))
    assert np.array_equal(a.result()["array"], data)
