"""The published 3.1.0 client's call pattern, replayed with raw generated stubs.

What that client does on the wire (learned from its behaviour, not copied):
every call carries ``(("x-mef3io-client-id", <id>),)`` as metadata; OpenFile
always sets ``allow_mixed_rates`` and sets ``cache_fs`` only when given, and
fails when ``cache_fs`` was asked for but not echoed; GetSignalRange sends the
channel list (``[]`` for all), ``int`` times, ``n_points`` only when given;
each chunk is ``np.frombuffer(array_bytes, dtype).reshape(shape)``; any chunk
with ``error_message`` fails the read; chunks are joined with
``np.concatenate(..., axis=1)``; start/end are the min/max over chunks.
"""
from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

S = 1_000_000
KEY = "x-mef3io-client-id"


class PublishedPattern:
    """The 3.1.0 client's messages, metadata and chunk joining, on raw stubs."""

    def __init__(self, address: str):
        self.md = ((KEY, uuid.uuid4().hex),)
        self.channel = grpc.insecure_channel(address)   # default options, like 3.1.0
        self.stub = pb2_grpc.gRPCMef3ServerStub(self.channel)

    def open_file(self, path, cache_fs=None, allow_mixed_rates=False):
        req = pb2.OpenFileRequest(file_path=path, allow_mixed_rates=bool(allow_mixed_rates))
        if cache_fs is not None:
            req.cache_fs = float(cache_fs)
        resp = self.stub.OpenFile(req, metadata=self.md)
        if cache_fs is not None and resp.file_opened:
            assert resp.HasField("cache_fs"), "3.1.0 client would raise: cache_fs not echoed"
        return resp

    def info(self, path):
        return self.stub.FileInfo(pb2.FileInfoRequest(file_path=path), metadata=self.md)

    def close(self, path):
        return self.stub.CloseFile(pb2.FileInfoRequest(file_path=path), metadata=self.md)

    def list_open(self):
        return list(self.stub.ListOpenFiles(pb2.ListOpenFilesRequest(), metadata=self.md)
                    .file_paths)

    def get_signal_range(self, path, channels, t0, t1, n_points=None):
        req = pb2.SignalRangeRequest(file_path=path, channel_names=list(channels) if channels
                                     else [], start_uutc=int(t0), end_uutc=int(t1))
        if n_points is not None:
            req.n_points = int(n_points)
        arrays, names, fs, got0, got1 = [], None, None, None, None
        for chunk in self.stub.GetSignalRange(req, metadata=self.md):
            if chunk.error_message:
                return {"array": None, "error_message": chunk.error_message}
            arrays.append(np.frombuffer(chunk.array_bytes, dtype=chunk.dtype)
                          .reshape(chunk.shape))
            names, fs = list(chunk.channel_names), chunk.fs
            got0 = chunk.start_uutc if got0 is None else min(got0, chunk.start_uutc)
            got1 = chunk.end_uutc if got1 is None else max(got1, chunk.end_uutc)
        if not arrays:
            return {"array": None, "error_message": "No data returned."}
        array = np.concatenate(arrays, axis=1) if len(arrays) > 1 else arrays[0]
        if n_points is not None:
            assert array.shape[-1] <= int(n_points), "3.1.0 client would raise: n_points ignored"
        return {"array": array, "channel_names": names, "fs": fs, "start_uutc": got0,
                "end_uutc": got1, "n_chunks": len(arrays), "error_message": ""}

    def shutdown(self):
        self.channel.close()


@pytest.fixture
def recording(write_recording):
    gap = random_walk(256 * 600, 7)
    gap[256 * 100:256 * 110] = np.nan
    return write_recording("pattern", {"Fp1": random_walk(256 * 600, 1), "Fp2": gap,
                                       "C3": random_walk(256 * 600, 3),
                                       "slow": (random_walk(128 * 600, 4), 128.0)})


@pytest.fixture
def server(start_server):
    return start_server(CHUNK_BYTES="200000")   # several chunks per read


@pytest.fixture
def opened(server, recording):
    """A published-pattern client with the recording open."""
    c = PublishedPattern(server.address)
    assert c.open_file(str(recording)).file_opened
    yield c
    c.shutdown()


def test_open_info_list_close(server, recording):
    c = PublishedPattern(server.address)
    try:
        r = c.open_file(str(recording))
        assert r.file_opened and not r.error_message
        assert list(r.channel_names) == ["C3", "Fp1", "Fp2", "slow"]   # mef3io's (file) order
        assert r.number_of_channels == 4
        assert list(r.channel_sampling_rates) == [256.0, 256.0, 256.0, 128.0]
        assert list(r.channel_start_uutc) == [T0] * 4
        assert r.start_uutc == T0 and r.end_uutc == max(r.channel_end_uutc)
        assert r.duration_s == pytest.approx((r.end_uutc - r.start_uutc) / 1e6)
        assert not r.HasField("cache_fs")
        i = c.info(str(recording))
        assert i.file_opened and list(i.channel_names) == list(r.channel_names)
        assert c.list_open() == [str(recording)]
        closed = c.close(str(recording))
        assert not closed.error_message and not closed.file_opened
        assert c.list_open() == []
    finally:
        c.shutdown()


@pytest.mark.parametrize("channels", [["Fp2", "Fp1"], None, ["C3"]])
def test_reads_join_to_direct_reads(opened, recording, channels):
    c = opened
    names = channels or ["C3", "Fp1", "Fp2"]
    # 3 channels x 10 min at 256 Hz = 1.8 MB: 9 chunks of <= 200 kB
    for t0, t1 in [(T0 + 95 * S + 13, T0 + 112 * S), (T0 - 5 * S, T0 + 590 * S + 1)]:
        if channels is None:
            res = c.get_signal_range(str(recording), [], t0, t1)
            assert "rate" in res["error_message"]      # slow channel: rates differ
            res = c.get_signal_range(str(recording), names, t0, t1)
        else:
            res = c.get_signal_range(str(recording), channels, t0, t1)
        assert res["error_message"] == ""
        ref = direct_read(recording, names, t0, t1)
        assert res["array"].dtype == np.float32
        assert np.array_equal(res["array"], ref, equal_nan=True)
        assert res["channel_names"] == names and res["fs"] == 256.0
        assert res["start_uutc"] == t0 and res["end_uutc"] == t1
    assert res["n_chunks"] >= 2        # the long window came in several chunks


def test_error_chunk_fails_the_read(opened, recording):
    res = opened.get_signal_range(str(recording), ["nope"], T0, T0 + S)
    assert res["array"] is None and "nope" in res["error_message"]
    res = opened.get_signal_range("/not/open.mefd", ["Fp1"], T0, T0 + S)
    assert res["array"] is None and res["error_message"]


def test_n_points_and_cache_fs(opened, recording):
    c = opened
    res = c.get_signal_range(str(recording), ["Fp1"], T0, T0 + 300 * S, n_points=1000)
    assert res["array"].shape == (1, 1000)
    full = direct_read(recording, ["Fp1"], T0, T0 + 300 * S)
    assert np.isin(res["array"], full).all()          # real samples only
    assert np.nanmax(res["array"]) == np.nanmax(full)
    assert np.nanmin(res["array"]) == np.nanmin(full)
    r = c.open_file(str(recording), cache_fs=64.0)
    assert r.file_opened and r.cache_fs == 64.0
    assert list(r.channel_served_sampling_rates) == [64.0] * 4
    res = c.get_signal_range(str(recording), ["Fp1", "slow"], T0, T0 + 10 * S)
    assert res["fs"] == 64.0 and res["array"].shape == (2, 640)


def test_metadata_key_identifies_sessions(server, recording):
    a, b = PublishedPattern(server.address), PublishedPattern(server.address)
    try:
        assert a.md[0][0] == KEY and a.md != b.md
        a.open_file(str(recording))
        b.open_file(str(recording))
        a.close(str(recording))
        assert b.list_open() == [str(recording)]      # b's session keeps it open
        b.close(str(recording))
        assert a.list_open() == []
    finally:
        a.shutdown()
        b.shutdown()
