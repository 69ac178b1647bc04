"""Prometheus /metrics: scraped, parsed, and moving with traffic."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import T0, random_walk, write_session
from mef3io_server.client import Mef3Client


def _metrics_port(handle) -> int:
    m = re.search(r"metrics served at /metrics on port (\d+)", handle.stderr_text())
    assert m, handle.stderr_text()
    return int(m.group(1))


def scrape(port: int) -> dict:
    """{(name, sorted label items): value} of every sample."""
    with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("mef3io_server_"), fam.name
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _wait_for(port, pred):
    """Call records land when the call ends, just after the client sees its last message."""
    for _ in range(200):
        s = scrape(port)
        if pred(s):
            return s
        time.sleep(0.02)
    return s


def test_metrics_move_with_traffic(tmp_path, start_server):
    rec = write_session(tmp_path / "m.mefd", {"a": random_walk(256 * 60),
                                              "b": random_walk(256 * 60, 1)})
    h = start_server(METRICS_PORT=0, TILE_DURATION_S=10, PREFETCH_AHEAD_WINDOWS=1)
    port = _metrics_port(h)
    before = scrape(port)
    for name in ("mef3io_server_cache_hits_total", "mef3io_server_cache_misses_total",
                 "mef3io_server_cache_evictions_total", "mef3io_server_cache_bytes",
                 "mef3io_server_decode_seconds_total", "mef3io_server_decode_worker_restarts_total",
                 "mef3io_server_prefetch_hits_total", "mef3io_server_open_files",
                 "mef3io_server_sessions"):
        assert (name, ()) in before, name
    assert v(before, "mef3io_server_open_files") == 0

    with Mef3Client(h.address) as c:
        assert c.open_file(str(rec))["file_opened"]
        res = c.get_signal_range(str(rec), ["a", "b"], T0, T0 + 10_000_000)      # cold
        n_bytes = res["array"].nbytes
        assert n_bytes == 2 * 2560 * 4
        s1 = _wait_for(port, lambda s: v(s, "mef3io_server_requests_total",
                                         rpc="GetSignalRange", outcome="ok") == 1)
        res2 = c.get_signal_range(str(rec), ["a", "b"], T0, T0 + 10_000_000)     # warm
        assert res2["error_message"] == ""
        # Prefetch made the next window (2 tiles: one per channel); reading it is a hit.
        _wait_for(port, lambda s: v(s, "mef3io_server_prefetch_tiles_decoded_total") >= 2)
        c.get_signal_range(str(rec), ["a", "b"], T0 + 10_000_000, T0 + 20_000_000)
        bad = c.get_signal_range(str(rec), ["nope"], T0, T0 + 1_000_000)
        assert bad["array"] is None
        s2 = _wait_for(port, lambda s: v(s, "mef3io_server_requests_total",
                                         rpc="GetSignalRange", outcome="error") == 1)

    assert v(s1, "mef3io_server_requests_total", rpc="OpenFile", outcome="ok") == 1
    assert v(s1, "mef3io_server_streamed_bytes_total", rpc="GetSignalRange") == n_bytes
    assert v(s1, "mef3io_server_open_files") == 1 and v(s1, "mef3io_server_sessions") == 1
    assert v(s1, "mef3io_server_cache_misses_total") > 0
    assert v(s1, "mef3io_server_decode_seconds_total") > 0
    assert v(s1, "mef3io_server_cache_bytes") > 0
    assert v(s2, "mef3io_server_requests_total", rpc="GetSignalRange", outcome="ok") == 3
    assert v(s2, "mef3io_server_streamed_bytes_total", rpc="GetSignalRange") == 3 * n_bytes
    assert v(s2, "mef3io_server_cache_hits_total") > v(s1, "mef3io_server_cache_hits_total")
    assert v(s2, "mef3io_server_prefetch_hits_total") > 0
    assert v(s2, "mef3io_server_request_duration_seconds_count", rpc="GetSignalRange") == 4
    assert v(s2, "mef3io_server_request_duration_seconds_bucket", rpc="GetSignalRange",
             le="+Inf") == 4


def test_unauthenticated_calls_are_counted(tmp_path, start_server):
    tokens = tmp_path / "tokens"
    tokens.write_text("metrics-token-abcdef\n")
    h = start_server(METRICS_PORT=0, AUTH_TOKENS_FILE=tokens)
    port = _metrics_port(h)
    with Mef3Client(h.address) as c:
        try:
            c.list_open_files()
        except PermissionError:
            pass
    s = _wait_for(port, lambda s: v(s, "mef3io_server_requests_total", rpc="ListOpenFiles",
                                    outcome="unauthenticated") == 1)
    assert v(s, "mef3io_server_requests_total", rpc="ListOpenFiles",
             outcome="unauthenticated") == 1


def test_malformed_requests_are_answered_counted_and_logged_without_traceback(
        tmp_path, start_server):
    import grpc

    h = start_server(METRICS_PORT=0)
    port = _metrics_port(h)
    with grpc.insecure_channel(h.address) as ch:
        for rpc in ("OpenFile", "GetSignalRange"):
            call = (ch.unary_unary if rpc == "OpenFile" else ch.unary_stream)(
                f"/gRPCMef3Server/{rpc}")          # raw bytes: no serializer
            with pytest.raises(grpc.RpcError) as ei:
                answer = call(b"\x0a\xff\xff\xff\xff\xff", timeout=10)   # a broken field 1
                if rpc == "GetSignalRange":
                    list(answer)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"the {rpc} request could not be parsed" in ei.value.details()
    s = _wait_for(port, lambda s: v(s, "mef3io_server_requests_total", rpc="GetSignalRange",
                                    outcome="invalid_argument") == 1)
    assert v(s, "mef3io_server_requests_total", rpc="OpenFile", outcome="invalid_argument") == 1
    h.stop()
    log = h.stderr_text()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "OpenFile client=- file=- window=- channels=- bytes=0" in log


def test_a_refused_read_counts_as_an_error_even_when_the_client_leaves(tmp_path,
                                                                       start_server):
    import grpc

    from mef3io_server import messages
    from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

    rec = write_session(tmp_path / "r.mefd", {"a": random_walk(256 * 60)})
    h = start_server(METRICS_PORT=0, MAX_READ_MB=1)
    port = _metrics_port(h)
    with grpc.insecure_channel(h.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        assert stub.OpenFile(messages.open_file_request(str(rec)), timeout=10).file_opened
        for i in range(20):
            # A read over MAX_READ_MB is refused in its first message; the client then
            # cancels the call at once, as clients do on an error.
            call = stub.GetSignalRange(messages.signal_request(str(rec), None, T0 - 10**12,
                                                           T0 + 10**12), timeout=10)
            assert "MAX_READ_MB" in next(call).error_message
            call.cancel()
    s = _wait_for(port, lambda s: v(s, "mef3io_server_requests_total", rpc="GetSignalRange",
                                    outcome="error") == 20)
    assert v(s, "mef3io_server_requests_total", rpc="GetSignalRange", outcome="error") == 20
    assert v(s, "mef3io_server_requests_total", rpc="GetSignalRange", outcome="cancelled") == 0
