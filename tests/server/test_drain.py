"""Graceful drain on SIGTERM with a slow client mid-stream."""
from __future__ import annotations

import signal
import time

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server import messages
from mef3io_server.client import Mef3Client
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.app import SERVICE_NAME

psutil = pytest.importorskip("psutil")
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

CHANNELS = [f"ch{i}" for i in range(8)]
MINUTES = 20


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """8 channels x 20 min at 256 Hz: ~9.4 MB of float32, far more than flow control buffers."""
    n = 256 * 60 * MINUTES
    return write_session(tmp_path_factory.mktemp("drain") / "long.mefd",
                         {c: random_walk(n, i) for i, c in enumerate(CHANNELS)})


def _health(address: str) -> str:
    try:
        with grpc.insecure_channel(address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    except grpc.RpcError as e:
        return e.code().name


def _start_stream(address, path, client_id="slow-viewer"):
    channel = grpc.insecure_channel(address, options=messages.CHANNEL_OPTIONS)
    stub = pb2_grpc.gRPCMef3ServerStub(channel)
    md = messages.call_metadata(client_id)
    assert stub.OpenFile(messages.open_file_request(str(path)), metadata=md).file_opened
    t1 = T0 + MINUTES * 60 * 1_000_000
    call = stub.GetSignalRange(messages.signal_request(str(path), CHANNELS, T0, t1, None),
                               metadata=md)
    return channel, call, t1


def _children(pid: int) -> list:
    return psutil.Process(pid).children(recursive=True)


def _gone(p) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigterm_drains_in_flight_stream(long_recording, start_server):
    h = start_server(USE_PROCESS_POOL="true", READER_PROCESSES=1, PREFETCH_PROCESSES=1,
                     CHUNK_BYTES=65536, SHUTDOWN_GRACE_S=120, TILE_DURATION_S=60)
    children = _children(h.proc.pid)
    assert len(children) >= 2                      # forkserver and decode workers
    channel, call, t1 = _start_stream(h.address, long_recording)
    asm = messages.SignalAssembler(None)
    assert asm.feed(next(call))                    # the stream has started, then stalls

    h.proc.send_signal(signal.SIGTERM)
    status = ""
    for _ in range(300):
        status = _health(h.address)
        if status != "SERVING":
            break
        time.sleep(0.02)
    assert status == "NOT_SERVING"                 # draining, still answering
    with Mef3Client(h.address) as other:           # new work is refused, clearly
        r = other.open_file(str(long_recording))
        assert not r["file_opened"] and "shutting down" in r["error_message"]
    assert h.proc.poll() is None                   # waiting for the slow client

    for chunk in call:                             # the slow client reads the rest
        if not asm.feed(chunk):
            break
    res = asm.result()
    assert res["error_message"] == ""
    assert np.array_equal(res["array"], direct_read(long_recording, CHANNELS, T0, t1),
                          equal_nan=True)
    channel.close()

    assert h.proc.wait(60) == 0
    assert all(_gone(p) for p in children), [p.pid for p in children if not _gone(p)]
    log = h.stderr_text()
    assert "draining" in log and "stopped" in log


def test_grace_runs_out_for_a_stalled_stream(long_recording, start_server):
    h = start_server(USE_PROCESS_POOL="true", READER_PROCESSES=1, PREFETCH_PROCESSES=1,
                     CHUNK_BYTES=65536, SHUTDOWN_GRACE_S=1)
    children = _children(h.proc.pid)
    channel, call, _ = _start_stream(h.address, long_recording, "stalled")
    asm = messages.SignalAssembler(None)
    assert asm.feed(next(call))
    h.proc.send_signal(signal.SIGTERM)
    assert h.proc.wait(60) == 0                    # did not wait for the stalled client
    with pytest.raises(grpc.RpcError):
        for chunk in call:
            asm.feed(chunk)
    channel.close()
    assert all(_gone(p) for p in children), [p.pid for p in children if not _gone(p)]
