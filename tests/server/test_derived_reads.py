"""Montages and filters end to end: a real server, real MEF files, SciPy and NumPy as oracles.

Every served window is compared with the same montage (NumPy) and the same
filters (SciPy, designed here from the documented parameters, run with
``sosfiltfilt`` over each whole gap-free run) applied to a direct mef3io read
of the whole recording -- the long stretch. Windows start off the 10 s tile
grid, straddle tile edges, gaps (a NaN run and a MEF discontinuity between
segments) and the recording's ends; consecutive pages are joined and checked
for seams.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from mef3io_server.exceptions import ReadFailed
from mef3io_server.montages import (Derived, average_reference, bandpass, bipolar, highpass,
                                    lowpass, notch, reference)
from mef3io_server.server.derived_reads import BLOCK_BYTES
from mef3io_server.server.filtering import TOLERANCE
from mef3io_server.server.reduction import reduce_to_points

from conftest import T0, direct_read, launch_server, random_walk, write_session

FS = 256.0
SEG = 300                       # seconds per segment
N = int(FS * SEG)
GAP_US = 7_000_000              # a discontinuity of 7 s between the two segments
T1 = T0 + SEG * 10**6 + GAP_US  # start of the second segment
NAMES = ["Fp1", "F3", "C3", "P3"]
NOTCH_Q = 30.0


def _signals(seed: int, n: int) -> np.ndarray:
    t = np.arange(n) / FS
    x = random_walk(n, seed) + 40.0 * np.sin(2 * np.pi * 50.0 * t) \
        + 20.0 * np.sin(2 * np.pi * 10.0 * t + seed)
    return x


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Fp1, F3, C3, P3 at 256 Hz: two 5-minute segments 7 s apart; C3 has a 20 s NaN run
    in the first segment, Fp1 a spike."""
    chans = {}
    for i, name in enumerate(NAMES):
        a = _signals(10 + i, N)
        b = _signals(20 + i, N)
        if name == "C3":
            a[20_000:25_120] = np.nan
        if name == "Fp1":
            a[40_001] = 3000.0
        chans[name] = [(a, FS, T0), (b, FS, T1)]
    path = tmp_path_factory.mktemp("derived") / "derived.mefd"
    return write_session(path, chans)


@pytest.fixture(scope="module")
def long_stretch(recording):
    """The whole recording, read directly: ``(names, rows)`` at 256 Hz from T0."""
    end = T1 + SEG * 10**6
    return direct_read(recording, NAMES, T0, end)


@pytest.fixture(scope="module")
def server():
    # POINTS_SOURCE_MB small: an overview is computed in several padded pieces (~8 000
    # samples of 4 inputs each), whose joins the overview test checks.
    h = launch_server({"TILE_CACHE_MB": "128", "POINTS_SOURCE_MB": "0.5"})
    yield h
    h.stop()


@pytest.fixture
def client(server, client_factory, recording):
    c = client_factory(server.address, raise_errors=True)
    c.open_file(str(recording))
    return c


def sos_for(filters) -> np.ndarray:
    """The cascade designed here from the documented parameters (the oracle's)."""
    parts = []
    for kind, hz, order, q in filters:
        if kind == "notch":
            b, a = signal.iirnotch(hz[0], q, fs=FS)
            parts.append(signal.tf2sos(b, a))
        else:
            parts.append(signal.butter(order, hz if len(hz) > 1 else hz[0], btype=kind,
                                       output="sos", fs=FS))
    return np.concatenate(parts)


def filtfilt_runs(sos, x: np.ndarray) -> np.ndarray:
    """``sosfiltfilt`` over each gap-free run of a 1-D series (the whole-run reference)."""
    out = np.full(x.shape, np.nan)
    ok = np.concatenate(([False], np.isfinite(x), [False]))
    edges = np.flatnonzero(ok[1:] != ok[:-1])
    for a, b in zip(edges[0::2], edges[1::2]):
        out[a:b] = signal.sosfiltfilt(sos, x[a:b])
    return out


def window_index(t0: int) -> int:
    """Sample index (from T0) of uUTC ``t0`` on the 256 Hz grid."""
    return int(round((t0 - T0) * FS / 1e6))


def served(client, recording, t0, t1, **kw) -> np.ndarray:
    return client.get_signal_range(str(recording), None, t0, t1, **kw)


def us(samples: int) -> int:
    return int(round(samples * 1e6 / FS))


# ---------------------------------------------------------------- montages

def test_bipolar_equals_numpy_difference_exactly(client, recording, long_stretch):
    pairs = [("Fp1", "F3"), ("F3", "C3"), ("C3", "P3")]
    x = dict(zip(NAMES, long_stretch))
    for start in (us(1000), us(2555), us(19_800), us(N - 700)):   # tile edges, gap, segment end
        t0 = T0 + start
        t1 = t0 + us(2560 + 13)
        res = served(client, recording, t0, t1, montage=bipolar(pairs))
        assert res["channel_names"] == ["Fp1-F3", "F3-C3", "C3-P3"]
        assert res["fs"] == FS
        i = window_index(t0)
        want = np.stack([(x[a][i:i + res["array"].shape[1]] - x[b][i:i + res["array"].shape[1]])
                         for a, b in pairs]).astype(np.float32)
        np.testing.assert_array_equal(res["array"], want)
    assert np.isnan(res["array"]).any()           # the last window reaches past segment 1


def test_reference_and_weights_and_text_pairs(client, recording, long_stretch):
    x = dict(zip(NAMES, long_stretch))
    t0 = T0 + us(12_345)
    t1 = t0 + us(3000)
    i = window_index(t0)
    m = reference(["Fp1", "F3", "P3"], "C3") + bipolar(["Fp1-P3"]) \
        + [Derived("mix", {"Fp1": 0.5, "F3": 0.25, "P3": -2.0})]
    res = served(client, recording, t0, t1, montage=m)
    n = res["array"].shape[1]
    assert res["channel_names"] == ["Fp1-C3", "F3-C3", "P3-C3", "Fp1-P3", "mix"]
    s = {k: v[i:i + n].astype(np.float64) for k, v in x.items()}
    want = np.stack([s["Fp1"] - s["C3"], s["F3"] - s["C3"], s["P3"] - s["C3"],
                     s["Fp1"] - s["P3"], 0.5 * s["Fp1"] + 0.25 * s["F3"] - 2.0 * s["P3"]])
    np.testing.assert_allclose(res["array"], want.astype(np.float32), rtol=1e-6, atol=1e-4)


def test_average_reference_uses_the_channels_with_data(client, recording, long_stretch):
    """Across C3's NaN run the average is over Fp1, F3, P3; C3-avg is NaN there."""
    x = np.asarray(long_stretch, dtype=np.float64)
    t0 = T0 + us(19_000)
    t1 = t0 + us(8000)
    i = window_index(t0)
    res = served(client, recording, t0, t1, montage=average_reference(NAMES))
    n = res["array"].shape[1]
    s = x[:, i:i + n]
    avg = np.nanmean(s, axis=0)
    want = (s - avg).astype(np.float32)
    np.testing.assert_allclose(res["array"], want, rtol=1e-5, atol=1e-3)
    c3 = res["array"][2]
    assert np.isnan(c3[20_000 - i:25_120 - i]).all()
    assert np.isfinite(res["array"][0][20_000 - i:25_120 - i]).all()   # the others go on


def test_a_long_average_reference_window_is_computed_in_blocks_of_rows_exactly(
        client, recording, long_stretch):
    """A window long enough that its derived rows are computed in several blocks (the
    average shared between them): the same as NumPy's, row by row, NaN rules too."""
    n = N - 1000
    assert BLOCK_BYTES // (8 * n) < len(NAMES)           # the premise: more than one block
    x = np.asarray(long_stretch, dtype=np.float64)[:, 500:500 + n]
    res = served(client, recording, T0 + us(500), T0 + us(500 + n),
                 montage=average_reference(NAMES))
    want = (x - np.nanmean(x, axis=0)).astype(np.float32)
    np.testing.assert_allclose(res["array"], want, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.isnan(res["array"]), np.isnan(want))


def test_montage_then_n_points_reduces_the_difference(client, recording, long_stretch):
    """MinMaxLTTB of the difference, not the difference of reductions."""
    x = dict(zip(NAMES, long_stretch))
    t0 = T0
    t1 = T0 + us(N)
    res = served(client, recording, t0, t1, montage=bipolar([("Fp1", "F3")]), n_points=1000)
    diff = (x["Fp1"][:N] - x["F3"][:N]).astype(np.float32)[None]
    np.testing.assert_array_equal(res["array"], reduce_to_points(diff, 1000))
    assert res["array"].max() >= 2900        # the spike survives


def test_an_identity_montage_is_the_recorded_channel(client, recording):
    t0, t1 = T0 + us(777), T0 + us(777 + 5000)
    plain = client.get_signal_range(str(recording), ["C3"], t0, t1)
    derived = served(client, recording, t0, t1, montage={"C3 again": {"C3": 1.0}})
    assert derived["channel_names"] == ["C3 again"]
    np.testing.assert_array_equal(derived["array"], plain["array"])


def test_cache_fs_reduces_the_derived_native_samples(server, client_factory, recording,
                                                     long_stretch):
    """In a session at 64 Hz: order-preserving min-max (2 samples per 8 native) of the
    native difference, buckets counted from the window's start."""
    from mef3io_server.server.reduction import minmax_ordered

    c = client_factory(server.address, raise_errors=True)
    c.open_file(str(recording), cache_fs=64.0)
    x = dict(zip(NAMES, long_stretch))
    t0 = T0 + us(4096)
    t1 = t0 + 10 * 10**6
    res = c.get_signal_range(str(recording), None, t0, t1, montage=bipolar([("Fp1", "F3")]))
    assert res["fs"] == 64.0 and res["array"].shape == (1, 640)
    i = window_index(t0)
    diff = (x["Fp1"][i:i + 2560].astype(np.float64) - x["F3"][i:i + 2560])[None]
    np.testing.assert_array_equal(res["array"], minmax_ordered(diff, 320).astype(np.float32))
    ov = c.get_signal_range(str(recording), None, T0, T0 + us(N), n_points=500,
                            montage=bipolar([("Fp1", "F3")]))
    full = (x["Fp1"][:N].astype(np.float64) - x["F3"][:N]).astype(np.float32)[None]
    np.testing.assert_array_equal(ov["array"], reduce_to_points(full, 500))


# ---------------------------------------------------------------- filters

FILTERS = [("bandpass", (0.5, 70.0), 2, None), ("notch", (50.0,), None, NOTCH_Q)]
CLIENT_FILTERS = [bandpass(0.5, 70), notch(50)]


def reference_filtered(long_stretch, pairs, filters):
    x = dict(zip(NAMES, long_stretch))
    sos = sos_for(filters)
    rows = [x[a].astype(np.float64) - x[b] for a, b in pairs]
    return np.stack([filtfilt_runs(sos, r) for r in rows])


def assert_within_tolerance(got, want, what):
    both = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), both), f"{what}: NaN where the reference has data"
    err = np.abs(got[both] - want[both]).max()
    scale = np.abs(want[both]).max()
    assert err <= TOLERANCE * scale + 1e-3, f"{what}: off by {err} (scale {scale})"
    return err / scale


@pytest.mark.parametrize("start_s", [0.0, 3.3, 39.99, 77.7, 297.0, 310.0])
def test_filtered_bipolar_window_equals_the_whole_run_filter(client, recording, long_stretch,
                                                             start_s):
    """Windows at the recording's start, off the tile grid, over C3's NaN run (through the
    F3-C3 derivation), at the end of segment 1 and into segment 2 (after the gap)."""
    pairs = [("Fp1", "F3"), ("F3", "C3")]
    want_all = reference_filtered(long_stretch, pairs, FILTERS)
    t0 = T0 + us(int(round(start_s * FS)))
    t1 = t0 + 10 * 10**6
    res = served(client, recording, t0, t1, montage=bipolar(pairs), filters=CLIENT_FILTERS)
    i = window_index(t0)
    got = res["array"].astype(np.float64)
    assert_within_tolerance(got, want_all[:, i:i + got.shape[1]], f"window at {start_s} s")


def test_a_window_off_the_sample_grid_is_filtered_on_its_own_samples(client, recording,
                                                                      long_stretch):
    """t0 between two samples: the filtered window holds the filter of the very samples a
    plain read of that window holds (the padding is read on the same grid)."""
    t0 = T0 + 123 * 10**6 + 1_001          # 1 ms after a whole second: between samples
    t1 = t0 + 10 * 10**6
    plain = client.get_signal_range(str(recording), ["P3"], t0, t1)["array"][0]
    x = long_stretch[NAMES.index("P3")]
    i = window_index(t0) - 2 + int(np.flatnonzero(
        [np.array_equal(x[k:k + plain.size], plain) for k in range(window_index(t0) - 2,
                                                                   window_index(t0) + 3)])[0])
    got = client.get_signal_range(str(recording), ["P3"], t0, t1,
                                  filters=[highpass(0.5)])["array"][0].astype(np.float64)
    sos = sos_for([("highpass", (0.5,), 2, None)])
    want = filtfilt_runs(sos, x.astype(np.float64))[i:i + got.size]
    assert_within_tolerance(got[None], want[None], "off-grid window")


def test_filters_restart_at_gaps_without_ringing_across(client, recording, long_stretch):
    """Next to C3's NaN run the filtered F3-C3 matches the run's own filter, exactly
    where the run's edge lies inside the read (no padding reaches across the gap)."""
    pairs = [("F3", "C3")]
    want = reference_filtered(long_stretch, pairs, FILTERS)[0]
    t0 = T0 + us(25_120)               # first sample after the NaN run
    res = served(client, recording, t0, t0 + us(2560), montage=bipolar(pairs),
                 filters=CLIENT_FILTERS)
    got = res["array"][0].astype(np.float64)
    np.testing.assert_allclose(got[:256], want[25_120:25_120 + 256], rtol=1e-5, atol=1e-3)


def test_consecutive_pages_join_without_seams(client, recording, long_stretch):
    pairs = [("Fp1", "F3"), ("C3", "P3")]
    page = 10 * 10**6
    t0 = T0 + 60 * 10**6 + 1_234_375           # off the tile grid (a multiple of 15625 us)
    pages = [served(client, recording, t0 + k * page, t0 + (k + 1) * page,
                    montage=bipolar(pairs), filters=CLIENT_FILTERS)["array"] for k in range(4)]
    joined = np.concatenate(pages, axis=1).astype(np.float64)
    one = served(client, recording, t0, t0 + 4 * page, montage=bipolar(pairs),
                 filters=CLIENT_FILTERS)["array"].astype(np.float64)
    assert np.array_equal(np.isnan(joined), np.isnan(one))    # C3's NaN run, in C3-P3
    assert np.isnan(joined[1]).any()
    scale = np.nanmax(np.abs(one))
    assert np.nanmax(np.abs(joined - one)) <= TOLERANCE * scale
    want = reference_filtered(long_stretch, pairs, FILTERS)
    i = window_index(t0)
    assert_within_tolerance(joined, want[:, i:i + joined.shape[1]], "four pages")
    # the step across each seam is like any other step of the series
    steps = np.abs(np.diff(joined[0]))
    seams = [p.shape[1] * k - 1 for k, p in enumerate(pages, 1)][:-1]
    assert steps[seams].max() <= np.percentile(steps, 99.9)


def test_filtered_recorded_channels_without_montage(client, recording, long_stretch):
    sos = sos_for([("highpass", (1.0,), 4, None), ("lowpass", (40.0,), 3, None)])
    t0 = T0 + us(5000)
    res = client.get_signal_range(str(recording), ["P3", "Fp1"], t0, t0 + us(4000),
                                  filters=[highpass(1.0, order=4), lowpass(40.0, order=3)])
    i = window_index(t0)
    x = dict(zip(NAMES, long_stretch))
    for row, name in zip(res["array"], ["P3", "Fp1"]):
        want = filtfilt_runs(sos, x[name].astype(np.float64))[i:i + row.size]
        assert_within_tolerance(row.astype(np.float64)[None], want[None], name)


def test_filtered_overview_has_the_shape_of_the_pages(client, recording, long_stretch):
    """n_points over the whole first segment = MinMaxLTTB of the long-stretch filter."""
    pairs = [("Fp1", "F3")]
    want = reference_filtered(long_stretch, pairs, FILTERS)[:, :N].astype(np.float32)
    res = served(client, recording, T0, T0 + us(N), montage=bipolar(pairs),
                 filters=CLIENT_FILTERS, n_points=2000)
    assert res["array"].shape == (1, 2000)
    ref = reduce_to_points(want, 2000)
    scale = np.abs(want).max()
    # points are real samples chosen per bucket; a value within tolerance may win a bucket
    # at another position, so compare the per-bucket extremes' envelope
    assert np.abs(np.sort(res["array"][0]) - np.sort(ref[0])).max() <= 10 * TOLERANCE * scale
    warm = served(client, recording, T0, T0 + us(N), montage=bipolar(pairs),
                  filters=CLIENT_FILTERS, n_points=2000)
    np.testing.assert_array_equal(warm["array"], res["array"])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, words", [
    (dict(montage=bipolar([("Fp1", "Nope")])), "Nope"),
    (dict(montage=[Derived("x", {"Fp1": float("nan")})]), "finite"),
    (dict(montage=bipolar([("Fp1", "F3")]) * 2), "named twice"),
    (dict(filters=[lowpass(200.0)]), "Nyquist"),
    (dict(filters=[highpass(0.0001, order=8)]), "ring"),
    (dict(filters=[bandpass(30, 10)]), "below the high edge"),
])
def test_bad_montages_and_filters_are_named(client, recording, kw, words):
    with pytest.raises(ReadFailed, match=words):
        client.get_signal_range(str(recording), None if "montage" in kw else ["Fp1"],
                                T0, T0 + 10**7, **kw)
    res = client.get_signal_range(str(recording), ["Fp1"], T0, T0 + 10**6)   # still serving
    assert res["array"].shape == (1, 256)


def test_montage_with_channel_names_is_refused(client, recording):
    with pytest.raises(ReadFailed, match="either channel_names or a montage"):
        client.get_signal_range(str(recording), ["Fp1"], T0, T0 + 10**6,
                                montage=bipolar([("Fp1", "F3")]))


def test_async_client_reads_montages_too(server, recording, long_stretch):
    import asyncio

    from mef3io_server.aio import AsyncMef3Client

    async def main():
        async with AsyncMef3Client(server.address) as c:
            await c.open_file(str(recording))
            return await c.get_signal_range(str(recording), None, T0, T0 + 10**7,
                                            montage=bipolar([("F3", "P3")]))
    res = asyncio.run(main())
    x = dict(zip(NAMES, long_stretch))
    np.testing.assert_array_equal(res["array"][0], (x["F3"] - x["P3"])[:2560])


# ---------------------------------------------------------------- cache (engine, in process)

def test_derived_answers_are_cached_by_what_they_are_made_of(recording):
    """A repeated derived page is a cache lookup (no new tile read); another montage,
    another filter or another window is computed anew, never served from the wrong entry;
    the next page is computed ahead."""
    from mef3io_server.server.config import Settings
    from mef3io_server.server.derived_reads import DerivedSpec
    from mef3io_server.server.engine import Engine
    from mef3io_server.server.filtering import parse_filters
    from mef3io_server.server.montage import parse_montage

    eng = Engine(Settings(port=0, tile_duration_s=10.0))
    eng.start()
    try:
        eng.open_file("a", str(recording))

        def read(pairs, filters, t0):
            spec = DerivedSpec(parse_montage([(f"{a}-{b}", [a, b], [1, -1], [])
                                              for a, b in pairs]),
                               parse_filters(filters))
            r = eng.read_signal("a", str(recording), [], t0, t0 + 10**7, derived=spec)
            return np.concatenate([rows for _, _, _, rows in r.chunks], axis=1)

        bp = [("bandpass", [0.5, 70], None, None)]
        t0 = T0 + 20 * 10**6
        first = read([("Fp1", "F3")], bp, t0)
        stats = eng.derived.stats
        assert (stats.computed, stats.cache_hits) == (1, 0)
        again = read([("Fp1", "F3")], bp, t0)
        np.testing.assert_array_equal(again, first)
        assert (stats.computed, stats.cache_hits) == (1, 1)     # a lookup, nothing computed
        other_filter = read([("Fp1", "F3")], [("bandpass", [1.0, 70], None, None)], t0)
        other_montage = read([("Fp1", "C3")], bp, t0)
        assert not np.array_equal(other_filter, first)
        assert not np.array_equal(other_montage, first)
        assert stats.computed == 3
        # the next page was computed ahead: reading it is a lookup
        import time
        deadline = time.monotonic() + 30
        while eng.derived.stats.computed_ahead < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        computed = eng.derived.stats.computed
        nxt = read([("Fp1", "F3")], bp, t0 + 10**7)
        assert eng.derived.stats.computed == computed, "the next page was not computed ahead"
        before = read([("Fp1", "F3")], bp, t0 - 10**7)      # the page before: not ahead
        assert eng.derived.stats.computed == computed + 1 and before.shape == nxt.shape
    finally:
        eng.close()
