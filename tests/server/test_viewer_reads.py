"""Viewer reads end to end: cache_fs, n_points, GetEnvelope, RESPECT_MEF_BLOCKS.

Real servers on real ports, real MEF files; every answer is compared with a
value computed here straight from ``mef3io`` reads of the same spans.

The reduced (``cache_fs``) series used as the reference: for a channel at
``fs`` Hz served at ``c`` Hz with ``r = fs / c`` a whole number (and tiles
holding whole buckets), served sample ``g`` belongs to pair ``g // 2``, whose
bucket is native samples ``[pair * 2r, (pair + 1) * 2r)`` counted from the
channel's first sample; the pair is that bucket's min and max in time order.
"""
from __future__ import annotations

import threading
import warnings
from fractions import Fraction

import grpc
import numpy as np
import pytest

from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.reduction import bucket_edges, reduce_to_points
from mef3io_server.server.tile_grid import round_half_up, samples_in_window

from conftest import T0, direct_read, golden_cases, launch_server, random_walk, write_session

FS = 256.0
SECONDS = 600
N = int(FS * SECONDS)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """a, b at 256 Hz (b with a NaN gap and a spike), lo at 64 Hz; 10 minutes."""
    a = random_walk(N, seed=1)
    a[12345] = 5000.0                       # a spike that must survive every reduction
    b = random_walk(N, seed=2)
    b[50_000:70_000] = np.nan                # a gap
    b[90_001] = -4000.0
    lo = random_walk(N // 4, seed=3)
    path = tmp_path_factory.mktemp("viewer") / "viewer.mefd"
    return write_session(path, {"a": a, "b": (b, FS), "lo": (lo, 64.0)})


@pytest.fixture(scope="module")
def server():
    h = launch_server({"TILE_CACHE_MB": "128", "ENVELOPE_ROWS_PER_MESSAGE": "7"})
    yield h
    h.stop()


@pytest.fixture
def client(server, client_factory):
    return client_factory(server.address)


def reduced_reference(path, ch: str, fs: float, cache_fs: float, start: int, t0: int, t1: int):
    """The cache_fs series of ``ch`` over ``[t0, t1)``, from a direct native read."""
    r = int(round(fs / cache_fs))
    assert r * cache_fs == fs
    M = round_half_up(Fraction(t0 - start) * Fraction(cache_fs) / 10**6)
    n = samples_in_window(t0, t1, cache_fs)
    pairs = max(0, (M + n) // 2 + 1)
    series = np.full(2 * pairs, np.nan, dtype=np.float32)
    if pairs:
        native = direct_read(path, [ch], start, start + int(pairs * 2 * r * 10**6 / fs))[0]
        native = native[:pairs * 2 * r].reshape(pairs, 2 * r)
        for p in range(pairs):
            seg = native[p]
            if not np.isfinite(seg).any():
                continue
            i, j = int(np.nanargmin(seg)), int(np.nanargmax(seg))
            series[2 * p:2 * p + 2] = (seg[min(i, j)], seg[max(i, j)])
    out = np.full(n, np.nan, dtype=np.float32)     # before the channel's start: NaN
    lo = max(M, 0)
    if M + n > lo:
        out[lo - M:] = series[lo:M + n]
    return out


def assert_points(answer: np.ndarray, source: np.ndarray, n_points: int) -> None:
    """``answer`` is a valid n_points reduction of ``source`` (rows, N)."""
    assert answer.shape == (source.shape[0], n_points)
    e = bucket_edges(source.shape[1], n_points)
    for r in range(source.shape[0]):
        for k in range(n_points):
            seg = source[r, e[k]:e[k + 1]]
            if not np.isfinite(seg).any():
                assert np.isnan(answer[r, k])
            else:
                assert answer[r, k] in (np.nanmin(seg), np.nanmax(seg))
        if np.isfinite(source[r]).any():
            assert np.nanmax(source[r]) in answer[r] and np.nanmin(source[r]) in answer[r]


# ------------------------------------------------------------------ cache_fs

def test_cache_fs_serves_ordered_minmax_of_direct_reads(recording, client):
    info = client.open_file(str(recording), cache_fs=32)
    assert info["file_opened"], info["error_message"]
    assert info["cache_fs"] == 32.0
    assert info["channel_served_sampling_rates"] == [32.0, 32.0, 32.0]
    rng = np.random.default_rng(7)
    windows = [(T0, T0 + SECONDS * 10**6), (T0 + 1, T0 + 30_000_001)]
    windows += [(T0 + int(a), T0 + int(a) + int(d)) for a, d in
                zip(rng.integers(0, 500e6, 4), rng.integers(40_000, 90e6, 4))]
    for t0, t1 in windows:
        got = client.get_signal_range(str(recording), ["a", "b"], t0, t1)
        assert got["error_message"] == "" and got["fs"] == 32.0
        assert got["array"].shape == (2, samples_in_window(t0, t1, 32.0))
        for i, ch in enumerate(["a", "b"]):
            want = reduced_reference(recording, ch, FS, 32.0, T0, t0, t1)
            assert np.array_equal(got["array"][i], want, equal_nan=True), (ch, t0, t1)
    whole = client.get_signal_range(str(recording), ["a", "b"], T0, T0 + SECONDS * 10**6)["array"]
    assert np.nanmax(whole[0]) == 5000.0 and np.nanmin(whole[1]) == -4000.0   # spikes survive
    assert np.isnan(whole[1, 50_000 // 8 + 1:70_000 // 8 - 1]).all()          # the gap stays


def test_mixed_rates_need_allow_mixed_rates(recording, client):
    refused = client.open_file(str(recording), cache_fs=128)
    assert not refused["file_opened"]
    assert "lo" in refused["error_message"] and "allow_mixed_rates" in refused["error_message"]
    info = client.open_file(str(recording), cache_fs=128, allow_mixed_rates=True)
    assert info["file_opened"] and info["cache_fs"] == 128.0
    assert info["channel_served_sampling_rates"] == [128.0, 128.0, 64.0]
    t0, t1 = T0 + 5_000_000, T0 + 65_000_000
    lo = client.get_signal_range(str(recording), ["lo"], t0, t1)
    assert lo["fs"] == 64.0
    assert np.array_equal(lo["array"], direct_read(recording, ["lo"], t0, t1), equal_nan=True)
    a = client.get_signal_range(str(recording), ["a"], t0, t1)
    assert a["fs"] == 128.0
    assert np.array_equal(a["array"][0], reduced_reference(recording, "a", FS, 128, T0, t0, t1),
                          equal_nan=True)
    both = client.get_signal_range(str(recording), ["a", "lo"], t0, t1)
    assert both["array"] is None and "128" in both["error_message"] \
        and "64" in both["error_message"]
    for bad in (0, -1, float("nan"), float("inf")):
        r = client.open_file(str(recording), cache_fs=bad)
        assert not r["file_opened"] and "cache_fs" in r["error_message"]


def test_clients_at_different_rates_at_once_and_reopen(recording, server, client_factory):
    path = str(recording)
    rates = {"c32": 32.0, "c64": 64.0, "native": None}
    clients = {k: client_factory(server.address, client_id=k) for k in rates}
    for k, c in clients.items():
        assert c.open_file(path, cache_fs=rates[k])["file_opened"]
    t0, t1 = T0 + 100_000_000, T0 + 160_000_000
    results, errors = {}, []

    def read(k):
        try:
            for _ in range(3):
                results[k] = clients[k].get_signal_range(path, ["a", "b"], t0, t1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read, args=(k,)) for k in rates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert np.array_equal(results["native"]["array"], direct_read(recording, ["a", "b"], t0, t1),
                          equal_nan=True)
    for k in ("c32", "c64"):
        fs = rates[k]
        assert results[k]["fs"] == fs
        for i, ch in enumerate(["a", "b"]):
            assert np.array_equal(results[k]["array"][i],
                                  reduced_reference(recording, ch, FS, fs, T0, t0, t1),
                                  equal_nan=True)
    # Re-opening with another rate replaces the session's rate.
    info = clients["c32"].open_file(path, cache_fs=64)
    assert info["cache_fs"] == 64.0
    again = clients["c32"].get_signal_range(path, ["a", "b"], t0, t1)
    assert again["fs"] == 64.0
    assert np.array_equal(again["array"], results["c64"]["array"], equal_nan=True)
    assert clients["c32"].open_file(path)["cache_fs"] is None
    plain = clients["c32"].get_signal_range(path, ["a", "b"], t0, t1)
    assert plain["fs"] == FS and np.array_equal(plain["array"], results["native"]["array"],
                                                equal_nan=True)


# ------------------------------------------------------------------ n_points

def test_n_points_equals_minmaxlttb_of_direct_read(recording, client):
    path = str(recording)
    assert client.open_file(path)["file_opened"]
    for t0, t1, n in [(T0, T0 + SECONDS * 10**6, 1000), (T0 + 123_456, T0 + 77_777_777, 333),
                      (T0 + 180_000_000, T0 + 300_000_000, 2000)]:
        got = client.get_signal_range(path, ["a", "b"], t0, t1, n_points=n)
        assert got["error_message"] == ""
        assert got["fs"] == pytest.approx(n / ((t1 - t0) / 1e6))
        src = direct_read(recording, ["a", "b"], t0, t1)
        assert np.array_equal(got["array"], reduce_to_points(src, n), equal_nan=True)
        assert_points(got["array"], src, n)
    whole = client.get_signal_range(path, ["a", "b"], T0, T0 + SECONDS * 10**6, n_points=600)
    assert 5000.0 in whole["array"][0] and -4000.0 in whole["array"][1]
    gap = whole["array"][1, int(50_000 / 256) + 1:int(70_000 / 256)]
    assert gap.size > 50 and np.isnan(gap).all()        # the gap survives as a gap


def test_n_points_source_level_follows_cache_fs(recording, client):
    path = str(recording)
    assert client.open_file(path, cache_fs=32)["file_opened"]
    # 10 minutes at 32 Hz = 19200 >= 2 x 2000: the reduced tiles are the source.
    t0, t1 = T0, T0 + SECONDS * 10**6
    got = client.get_signal_range(path, ["a", "b"], t0, t1, n_points=2000)
    src = np.stack([reduced_reference(recording, ch, FS, 32, T0, t0, t1) for ch in "ab"])
    assert np.array_equal(got["array"], reduce_to_points(src, 2000), equal_nan=True)
    # 20 s at 32 Hz = 640 < 2 x 500: zoomed in, the native rate is the source.
    t0, t1 = T0 + 40_000_000, T0 + 60_000_000
    got = client.get_signal_range(path, ["a", "b"], t0, t1, n_points=500)
    src = direct_read(recording, ["a", "b"], t0, t1)
    assert got["fs"] == pytest.approx(25.0)
    assert np.array_equal(got["array"], reduce_to_points(src, 500), equal_nan=True)
    # 10 s at 32 Hz = 320 <= 500 points, but the native 2560 samples have detail: reduced from them.
    t0, t1 = T0 + 40_000_000, T0 + 50_000_000
    got = client.get_signal_range(path, ["a", "b"], t0, t1, n_points=500)
    src = direct_read(recording, ["a", "b"], t0, t1)
    assert got["fs"] == pytest.approx(50.0)
    assert np.array_equal(got["array"], reduce_to_points(src, 500), equal_nan=True)
    # 2 s: 512 native samples <= 600 points: the native window, unchanged.
    t0, t1 = T0 + 40_000_000, T0 + 42_000_000
    got = client.get_signal_range(path, ["a", "b"], t0, t1, n_points=600)
    assert got["fs"] == FS
    assert np.array_equal(got["array"], direct_read(recording, ["a", "b"], t0, t1),
                          equal_nan=True)


def test_n_points_never_upsamples_and_validates(recording, client):
    path = str(recording)
    assert client.open_file(path)["file_opened"]
    t0, t1 = T0 + 1_000_000, T0 + 2_000_000      # 256 samples
    plain = client.get_signal_range(path, ["a"], t0, t1)
    for n in (256, 1000, 2**62):
        got = client.get_signal_range(path, ["a"], t0, t1, n_points=n)
        assert got["fs"] == FS and np.array_equal(got["array"], plain["array"], equal_nan=True)
    for bad in (0, -1, -2**62):
        got = client.get_signal_range(path, ["a"], t0, t1, n_points=bad)
        assert got["array"] is None and "n_points" in got["error_message"]
    assert client.get_signal_range(path, ["a"], t0, t1, n_points=255)["array"].shape == (1, 255)


def test_n_points_streams_windows_larger_than_max_read(recording, start_server, client_factory):
    """An n_points read never holds the window: it works far above MAX_READ_MB."""
    h = start_server(MAX_READ_MB="0.5", POINTS_SOURCE_MB="0.1")
    c = client_factory(h.address)
    path = str(recording)
    assert c.open_file(path)["file_opened"]
    t0, t1 = T0, T0 + SECONDS * 10**6            # 2 x 153600 float32 = 1.2 MB
    assert "MAX_READ_MB" in c.get_signal_range(path, ["a", "b"], t0, t1)["error_message"]
    got = c.get_signal_range(path, ["a", "b"], t0, t1, n_points=1500)
    src = direct_read(recording, ["a", "b"], t0, t1)
    assert np.array_equal(got["array"], reduce_to_points(src, 1500), equal_nan=True)


# ------------------------------------------------------------------ envelope

@pytest.fixture(scope="module")
def blocky(tmp_path_factory):
    """Small blocks (many envelope rows), two segments with a gap, uneven writes."""
    path = tmp_path_factory.mktemp("blocky") / "blocky.mefd"
    x = random_walk(20_000, seed=5)
    y = random_walk(9_001, seed=6)
    z = random_walk(7_777, seed=7)
    gap_start = T0 + int((9_001 / FS + 3.3) * 1e6)
    return write_session(path, {"x": x, "y": [(y, FS, T0), (z, FS, gap_start)]},
                         block_length=100)


def block_envelope(path, ch, t0=None, t1=None):
    import mef3io
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path), warn_declarations=False)
        try:
            return r.block_envelope(ch, t0, t1)
        finally:
            r.close()


def test_envelope_equals_block_envelope_split_per_channel(blocky, server, client):
    path = str(blocky)
    assert client.open_file(path)["file_opened"]
    env = client.get_envelope(path)
    assert list(env) == ["x", "y"]
    for ch in ("x", "y"):
        want = block_envelope(blocky, ch)
        assert want["start_uutc"].size >= 150
        for k in ("start_uutc", "end_uutc", "min", "max"):
            assert np.array_equal(env[ch][k], want[k], equal_nan=True), (ch, k)
    # The raw stream: one channel per message, at most ENVELOPE_ROWS_PER_MESSAGE (7) rows.
    with grpc.insecure_channel(server.address) as chan:
        stub = pb2_grpc.gRPCMef3ServerStub(chan)
        msgs = list(stub.GetEnvelope(pb2.EnvelopeRequest(file_path=path, channel_names=["y"]),
                                     metadata=(("x-mef3io-client-id", client.client_id),)))
    assert len(msgs) == -(-block_envelope(blocky, "y")["start_uutc"].size // 7)
    assert all(m.channel_name == "y" and 0 < len(m.start_uutc) <= 7 for m in msgs)
    starts = np.concatenate([np.asarray(m.start_uutc) for m in msgs])
    assert (np.diff(starts) > 0).all()                    # in order


def test_envelope_windows_and_errors(blocky, client, write_recording):
    path = str(blocky)
    assert client.open_file(path)["file_opened"]
    t0, t1 = T0 + 10_000_000, T0 + 40_000_000
    for a, b in ((t0, t1), (t0, None), (None, t1)):
        got = client.get_envelope(path, ["y", "x"], a, b)
        assert list(got) == ["y", "x"]
        for ch in ("x", "y"):
            want = block_envelope(blocky, ch, a, b)
            for k in want:
                assert np.array_equal(got[ch][k], want[k], equal_nan=True)
    with pytest.raises(RuntimeError, match="nope"):
        client.get_envelope(path, ["x", "nope"])
    with pytest.raises(RuntimeError, match="inverted"):
        client.get_envelope(path, ["x"], t1, t0)
    closed = write_recording("never_opened", {"x": random_walk(1000)})
    with pytest.raises(RuntimeError, match="not open"):
        client.get_envelope(str(closed))
    with pytest.raises(RuntimeError, match="no MEF session"):
        client.get_envelope(path + "x.mefd")


# ------------------------------------------------------------------ RESPECT_MEF_BLOCKS

def _windows(start, end, fs, rng, k=6):
    span = end - start
    out = [(start, end), (start - 500_000, start + span // 3), (start + span // 2, end + 700_000)]
    for _ in range(k):
        a = start + int(rng.integers(0, span - 1))
        out.append((a, a + int(rng.integers(int(2e6 / fs) + 1, span))))
    return out


@pytest.fixture(scope="module")
def block_server():
    h = launch_server({"RESPECT_MEF_BLOCKS": "1", "TILE_DURATION_S": "1.3",
                       "TILE_CACHE_MB": "64"})
    yield h
    h.stop()


@pytest.mark.parametrize("name,case", golden_cases() or [("absent", None)],
                         ids=[n for n, _ in golden_cases()] or ["absent"])
def test_respect_mef_blocks_reads_equal_direct_reads_on_golden(name, case, golden, block_server,
                                                               client_factory):
    path = golden / f"{name}.mefd"
    password = case.get("password") or ""
    c = client_factory(block_server.address)
    info = c.open_file(str(path), password=password or None)
    assert info["file_opened"], info["error_message"]
    rng = np.random.default_rng(len(name))
    for ch, fs, s, e in zip(info["channel_names"], info["channel_sampling_rates"],
                            info["channel_start_uutc"], info["channel_end_uutc"]):
        for t0, t1 in _windows(s, e, fs, rng):
            got = c.get_signal_range(str(path), [ch], t0, t1)
            assert got["error_message"] == ""
            assert np.array_equal(got["array"], direct_read(path, [ch], t0, t1, password),
                                  equal_nan=True), (name, ch, t0, t1)


def test_respect_mef_blocks_on_gaps_and_uneven_blocks(blocky, block_server, client_factory):
    path = str(blocky)
    c = client_factory(block_server.address)
    assert c.open_file(path)["file_opened"]
    rng = np.random.default_rng(11)
    for ch in ("x", "y"):
        info = c.get_file_info(path)
        i = info["channel_names"].index(ch)
        s, e = info["channel_start_uutc"][i], info["channel_end_uutc"][i]
        for t0, t1 in _windows(s, e, FS, rng, k=10):
            got = c.get_signal_range(path, [ch], t0, t1)
            assert np.array_equal(got["array"], direct_read(blocky, [ch], t0, t1),
                                  equal_nan=True), (ch, t0, t1)
    # Reduced tiles on block edges: still the min-max of the native spans.
    assert c.open_file(path, cache_fs=64)["file_opened"]
    t0, t1 = T0 + 2_000_000, T0 + 70_000_000
    got = c.get_signal_range(path, ["x"], t0, t1)
    assert got["fs"] == 64.0
    assert np.array_equal(got["array"][0], reduced_reference(blocky, "x", FS, 64, T0, t0, t1),
                          equal_nan=True)


# ------------------------------------------------------------------ any window, any rate

@pytest.fixture(scope="module")
def engine():
    from mef3io_server.server.config import load_settings
    from mef3io_server.server.engine import Engine

    e = Engine(load_settings({"TILE_CACHE_MB": "64", "PREFETCH_AHEAD_WINDOWS": "0",
                              "PREFETCH_BEHIND_WINDOWS": "0"}))
    yield e
    e.close()


def _joined(read) -> np.ndarray:
    parts = [rows for _, _, _, rows in read.chunks]
    return np.concatenate(parts, axis=1)


def test_exact_lengths_and_values_for_any_window_and_rate(recording, engine):
    """In-process (no network): every window at every rate has exactly the promised samples."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    path = str(recording)

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(st.sampled_from([16.0, 32.0, 64.0, 128.0, 50.0, 100.0, 256.0, None]),
           st.integers(-5_000_000, 605_000_000), st.integers(1, 120_000_000),
           st.one_of(st.none(), st.integers(1, 5000)))
    def check(cache_fs, off, dur, n_points):
        engine.open_file("any", path, cache_fs=cache_fs, allow_mixed_rates=True)
        served = min(FS, cache_fs or FS)
        t0, t1 = T0 + off, T0 + off + dur
        n = samples_in_window(t0, t1, served)
        if n == 0:
            with pytest.raises(Exception, match="holds no samples"):
                engine.read_signal("any", path, ["a", "b"], t0, t1, n_points)
            return
        read = engine.read_signal("any", path, ["a", "b"], t0, t1, n_points)
        got = _joined(read)
        if n_points is not None:
            if served < FS and n < 2 * n_points:
                served, n = FS, samples_in_window(t0, t1, FS)     # zoomed in: native source
            if n > n_points:
                assert got.shape == (2, n_points) and read.n_samples == n_points
                assert read.fs == n_points / (dur / 1e6)
                return
        assert got.shape == (2, n) and read.fs == served
        if cache_fs is None or served == FS:
            assert np.array_equal(got, direct_read(recording, ["a", "b"], t0, t1),
                                  equal_nan=True)
        elif FS % served == 0:
            want = reduced_reference(recording, "a", FS, served, T0, t0, t1)
            assert np.array_equal(got[0], want, equal_nan=True)
        else:
            # A non-whole ratio (256 -> 50, 100 Hz): buckets of 5 or 6 native samples
            # inside each tile; every served value is still a native sample of "a".
            native = direct_read(recording, ["a"], T0 - 10**6, T0 + (SECONDS + 1) * 10**6)[0]
            assert np.isin(got[0][np.isfinite(got[0])], native).all()

    check()


# ------------------------------------------------------------------ the published client

PUBLISHED_PYTHON = "/work/ref/venv/bin/python"

PUBLISHED_SCRIPT = r'''
import json, sys
import numpy as np
from mef3io_server.client import Mef3Client   # the published 3.1.0 client
addr, path, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Mef3Client(addr, client_id="published-client")
info = c.open_file(path, cache_fs=32)
r = c.get_signal_range(path, ["a", "b"], t0, t1)
p = c.get_signal_range(path, ["a", "b"], t0, t1, n_points=500)
e = c.get_envelope(path, ["a"], t0, t1)
np.savez(sys.argv[5], reduced=r["array"], points=p["array"], fs=[r["fs"], p["fs"]],
         env_start=e["a"]["start_uutc"], env_min=e["a"]["min"], env_max=e["a"]["max"])
print(json.dumps({"served": info["channel_served_sampling_rates"], "cache_fs": info["cache_fs"]}))
'''


@pytest.mark.skipif(not __import__("os").path.exists(PUBLISHED_PYTHON),
                    reason="the published mef3io-server 3.1.0 is not installed in /work/ref/venv")
def test_published_client_reads_the_same_from_this_server(recording, server, client_factory,
                                                          tmp_path):
    """The published client (its own process and venv) against this server: same answers."""
    import json
    import subprocess

    script = tmp_path / "published_client.py"
    script.write_text(PUBLISHED_SCRIPT)
    t0, t1 = T0 + 30_000_000, T0 + 330_000_000
    out = tmp_path / "published.npz"
    done = subprocess.run([PUBLISHED_PYTHON, str(script), server.address, str(recording),
                           str(t0), str(t1), str(out)], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    assert meta == {"served": [32.0, 32.0, 32.0], "cache_fs": 32.0}
    got = np.load(out)
    ours = client_factory(server.address)
    ours.open_file(str(recording), cache_fs=32)
    assert np.array_equal(got["reduced"], ours.get_signal_range(str(recording), ["a", "b"], t0,
                                                                t1)["array"], equal_nan=True)
    assert np.array_equal(got["points"], ours.get_signal_range(str(recording), ["a", "b"], t0, t1,
                                                               n_points=500)["array"],
                          equal_nan=True)
    assert list(got["fs"]) == [32.0, 500 / 300]
    want = block_envelope(recording, "a", t0, t1)
    assert np.array_equal(got["env_start"], want["start_uutc"])
    assert np.array_equal(got["env_min"], want["min"], equal_nan=True)
    assert np.array_equal(got["env_max"], want["max"], equal_nan=True)


def test_cached_n_points_answers_follow_appends(write_recording, start_server, client_factory):
    """An n_points answer is cached; an append on disk must not serve the stale one."""
    import mef3io

    path = write_recording("growing", {"a": random_walk(2560, seed=9)})
    h = start_server(REFRESH_INTERVAL_S="0")
    c = client_factory(h.address)
    assert c.open_file(str(path))["file_opened"]
    t0, t1 = T0, T0 + 20_000_000
    first = c.get_signal_range(str(path), ["a"], t0, t1, n_points=100)["array"]
    assert np.isnan(first[0, 50:]).all() and np.isfinite(first[0, :50]).all()
    assert np.array_equal(c.get_signal_range(str(path), ["a"], t0, t1, n_points=100)["array"],
                          first, equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path)) as w:
            w.write("a", random_walk(2560, seed=10) + 1000, T0 + 10_000_000, fs=FS)
    again = c.get_signal_range(str(path), ["a"], t0, t1, n_points=100)["array"]
    assert np.array_equal(again, reduce_to_points(direct_read(path, ["a"], t0, t1), 100),
                          equal_nan=True)
    assert np.isfinite(again).all()


def test_tiles_shared_within_a_rate_never_across_rates(recording, engine):
    """Two sessions at one rate decode a window once; another rate has tiles of its own."""
    path = str(recording)
    t0, t1 = T0 + 200_000_000, T0 + 260_000_000
    stats = engine.store.stats
    answers = {}
    for client_id, rate in (("s1", 16.0), ("s2", 16.0), ("s3", 8.0)):
        engine.open_file(client_id, path, cache_fs=rate)
        before = stats.tiles_decoded
        answers[client_id] = _joined(engine.read_signal(client_id, path, ["a"], t0, t1))
        answers[client_id + "_decoded"] = stats.tiles_decoded - before
    assert answers["s1_decoded"] > 0
    assert answers["s2_decoded"] == 0                 # same rate: the cached tiles
    assert np.array_equal(answers["s1"], answers["s2"], equal_nan=True)
    assert answers["s3_decoded"] > 0                  # another rate: its own tiles
    assert answers["s3"].shape[1] == answers["s1"].shape[1] // 2
    assert np.array_equal(answers["s3"][0], reduced_reference(recording, "a", FS, 8, T0, t0, t1),
                          equal_nan=True)
