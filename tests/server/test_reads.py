"""End to end: served windows equal direct mef3io reads, sample for sample and NaN for NaN.

One real server (subprocess, real port) with 1 s tiles reads generated
recordings -- gaps, several segments, a segment off the sampling grid, a
fractional rate, mixed rates -- and every golden session over a matrix of
windows: inside one tile, across tile edges, straddling the start and the end,
fully outside, across gaps.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from conftest import T0, direct_read, golden_cases, launch_server, random_walk, write_session
from mef3io_server.client import Mef3Client
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

S = 1_000_000  # one second in uUTC
TILE_S = 1.0


@pytest.fixture(scope="module")
def server():
    h = launch_server({"TILE_DURATION_S": str(TILE_S), "TILE_CACHE_MB": "64"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def server_default_tiles():
    """A server with the default 10 s tiles (1 s tiles re-decode 10 s MEF blocks)."""
    h = launch_server({"TILE_CACHE_MB": "64"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("reads")
    gap = random_walk(256 * 20, 1)
    gap[256 * 5:256 * 7] = np.nan                 # a 2 s gap
    short_gap = random_walk(256 * 20, 2)
    short_gap[1000:1003] = np.nan                 # a 3-sample gap, inside one tile
    recs = {
        "gaps": write_session(d / "gaps.mefd", {"a": gap, "b": random_walk(256 * 20, 3),
                                                "c": short_gap}),
        "multiseg": write_session(d / "multiseg.mefd", {
            "x": [(random_walk(256 * 12, 4), 256.0, T0),
                  (random_walk(256 * 8, 5), 256.0, T0 + 15 * S)],
            "y": [(random_walk(256 * 12, 6), 256.0, T0),
                  (random_walk(256 * 8, 7), 256.0, T0 + 15 * S)]}),
        # the second segment starts 0.256 samples off the first one's grid
        "offgrid": write_session(d / "offgrid.mefd", {
            "x": [(random_walk(256 * 10, 8), 256.0, T0),
                  (random_walk(256 * 10, 9), 256.0, T0 + 12 * S + 1000)]}),
        "fractional": write_session(d / "fractional.mefd", {
            "f1": (random_walk(5125, 10), 512.5), "f2": (random_walk(5125, 11), 512.5)}),
        "mixed": write_session(d / "mixed.mefd", {
            "fast": (random_walk(1000 * 10, 12), 1000.0), "slow": (random_walk(2560, 13), 256.0),
            "fast2": (random_walk(1000 * 10, 14), 1000.0)}),
        # a channel starting later than the others
        "staggered": write_session(d / "staggered.mefd", {
            "early": (random_walk(256 * 10, 15), 256.0, T0),
            "late": (random_walk(256 * 6, 16), 256.0, T0 + 3 * S + 500_000)}),
    }
    return recs


@pytest.fixture(scope="module")
def client(server):
    c = Mef3Client(server.address, client_id="reads-tests")
    yield c
    c.shutdown()


def windows(start: int, end: int, fs: float) -> list[tuple[int, int]]:
    """The window matrix for a recording spanning [start, end) uUTC."""
    t = TILE_S * S
    dur = end - start
    odd = 1234
    ws = [
        (start + 2 * S + 100_000, start + 2 * S + 600_000),   # inside one tile
        (start + odd, start + odd + S),                           # across a tile edge
        (start + int(t) - 50_000, start + 3 * int(t) + 70_001),   # across several edges
        (start - 3 * S, start + 2 * S + odd),                     # straddling the start
        (end - 2 * S - odd, end + 3 * S),                         # straddling the end
        (start - 10 * S, start - 5 * S),                          # fully before
        (end + 5 * S, end + 9 * S + 777),                         # fully after
        (start - S, end + S),                                     # everything and more
        (start, end),                                             # exactly the span
        (start + dur // 3, start + dur // 3 + int(3e6 / fs)),     # a few samples
        (start + dur // 2 + 7, start + dur // 2 + 7 + int(1e6 / fs) // 2 + 1),  # ~half a sample
    ]
    return [(a, b) for a, b in ws if b > a]


def check_equal(client, path, channels, t0, t1, password=""):
    ref = direct_read(path, channels, t0, t1, password=password)
    res = client.get_signal_range(str(path), channels, t0, t1)
    assert res["error_message"] == "", (t0, t1, res["error_message"])
    got = res["array"]
    assert got.dtype == np.float32 and res["dtype"] == "float32"
    assert got.shape == ref.shape, (t0 - T0, t1 - T0, got.shape, ref.shape)
    assert np.array_equal(got, ref, equal_nan=True), (t0 - T0, t1 - T0)
    return res


@pytest.mark.parametrize("name", ["gaps", "multiseg", "offgrid", "fractional", "staggered"])
def test_window_matrix_generated(client, recordings, name):
    path = recordings[name]
    info = client.open_file(str(path))
    assert info["file_opened"], info["error_message"]
    fs = info["channel_sampling_rates"][0]
    names = info["channel_names"]
    for t0, t1 in windows(info["start_uutc"], info["end_uutc"], fs):
        check_equal(client, path, names, t0, t1)
        if len(names) > 1:
            check_equal(client, path, names[::-1][:1], t0, t1)
    # twice: the second pass is served from cached tiles
    for t0, t1 in windows(info["start_uutc"], info["end_uutc"], fs)[:4]:
        check_equal(client, path, names, t0, t1)


def test_across_gaps(client, recordings):
    path = recordings["gaps"]
    client.open_file(str(path))
    res = check_equal(client, path, ["a", "b", "c"], T0 + 4 * S + 3, T0 + 8 * S + 3)
    a = res["array"][0]
    assert np.isnan(a).sum() >= 2 * 256 - 1 and not np.isnan(res["array"][1]).any()
    res = check_equal(client, path, ["c"], T0 + 3 * S, T0 + 4 * S + 1)   # the 3-sample gap
    assert np.isnan(res["array"]).sum() == 3


def test_multisegment_gap_between_segments(client, recordings):
    path = recordings["multiseg"]
    client.open_file(str(path))
    res = check_equal(client, path, ["x", "y"], T0 + 11 * S, T0 + 16 * S)
    assert np.isnan(res["array"][:, 256:3 * 256]).all()


def test_offgrid_segment_every_alignment(client, recordings):
    """Windows starting at many sub-sample phases over the off-grid segment start."""
    path = recordings["offgrid"]
    client.open_file(str(path))
    for shift in range(0, 3906, 300):
        check_equal(client, path, ["x"], T0 + 11 * S + shift, T0 + 14 * S + shift)


def test_fractional_rate_many_windows(client, recordings):
    path = recordings["fractional"]
    info = client.open_file(str(path))
    assert info["channel_sampling_rates"] == [512.5, 512.5]
    rng = np.random.default_rng(0)
    for _ in range(15):
        a = T0 + int(rng.integers(-2 * S, 11 * S))
        b = a + int(rng.integers(1, 4 * S))
        check_equal(client, path, [], a, b)


def test_empty_channel_list_is_all_in_file_order(client, recordings):
    path = recordings["gaps"]
    info = client.open_file(str(path))
    res = check_equal(client, path, [], T0, T0 + 3 * S)
    assert res["channel_names"] == info["channel_names"] == ["a", "b", "c"]
    assert res["fs"] == 256.0


def test_channel_order_as_asked(client, recordings):
    path = recordings["gaps"]
    client.open_file(str(path))
    res = check_equal(client, path, ["c", "a"], T0 + S, T0 + 2 * S)
    assert res["channel_names"] == ["c", "a"]


def test_repeated_channels(client, recordings):
    path = recordings["gaps"]
    client.open_file(str(path))
    res = check_equal(client, path, ["b", "a", "b"], T0 + 4 * S + 5, T0 + 9 * S)
    assert res["channel_names"] == ["b", "a", "b"]


def test_shared_rate_check(client, recordings):
    path = recordings["mixed"]
    client.open_file(str(path))
    res = client.get_signal_range(str(path), ["fast", "slow"], T0, T0 + S)
    assert res["array"] is None
    assert "1000" in res["error_message"] and "256" in res["error_message"]
    res = client.get_signal_range(str(path), [], T0, T0 + S)
    assert res["array"] is None and "rate" in res["error_message"]
    check_equal(client, path, ["fast", "fast2"], T0 + 333, T0 + 2 * S + 333)
    check_equal(client, path, ["slow"], T0 + 333, T0 + 2 * S + 333)


@pytest.mark.parametrize("case", [c for c, _ in golden_cases()] or ["(no golden)"])
def test_golden_sessions(client, golden, case):
    entry = dict(golden_cases())[case]
    path = golden / f"{case}.mefd"
    pw = entry.get("password") or ""
    info = client.open_file(str(path), password=pw or None)
    assert info["file_opened"], info["error_message"]
    assert info["channel_names"] == list(entry["channels"])
    for name, ch in entry["channels"].items():
        i = info["channel_names"].index(name)
        assert info["channel_sampling_rates"][i] == ch["fs"]
        assert info["channel_start_uutc"][i] == ch["start_time"]
    fs = info["channel_sampling_rates"][0]
    for t0, t1 in windows(info["start_uutc"], info["end_uutc"], fs):
        check_equal(client, path, [], t0, t1, password=pw)
    # the whole recording also equals what the legacy stack read back
    ref = np.load(golden / f"{case}.npz")
    res = client.get_signal_range(str(path), [], info["start_uutc"], info["end_uutc"])
    for i, name in enumerate(info["channel_names"]):
        if name in ref.files:
            legacy = np.asarray(ref[name], dtype=np.float32)
            got = res["array"][i][~np.isnan(res["array"][i])]
            want = legacy[~np.isnan(legacy)]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- chunking


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """8 channels, 40 minutes at 256 Hz (a 2.5 MB chunk holds ~5 minutes of it)."""
    d = tmp_path_factory.mktemp("long")
    n = 40 * 60 * 256
    return write_session(d / "long.mefd", {f"ch{i}": random_walk(n, 100 + i) for i in range(8)})


def raw_read(address, path, channels, t0, t1, client_id="raw"):
    import grpc

    with grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 * 2**20)]) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        md = (("x-mef3io-client-id", client_id),)
        open_resp = stub.OpenFile(pb2.OpenFileRequest(file_path=str(path)), metadata=md)
        assert open_resp.file_opened, open_resp.error_message
        return list(stub.GetSignalRange(pb2.SignalRangeRequest(
            file_path=str(path), channel_names=channels, start_uutc=t0, end_uutc=t1),
            metadata=md))


def test_chunks_at_most_2_5_mb_and_join(server_default_tiles, long_recording):
    server = server_default_tiles
    t0, t1 = T0 + 123, T0 + 16 * 60 * S + 123
    chunks = raw_read(server.address, long_recording, [], t0, t1)
    assert len(chunks) > 3
    parts = []
    prev_end = t0
    for c in chunks:
        assert not c.error_message
        assert len(c.array_bytes) <= 2_500_000
        assert c.dtype == "float32" and len(c.shape) == 2 and c.shape[0] == 8
        assert list(c.channel_names) == [f"ch{i}" for i in range(8)] and c.fs == 256.0
        assert c.start_uutc == prev_end and c.end_uutc > c.start_uutc
        prev_end = c.end_uutc
        parts.append(np.frombuffer(c.array_bytes, dtype=c.dtype).reshape(tuple(c.shape)))
    assert prev_end == t1
    joined = np.concatenate(parts, axis=1)
    ref = direct_read(long_recording, [], t0, t1)
    assert np.array_equal(joined, ref, equal_nan=True)


def test_concurrent_clients_same_file(server_default_tiles, long_recording):
    server = server_default_tiles
    windows_ = [(T0 + k * 37 * S + 1111, T0 + k * 37 * S + 1111 + 20 * S) for k in range(6)]
    refs = [direct_read(long_recording, ["ch1", "ch5"], a, b) for a, b in windows_]
    errors: list[str] = []
    results: dict[tuple[int, int], list] = {}

    def work(i):
        c = Mef3Client(server.address, client_id=f"conc-{i}")
        try:
            info = c.open_file(str(long_recording))
            if not info["file_opened"]:
                errors.append(info["error_message"])
                return
            for rep in range(2):
                for w, (a, b) in enumerate(windows_):
                    r = c.get_signal_range(str(long_recording), ["ch1", "ch5"], a, b)
                    if r["error_message"]:
                        errors.append(r["error_message"])
                        continue
                    results[(i, rep, w)] = r["array"]
        finally:
            c.shutdown()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 6 * 2 * len(windows_)
    for (i, rep, w), arr in results.items():
        assert np.array_equal(arr, refs[w], equal_nan=True), (i, rep, w)


# ---------------------------------------------------------------- huge window, bounded memory


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


@pytest.mark.slow
def test_huge_window_streams_with_bounded_memory(start_server, long_recording):
    """8 hours x 8 channels (236 MB of float32) through a 32 MB cache: RSS stays bounded."""
    import grpc

    h = start_server(TILE_CACHE_MB="32", TILE_DURATION_S="10")
    proc = psutil.Process(h.proc.pid)
    c = Mef3Client(h.address, client_id="huge")
    try:
        assert c.open_file(str(long_recording))["file_opened"]
        c.get_signal_range(str(long_recording), ["ch0"], T0, T0 + S)   # warm up
    finally:
        c.shutdown()
    time.sleep(0.5)
    base = _tree_rss(proc)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lead = 2 * 3600 * S                      # the window starts 2 h before the recording
    t0, t1 = T0 - lead, T0 - lead + 8 * 3600 * S
    ref = direct_read(long_recording, [], T0, T0 + 40 * 60 * S)
    off = 2 * 3600 * 256
    n_total = 0
    try:
        with grpc.insecure_channel(h.address, options=[
                ("grpc.max_receive_message_length", 64 * 2**20)]) as ch:
            stub = pb2_grpc.gRPCMef3ServerStub(ch)
            md = (("x-mef3io-client-id", "huge"),)
            assert stub.OpenFile(pb2.OpenFileRequest(file_path=str(long_recording)),
                                 metadata=md).file_opened
            for chunk in stub.GetSignalRange(pb2.SignalRangeRequest(
                    file_path=str(long_recording), start_uutc=t0, end_uutc=t1), metadata=md):
                assert not chunk.error_message, chunk.error_message
                assert len(chunk.array_bytes) <= 2_500_000
                arr = np.frombuffer(chunk.array_bytes, dtype=np.float32).reshape(tuple(chunk.shape))
                j0, j1 = n_total, n_total + arr.shape[1]
                want = np.full(arr.shape, np.nan, dtype=np.float32)
                lo, hi = max(j0, off), min(j1, off + ref.shape[1])
                if hi > lo:
                    want[:, lo - j0:hi - j0] = ref[:, lo - off:hi - off]
                assert np.array_equal(arr, want, equal_nan=True), (j0, j1)
                n_total = j1
    finally:
        stop.set()
        sampler.join()
    assert n_total == 8 * 3600 * 256
    streamed = n_total * 8 * 4
    growth = peak[0] - base
    print(f"huge window: streamed {streamed / 2**20:.0f} MB, server RSS {base / 2**20:.0f} MB "
          f"-> peak {peak[0] / 2**20:.0f} MB (+{growth / 2**20:.0f} MB)")
    # cache budget (32 MB) + a few 2.5 MB chunks + allocator slack, far below the answer
    assert growth < 32 * 2**20 + 100 * 2**20, growth
    assert growth < streamed / 2


def test_small_chunks_equal_direct_reads(start_server, recordings):
    """CHUNK_BYTES=4096: many chunks per window, each cut on the grid, joined exactly."""
    h = start_server(CHUNK_BYTES="4096")
    c = Mef3Client(h.address, client_id="small-chunks")
    try:
        for name in ("offgrid", "fractional", "gaps", "staggered"):
            path = recordings[name]
            info = c.open_file(str(path))
            assert info["file_opened"], info["error_message"]
            for t0, t1 in [(info["start_uutc"] - 777, info["end_uutc"] + 1234),
                           (info["start_uutc"] + 3 * S + 333, info["end_uutc"] - 2 * S - 1)]:
                chunks = raw_read(h.address, path, [], t0, t1, client_id="small-chunks")
                assert len(chunks) > 2
                assert all(len(ch.array_bytes) <= 4096 for ch in chunks)
                joined = np.concatenate([np.frombuffer(ch.array_bytes, dtype=np.float32)
                                         .reshape(tuple(ch.shape)) for ch in chunks], axis=1)
                ref = direct_read(path, [], t0, t1)
                assert joined.shape == ref.shape, name
                assert np.array_equal(joined, ref, equal_nan=True), (name, t0, t1)
    finally:
        c.shutdown()


def test_sync_client_streams_without_a_thread_per_call(server_default_tiles, long_recording):
    """The sync client reads a stream on the caller's thread (gRPC's single-threaded
    unary-stream option): no "channel spin" thread is started per call, and a
    read of many chunks, stopped half way or read to the end, is exact."""
    t0, t1 = T0 + 77, T0 + 16 * 60 * S + 77
    with Mef3Client(server_default_tiles.address) as c:
        c.open_file(str(long_recording))
        call = c.stub.GetSignalRange(pb2.SignalRangeRequest(
            file_path=str(long_recording), channel_names=[], start_uutc=t0, end_uutc=t1),
            **c.call_options())
        before = threading.active_count()
        first = next(iter(call))
        assert not first.error_message
        assert threading.active_count() == before, "a thread was started for the stream"
        call.cancel()
        before = threading.active_count()
        res = c.get_signal_range(str(long_recording), [], t0, t1)
        assert threading.active_count() == before
    assert np.array_equal(res["array"], direct_read(long_recording, [], t0, t1), equal_nan=True)
