"""Threads that run calls (issue 19, items 1 and 5): no caller holds everyone else's.

* Health ``Watch`` streams opened without a token hold no worker thread.
* Streams whose client stops reading hold only their own identity's threads,
  while small calls and health keep answering, and are cancelled after
  ``STREAM_STALL_TIMEOUT_S``.
"""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server import messages
from mef3io_server.client import Mef3Client
from mef3io_server.healthcheck import check
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

SEC = 1_000_000
FS = 256.0
HOUR = 3600
ATTACKER, VICTIM = "tok-attacker-5c1e0a9f77b2", "tok-victim-93d2aa40c6e1"


@pytest.fixture(scope="module")
def hour(tmp_path_factory):
    """8 channels x 1 h at 256 Hz: a whole-file read is 29 MB of float32, far more than
    gRPC buffers for a client that does not read."""
    path = tmp_path_factory.mktemp("hour") / "hour.mefd"
    n = int(HOUR * FS)
    return write_session(path, {f"c{i}": random_walk(n, i) for i in range(8)}, fs=FS)


@pytest.fixture
def tokens(tmp_path):
    p = tmp_path / "tokens"
    p.write_text(f"{ATTACKER}\n{VICTIM}\n")     # unnamed: two identities all the same
    return p


def _stalled_streams(address, path, n, token=None):
    """``n`` whole-file reads whose answers are never read (one message taken from each,
    so each stream is surely running on the server). The channel does not probe for
    bandwidth: its flow-control window stays small, so a stream cannot be buffered
    whole on this side (seen twice under load: one ran to its end unread)."""
    channel = grpc.insecure_channel(address, options=messages.CHANNEL_OPTIONS
                                    + [("grpc.http2.bdp_probe", 0)])
    stub = pb2_grpc.gRPCMef3ServerStub(channel)
    md = messages.call_metadata("stalled", token)
    assert stub.OpenFile(messages.open_file_request(str(path)), metadata=md,
                         timeout=30).error_message == ""
    calls = [stub.GetSignalRange(messages.signal_request(str(path), None, T0, T0 + HOUR * SEC),
                                 metadata=md, timeout=120) for _ in range(n)]
    for call in calls:
        assert next(call).error_message == ""
    return channel, calls


def _victim_pages(address, path, token=None, pages=3, timeout=10.0):
    """Small calls and a few 10 s pages by another caller, each within ``timeout`` s."""
    with Mef3Client(address, client_id="victim", token=token, timeout=timeout) as c:
        assert c.open_file(str(path))["file_opened"]
        assert str(path) in c.list_open_files()
        assert c.get_file_info(str(path))["number_of_channels"] == 8
        for k in range(pages):
            t0 = T0 + (100 + 10 * k) * SEC
            got = c.get_signal_range(str(path), ["c0", "c1"], t0, t0 + 10 * SEC)
            assert np.array_equal(got["array"], direct_read(path, ["c0", "c1"], t0, t0 + 10 * SEC),
                                  equal_nan=True)


def test_token_less_health_watches_hold_no_worker(hour, tokens, start_server):
    h = start_server(AUTH_TOKENS_FILE=tokens)         # MAX_WORKERS: its default, 16
    channel = grpc.insecure_channel(h.address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
                   for _ in range(24)]
        for w in watches:
            assert next(w).status == health_pb2.HealthCheckResponse.SERVING
        start = time.monotonic()
        _victim_pages(h.address, hour, VICTIM, timeout=10.0)   # (on main: DEADLINE_EXCEEDED)
        assert check(h.address) == "SERVING"
        assert time.monotonic() - start < 30
    finally:
        channel.close()


def test_stalled_readers_hold_only_their_own_identitys_workers(hour, tokens, start_server):
    h = start_server(AUTH_TOKENS_FILE=tokens, STREAM_STALL_TIMEOUT_S=15)
    channel, calls = _stalled_streams(h.address, hour, 16, ATTACKER)
    try:
        start = time.monotonic()
        _victim_pages(h.address, hour, VICTIM, timeout=10.0)    # another identity: served
        assert check(h.address) == "SERVING"
        assert time.monotonic() - start < 12      # ... before the stall timeout
        # The attacker's own small calls answer too (they run apart from its streams).
        with Mef3Client(h.address, token=ATTACKER, timeout=5) as c:
            assert c.list_open_files() == [str(hour)]
        # Past STREAM_STALL_TIMEOUT_S (from each stream's last message handed to gRPC,
        # which a loaded machine may take a while to produce) the server cancels the
        # stalled streams: a client reading then gets what was buffered, then CANCELLED.
        stalled = "took no message for 15 s (STREAM_STALL_TIMEOUT_S)"
        while h.stderr_text().count(stalled) < len(calls) and time.monotonic() - start < 90:
            time.sleep(0.2)
        for call in calls:
            with pytest.raises(grpc.RpcError) as ei:
                for _ in call:
                    pass
            assert ei.value.code() == grpc.StatusCode.CANCELLED
        assert time.monotonic() - start < 90
    finally:
        channel.close()
    with Mef3Client(h.address, client_id="later", token=ATTACKER, timeout=10) as c:
        assert c.open_file(str(hour))["file_opened"]
        assert c.get_signal_range(str(hour), ["c0"], T0, T0 + SEC)["array"].shape == (1, 256)
    h.stop()
    assert h.stderr_text().count("took no message for 15 s (STREAM_STALL_TIMEOUT_S)") == 16


def test_stalled_readers_without_tokens_leave_small_calls_and_health(hour, start_server):
    h = start_server(STREAM_STALL_TIMEOUT_S=12)
    channel, calls = _stalled_streams(h.address, hour, 16)
    try:
        start = time.monotonic()
        with Mef3Client(h.address, client_id="small", timeout=8) as c:
            assert c.open_file(str(hour))["file_opened"]
            assert c.get_file_info(str(hour))["number_of_channels"] == 8
            assert c.list_open_files() == [str(hour)]
        assert check(h.address) == "SERVING"
        assert time.monotonic() - start < 10       # while the streams are still stalled
        # Without tokens every caller is one identity: the stalled streams hold its
        # stream threads until the server cancels them; then reads are served again.
        _victim_pages(h.address, hour, timeout=60.0)
        assert time.monotonic() - start < 60
    finally:
        channel.close()


def test_stall_watchdog_cancels_only_what_waits_too_long():
    from mef3io_server.server.workers import StallWatchdog

    cancelled = []
    w = StallWatchdog(None)          # no thread: checked by hand
    w.timeout_s = 2.0
    a, b = object(), object()
    w.handed(a, lambda: cancelled.append("a"))
    w.handed(b, lambda: cancelled.append("b"))
    w.taken(b)                                 # b's message went out
    now = time.monotonic()
    assert w.check(now + 1.0) == 0
    assert w.check(now + 2.5) == 1 and cancelled == ["a"]
    assert w.check(now + 10.0) == 0 and w.stalled == 1


def test_health_watches_are_bounded(start_server):
    """Anyone may open a Watch: past MAX_HEALTH_WATCHES they are refused, and freed ones
    can be opened again."""
    from mef3io_server.server.admission import MAX_HEALTH_WATCHES

    h = start_server()
    channels = [grpc.insecure_channel(h.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(MAX_HEALTH_WATCHES // 90 + 1)]
    try:
        watches = []
        for i in range(MAX_HEALTH_WATCHES):
            stub = health_pb2_grpc.HealthStub(channels[i // 90])
            watches.append(stub.Watch(health_pb2.HealthCheckRequest(), timeout=120))
        for w in watches:
            assert next(w).status == health_pb2.HealthCheckResponse.SERVING
        extra = health_pb2_grpc.HealthStub(channels[-1]).Watch(health_pb2.HealthCheckRequest(),
                                                                timeout=30)
        with pytest.raises(grpc.RpcError) as ei:
            next(extra)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert check(h.address) == "SERVING"          # Check is not a Watch
        watches[0].cancel()
        time.sleep(0.5)
        again = health_pb2_grpc.HealthStub(channels[-1]).Watch(health_pb2.HealthCheckRequest(),
                                                                timeout=30)
        assert next(again).status == health_pb2.HealthCheckResponse.SERVING
        # Draining tells every open watch NOT_SERVING while some are closing: it ends.
        threading.Thread(target=lambda: [ch.close() for ch in channels[:6]], daemon=True).start()
        start = time.monotonic()
        assert h.stop() == 0 and time.monotonic() - start < 20
    finally:
        for ch in channels:
            ch.close()
