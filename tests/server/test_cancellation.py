"""A client that cancels a read (or whose deadline passes) stops its decodes, end to end.

A real server on a real port, a real recording and the real thread decoder,
whose foreground decodes are held at their start until the client has
cancelled: the decodes then find the read's cancel token fired and stop, and
the server's own counters say so.
"""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.client import Mef3Client
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.app import build_server
from mef3io_server.server.config import Settings
from mef3io_server.server.decode import ThreadDecoder

S = 1_000_000


def _until(pred, seconds=10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_cancelled_read_stops_its_decodes_and_is_counted(write_recording, monkeypatch, how):
    path = write_recording("cancel", {f"c{i}": random_walk(256 * 120, i) for i in range(16)})
    entered, release = threading.Event(), threading.Event()
    run = ThreadDecoder._run

    def held(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        if lane == "fg" and not release.is_set():
            entered.set()
            release.wait(30)
        return run(self, source, channels, t0, t1, lane, dtype, cancel)

    monkeypatch.setattr(ThreadDecoder, "_run", held)
    running = build_server(Settings(port=0, refresh_interval_s=0.0, prefetch_ahead_windows=0,
                                    prefetch_behind_windows=0, tile_duration_s=60.0))
    engine = running.engine
    t0, t1 = T0, T0 + 60 * S
    try:
        with Mef3Client(f"localhost:{running.port}") as c:
            c.open_file(str(path))
        channel = grpc.insecure_channel(f"localhost:{running.port}")
        stub = pb2_grpc.gRPCMef3ServerStub(channel)
        request = pb2.SignalRangeRequest(file_path=str(path), channel_names=[], start_uutc=t0,
                                         end_uutc=t1)
        outcome = []

        def read():
            try:
                call = stub.GetSignalRange(request, timeout=0.5 if how == "deadline" else 60)
                calls.append(call)
                for _ in call:
                    pass
                outcome.append("finished")
            except grpc.RpcError as e:
                outcome.append(e.code())

        calls: list = []
        reader = threading.Thread(target=read)
        reader.start()
        assert entered.wait(10), "the read never reached the decoder"
        if how == "cancel":
            assert _until(lambda: calls)
            calls[0].cancel()
        reader.join(10)
        assert outcome == [grpc.StatusCode.CANCELLED if how == "cancel"
                           else grpc.StatusCode.DEADLINE_EXCEEDED], outcome
        release.set()                     # the held decodes go on: and find the read cancelled
        assert _until(lambda: engine.counters.reads_cancelled == 1), "not counted as cancelled"
        stats = engine.store.stats
        assert _until(lambda: stats.tiles_cancelled == 16), stats
        assert stats.tiles_decoded == 0 and engine.decoder.stats()["decodes"] == 0
        assert engine.store.busy() == 0
        # The server goes on serving: the same window, whole and exact.
        with Mef3Client(f"localhost:{running.port}") as c:
            c.open_file(str(path))
            got = c.get_signal_range(str(path), [], t0, t1)["array"]
        assert np.array_equal(got, direct_read(path, [], t0, t1), equal_nan=True)
        assert stats.tiles_decoded == 16 and engine.counters.reads_cancelled == 1
        channel.close()
    finally:
        release.set()
        running.stop(0)
