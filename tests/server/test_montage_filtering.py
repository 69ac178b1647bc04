"""The pure pieces of derived reads: montage parsing and NaN rules, filter design, the
padding and its tolerance, gap runs, rate groups."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from mef3io_server.server import filtering
from mef3io_server.server.errors import BadRequest
from mef3io_server.server.mixed_rates import rate_groups
from mef3io_server.server.montage import apply_montage, parse_montage


def test_montage_inputs_signature_and_zero_weights():
    m = parse_montage([("a-b", ["a", "b"], [1, -1], []), ("c-avg", ["c", "z"], [1, 0],
                                                         ["a", "b", "c"])])
    assert m.names == ["a-b", "c-avg"]
    assert m.inputs == ("a", "b", "c")           # z has weight 0: not read
    assert m.signature != parse_montage([("a-b", ["a", "b"], [1, -2], [])]).signature


@pytest.mark.parametrize("items, words", [
    ([], "no derived channel"),
    ([("", ["a"], [1], [])], "no name"),
    ([("x", ["a"], [1], []), ("x", ["b"], [1], [])], "named twice"),
    ([("x", ["a", "b"], [1], [])], "2 inputs but 1 weights"),
    ([("x", ["a"], [float("inf")], [])], "finite"),
    ([("x", ["a", "a"], [1, 1], [])], "more than once"),
    ([("x", ["a"], [0.0], [])], "no input with a non-zero weight"),
])
def test_bad_montages_are_named(items, words):
    with pytest.raises(BadRequest, match=words):
        parse_montage(items)


def test_montage_nan_rules():
    x = np.array([[1.0, np.nan, 3.0, np.nan],
                  [10.0, 20.0, np.nan, np.nan],
                  [100.0, 200.0, 300.0, np.nan]])
    m = parse_montage([("a-b", ["a", "b"], [1, -1], []),
                       ("a-avg", ["a"], [1], ["a", "b", "c"]),
                       ("c-avg", ["c"], [1], ["a", "b", "c"])])
    y = apply_montage(m, ["a", "b", "c"], x)
    np.testing.assert_array_equal(y[0], [-9.0, np.nan, np.nan, np.nan])
    avg = np.array([37.0, 110.0, 151.5, np.nan])          # over the channels with data
    np.testing.assert_allclose(y[1], [1 - 37.0, np.nan, 3 - 151.5, np.nan])
    np.testing.assert_allclose(y[2], x[2] - avg)


def test_a_montage_applied_in_blocks_of_rows_is_the_montage_applied_whole():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 50)).astype(np.float32)
    x[1, 5:9] = np.nan
    m = parse_montage([("a-b", ["a", "b"], [1, -1], []),
                       ("w", ["c", "d", "a"], [0.25, -3.5, 2.0], []),
                       ("b-avg", ["b"], [1], ["a", "b", "c", "d"]),
                       ("avg-only", [], [], ["a", "b", "c", "d"]),
                       ("-d", ["d"], [-1], [])])
    whole = apply_montage(m, ["a", "b", "c", "d"], x)
    averages: dict = {}
    parts = [apply_montage(m, ["a", "b", "c", "d"], x, range(r, min(5, r + 2)), averages)
             for r in range(0, 5, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len(averages) == 1                    # the shared average computed once
    np.testing.assert_array_equal(whole[1], 0.25 * x[2].astype(np.float64)
                                  - 3.5 * x[3].astype(np.float64) + 2.0 * x[0].astype(np.float64))
    np.testing.assert_array_equal(whole[4], -x[3].astype(np.float64))


@pytest.mark.parametrize("items, words", [
    ([("wobble", [1.0], None, None)], "kind must be one of"),
    ([("bandpass", [1.0], None, None)], "takes 2"),
    ([("lowpass", [-1.0], None, None)], "positive"),
    ([("highpass", [1.0], 9, None)], "order must be 1 to 8"),
    ([("notch", [50.0], None, 0.0)], "q must be positive"),
    ([("lowpass", [10.0], None, None)] * 9, "at most 8"),
])
def test_bad_filters_are_named(items, words):
    with pytest.raises(BadRequest, match=words):
        filtering.parse_filters(items)


def test_design_is_scipys_cascade_and_checks_nyquist():
    specs = filtering.parse_filters([("bandpass", [0.5, 70], None, None),
                                     ("notch", [60.0], None, 25.0)])
    sos = filtering.design(specs, 256.0)
    want = np.concatenate([signal.butter(2, [0.5, 70], "bandpass", output="sos", fs=256.0),
                           signal.tf2sos(*signal.iirnotch(60.0, 25.0, fs=256.0))])
    np.testing.assert_array_equal(sos, want)
    with pytest.raises(BadRequest, match="Nyquist"):
        filtering.design(specs, 128.0)


def test_runs_of():
    assert filtering.runs_of(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == [(0, 2), (3, 4), (6, 7)]
    assert filtering.runs_of(np.zeros(3, bool)) == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), start=st.integers(0, 30_000), length=st.integers(1, 5000),
       low=st.sampled_from([0.3, 0.5, 1.0, 2.0]), notch_hz=st.sampled_from([50.0, 60.0]))
def test_a_padded_window_equals_the_whole_run_within_tolerance(seed, start, length, low,
                                                               notch_hz):
    """The stated promise: within TOLERANCE of the largest |sample| of the padded span."""
    fs = 256.0
    rng = np.random.default_rng(seed)
    n = 40_000
    t = np.arange(n) / fs
    x = np.cumsum(rng.standard_normal(n)) * 3 + 50 * np.sin(2 * np.pi * notch_hz * t)
    specs = filtering.parse_filters([("bandpass", [low, 70.0], None, None),
                                     ("notch", [notch_hz], None, None)])
    sos = filtering.design(specs, fs)
    p = filtering.padding_samples(specs, fs)
    whole = signal.sosfiltfilt(sos, x)
    start = min(start, n - length)
    a, b = max(0, start - p), min(n, start + length + p)
    got = filtering.filter_runs(sos, x[None, a:b])[0][start - a:start - a + length]
    err = np.abs(got - whole[start:start + length]).max()
    assert err <= filtering.TOLERANCE * np.abs(x[a:b]).max()


def test_filter_runs_restart_at_gaps_and_group_rows():
    fs = 256.0
    sos = filtering.design(filtering.parse_filters([("highpass", [1.0], None, None)]), fs)
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.standard_normal((3, 3000)), axis=1)
    x[:2, 1000:1200] = np.nan                    # rows 0 and 1 share a gap, row 2 has none
    x[2, 5] = np.nan
    y = filtering.filter_runs(sos, x)
    np.testing.assert_allclose(y[0, :1000], signal.sosfiltfilt(sos, x[0, :1000]))
    np.testing.assert_allclose(y[1, 1200:], signal.sosfiltfilt(sos, x[1, 1200:]))
    assert np.isnan(y[:2, 1000:1200]).all() and np.isnan(y[2, 5])
    np.testing.assert_allclose(y[2, 6:], signal.sosfiltfilt(sos, x[2, 6:]))
    # a run of a few samples (shorter than SciPy's default padding) is filtered too
    assert np.isfinite(y[2, :5]).all()


def test_padding_grows_as_the_cut_off_falls_and_very_low_ones_are_refused():
    pad = [filtering.padding_samples(filtering.parse_filters([("highpass", [hz], None, None)]),
                                     256.0) for hz in (5.0, 1.0, 0.5, 0.1)]
    assert pad == sorted(pad) and pad[-1] > 5 * pad[1]          # ~1/hz
    with pytest.raises(BadRequest, match="ring for more than"):
        filtering.padding_samples(filtering.parse_filters([("highpass", [0.001], 8, None)]),
                                  256.0)


def test_rate_groups_keep_first_appearance_order():
    assert rate_groups([256, 512, 256, 64, 512]) == [(256.0, [0, 2]), (512.0, [1, 4]),
                                                     (64.0, [3])]


@pytest.mark.parametrize("preload", ["true", "false"])
def test_scipy_filters_are_loaded_before_the_port_opens_only_when_preloaded(start_server,
                                                                            preload):
    """PRELOAD_FILTERS: a server that listens has loaded SciPy's signal module (its
    compiled parts are mapped in the process), so its first filtered read does not
    wait 1.2 s for it; with false it loads them on the first filter."""
    h = start_server(PRELOAD_FILTERS=preload)
    with open(f"/proc/{h.proc.pid}/maps") as f:
        mapped = "scipy/signal/" in f.read()
    assert mapped == (preload == "true")
