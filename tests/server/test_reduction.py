"""Property tests of the reductions (``cache_fs`` min-max and ``n_points`` MinMaxLTTB).

References are written out plainly here (a Python loop per bucket), so the
vectorised code is checked against the definition in the module docstring.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Each example runs real numpy/tsdownsample code; keep the suite short on a shared machine.
FAST = settings(max_examples=40, deadline=None)

from mef3io_server.server.reduction import (PointReducer, bucket_edges, bucket_extremes,
                                            minmax_ordered, reduce_to_points)

# Values are float32 with NaN gaps; small integers make ties (repeated extremes) common.
values = st.one_of(st.integers(-5, 5).map(float), st.just(float("nan")),
                   st.floats(-1e6, 1e6, width=32))


def signals(min_len=1, max_len=120, rows=st.integers(1, 3)):
    return rows.flatmap(lambda r: st.integers(min_len, max_len).flatmap(
        lambda n: hnp.arrays(np.float32, (r, n), elements=values)))


def reference_pairs(row: np.ndarray, pairs: int) -> np.ndarray:
    """The cache_fs reduction by its definition."""
    out = []
    e = [(i * row.size) // pairs for i in range(pairs + 1)]
    for i in range(pairs):
        seg = row[e[i]:e[i + 1]]
        fin = [j for j in range(seg.size) if np.isfinite(seg[j])]
        if not fin:
            out += [np.nan, np.nan]
            continue
        jmin = min(fin, key=lambda j: (seg[j], j))
        jmax = min(fin, key=lambda j: (-seg[j], j))
        out += [seg[min(jmin, jmax)], seg[max(jmin, jmax)]] if jmin != jmax else [seg[jmin]] * 2
    return np.array(out, dtype=np.float32)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 500))
def test_bucket_edges_cover_the_window_evenly(n, b):
    e = bucket_edges(n, b)
    assert e[0] == 0 and e[-1] == n and e.size == b + 1
    w = np.diff(e)
    assert (w >= 0).all() and w.max() - w.min() <= 1


@FAST
@given(signals(), st.integers(1, 200))
def test_minmax_ordered_is_its_definition(x, pairs):
    out = minmax_ordered(x, pairs)
    assert out.shape == (x.shape[0], 2 * pairs) and out.dtype == np.float32
    for r in range(x.shape[0]):
        assert np.array_equal(out[r], reference_pairs(x[r], pairs), equal_nan=True)


@FAST
@given(signals(min_len=2), st.integers(1, 100))
def test_minmax_ordered_keeps_every_bucket_extreme_in_time_order(x, pairs):
    out = minmax_ordered(x, pairs)
    e = bucket_edges(x.shape[1], pairs)
    for r in range(x.shape[0]):
        for i in range(pairs):
            seg = x[r, e[i]:e[i + 1]]
            a, b = out[r, 2 * i], out[r, 2 * i + 1]
            if not np.isfinite(seg).any():
                assert np.isnan(a) and np.isnan(b)     # a gap stays a gap
                continue
            assert {a, b} == {np.nanmin(seg), np.nanmax(seg)}
            # each value is a sample of its bucket, the first one occurring first
            ia = int(np.flatnonzero(seg == a)[0])
            ib = int(np.flatnonzero(seg == b)[0])
            assert ia <= ib or a == b


def test_minmax_ordered_keeps_a_spike_at_any_rate():
    x = np.zeros(10_000, dtype=np.float32)
    x[4321] = 99.0
    x[777] = -5.0
    for pairs in (1, 3, 10, 333, 5000):
        out = minmax_ordered(x, pairs)
        assert out.max() == 99.0 and out.min() == -5.0


def check_points(x: np.ndarray, n_out: int, pos: np.ndarray, val: np.ndarray) -> None:
    """Everything an n_points answer promises, for window ``x`` (rows, N)."""
    rows, N = x.shape
    assert pos.shape == val.shape == (rows, n_out) and val.dtype == np.float32
    e = bucket_edges(N, n_out)
    for r in range(rows):
        for k in range(n_out):
            seg = x[r, e[k]:e[k + 1]]
            if not np.isfinite(seg).any():
                assert pos[r, k] == -1 and np.isnan(val[r, k])    # NaN gaps survive as gaps
                continue
            p = pos[r, k]
            assert e[k] <= p < e[k + 1]                  # a sample of its own bucket
            assert val[r, k] == x[r, p]                  # a real sample, not invented
            assert val[r, k] in (np.nanmin(seg), np.nanmax(seg))   # its min or max
        got = pos[r][pos[r] >= 0]
        assert (np.diff(got) > 0).all()                  # order preserved
        if np.isfinite(x[r]).any():
            lo, hi = np.nanmin(x[r]), np.nanmax(x[r])
            k_lo = int(np.searchsorted(e, np.flatnonzero(x[r] == lo)[0], side="right")) - 1
            k_hi = int(np.searchsorted(e, np.flatnonzero(x[r] == hi)[0], side="right")) - 1
            if k_lo != k_hi:                             # both fit: both are kept
                assert lo in val[r] and hi in val[r]
            else:
                assert lo in val[r] or hi in val[r]


@FAST
@given(signals(min_len=1, max_len=150), st.data())
def test_points_are_real_bucket_extremes_in_order(x, data):
    n_out = data.draw(st.integers(1, x.shape[1]))
    red = PointReducer(x.shape[0], x.shape[1], n_out)
    red.feed(x)
    pos, val = red.result()
    check_points(x, n_out, pos, val)


@FAST
@given(signals(min_len=2, max_len=150), st.data())
def test_streaming_equals_one_shot_for_any_chunking(x, data):
    n_out = data.draw(st.integers(1, x.shape[1]))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, x.shape[1] - 1), max_size=8))))
    whole = PointReducer(x.shape[0], x.shape[1], n_out)
    whole.feed(x)
    parts = PointReducer(x.shape[0], x.shape[1], n_out)
    for a, b in zip([0] + cuts, cuts + [x.shape[1]]):
        parts.feed(x[:, a:b])
    for u, v in zip(whole.result(), parts.result()):
        assert np.array_equal(u, v, equal_nan=True)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 3000), st.integers(1, 800), st.integers(0, 2**32 - 1))
def test_exact_number_of_points_for_any_length(n, n_out, seed):
    assume(n_out <= n)
    x = np.cumsum(np.random.default_rng(seed).standard_normal((2, n)), axis=1).astype(np.float32)
    out = reduce_to_points(x, n_out)
    assert out.shape == (2, n_out) and np.isfinite(out).all()


def test_never_upsampled():
    x = np.arange(10, dtype=np.float32)[None, :]
    assert reduce_to_points(x, 10) is not None
    assert np.array_equal(reduce_to_points(x, 10), x)
    assert np.array_equal(reduce_to_points(x, 50), x)
    with pytest.raises(ValueError, match="never upsampled"):
        PointReducer(1, 5, 6)
    with pytest.raises(ValueError, match="at least 1"):
        PointReducer(1, 5, 0)


def test_gap_in_the_middle_stays_in_the_middle():
    x = np.sin(np.arange(100_000, dtype=np.float32) / 300)[None, :].copy()
    x[0, 40_000:60_000] = np.nan
    out = reduce_to_points(x, 1000)
    assert np.isnan(out[0, 400:600]).all()
    assert np.isfinite(out[0, :400]).all() and np.isfinite(out[0, 600:]).all()


def test_points_follow_the_line_shape():
    """MinMaxLTTB picks the max on a rising edge's peak bucket and the min in a trough."""
    t = np.arange(20_000, dtype=np.float64)
    x = (np.sin(t / 1000) * 100).astype(np.float32)[None, :]
    out = reduce_to_points(x, 200)
    assert out[0].max() == x.max() and out[0].min() == x.min()
    # The reduced line stays within one bucket's range of the true curve.
    e = bucket_edges(x.shape[1], 200)
    for k in range(200):
        seg = x[0, e[k]:e[k + 1]]
        assert seg.min() <= out[0, k] <= seg.max()


@FAST
@given(signals(min_len=1, max_len=200), st.data(), st.sampled_from([None, 8, 24, 100]))
def test_bucket_extremes_on_uneven_edges(x, data, block_bytes):
    """... also when worked on in blocks of buckets, and very wide buckets in pieces
    (``block_bytes``: the work size, made tiny so small inputs take those paths)."""
    import mef3io_server.server.reduction as reduction

    cuts = sorted(data.draw(st.lists(st.integers(0, x.shape[1]), min_size=1, max_size=10)))
    edges = np.array([0] + cuts + [x.shape[1]])
    saved = reduction._BLOCK_BYTES
    reduction._BLOCK_BYTES = block_bytes or saved
    try:
        lp, lv, hp, hv = bucket_extremes(x, edges)
    finally:
        reduction._BLOCK_BYTES = saved
    for r in range(x.shape[0]):
        for i in range(edges.size - 1):
            seg = x[r, edges[i]:edges[i + 1]]
            if not np.isfinite(seg).any():
                assert lp[r, i] == hp[r, i] == -1 and np.isnan(lv[r, i]) and np.isnan(hv[r, i])
                continue
            assert lv[r, i] == np.nanmin(seg) and hv[r, i] == np.nanmax(seg)
            assert lp[r, i] == edges[i] + np.flatnonzero(seg == lv[r, i])[0]
            assert hp[r, i] == edges[i] + np.flatnonzero(seg == hv[r, i])[0]


@pytest.mark.parametrize("n_total,n_out,s0,s1,piece", [
    (10_000, 100, 3_000, 7_001, 512), (10_000, 7, 0, 9_999, 1000), (5_000, 2000, 1, 4_999, 333),
    (123_457, 3, 50_000, 50_010, 4), (9_000, 100, 4_500, 4_500, 10)])
def test_skipping_the_no_data_parts_equals_feeding_nans(n_total, n_out, s0, s1, piece):
    """PointReducer.skip (used for n_points windows reaching past the recording) gives
    exactly what feeding the NaN samples would."""
    from mef3io_server.server.reduction import PointReducer

    rng = np.random.default_rng(n_total + n_out)
    x = np.full((2, n_total), np.nan, dtype=np.float32)
    x[:, s0:s1] = rng.standard_normal((2, s1 - s0)).astype(np.float32)
    x[1, s0:s0 + (s1 - s0) // 3] = np.nan          # a gap inside the data too
    fed = PointReducer(2, n_total, n_out)
    for j in range(0, n_total, piece):
        fed.feed(x[:, j:j + piece])
    skipped = PointReducer(2, n_total, n_out)
    skipped.skip(s0)
    for j in range(s0, s1, piece):
        skipped.feed(x[:, j:min(s1, j + piece)])
    skipped.skip(n_total - s1)
    (p1, v1), (p2, v2) = fed.result(), skipped.result()
    assert np.array_equal(p1, p2)
    assert np.array_equal(v1, v2, equal_nan=True)


# ---------------------------------------------------------------- memory (issue 19, item 2)


def test_a_bucket_spanning_many_chunks_keeps_extremes_not_samples():
    """Chunks feeding one bucket used to be concatenated (memory grew with the data)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    chunk = rng.standard_normal((4, 1 << 20)).astype(np.float32)    # 16 MB
    n_chunks = 24
    red = PointReducer(4, n_chunks * chunk.shape[1], 3)             # 1 bucket spans 8 chunks
    tracemalloc.start()
    try:
        for i in range(n_chunks):
            red.feed(chunk if i != 11 else chunk * 3)               # extremes in chunk 11
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"{peak / 2**20:.0f} MB held to reduce 16 MB chunks"
    pos, val = red.result()
    lo = (chunk * 3).min(axis=1)
    hi = (chunk * 3).max(axis=1)
    assert set(np.round(val[:, 1], 5)) <= set(np.round(np.r_[lo, hi], 5))
    assert np.all((pos[:, 1] >= 11 * chunk.shape[1]) & (pos[:, 1] < 12 * chunk.shape[1]))


def _peak_rss_during(pid, fn):
    """``fn()``'s result and the server's largest RSS (bytes) while it ran."""
    import threading

    import psutil

    proc = psutil.Process(pid)
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def watch():
        while not done.wait(0.01):
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        return fn(), peak[0]
    finally:
        done.set()
        t.join()


def test_huge_n_points_and_repeated_names_stay_small(tmp_path, start_server):
    """A window starting years before the data, with n_points in the millions or channel
    names repeated hundreds of times: refused clearly, or served within memory."""
    import psutil

    from conftest import T0, random_walk, write_session
    from mef3io_server.client import Mef3Client

    hour = 3600 * 10**6
    path = write_session(tmp_path / "h.mefd", {f"c{i}": random_walk(256 * 3600, i)
                                               for i in range(8)})
    h = start_server()
    years = T0 - 5 * 365 * 86400 * 10**6
    with Mef3Client(h.address, client_id="big", timeout=120) as c:
        assert c.open_file(str(path))["file_opened"]
        base = psutil.Process(h.proc.pid).memory_info().rss
        res, peak = _peak_rss_during(h.proc.pid, lambda: c.get_signal_range(
            str(path), ["c0", "c1", "c2", "c3"], years, T0 + hour, n_points=10_000_000))
        assert "POINTS_MEMORY_MB" in res["error_message"] and res["array"] is None
        assert peak - base < 100 << 20, f"{(peak - base) / 2**20:.0f} MB"

        names = [f"c{i % 8}" for i in range(256)]
        res, peak = _peak_rss_during(h.proc.pid, lambda: c.get_signal_range(
            str(path), names, years, T0 + hour, n_points=2000))
        assert res["error_message"] == "" and res["array"].shape == (256, 2000)
        assert peak - base < 150 << 20, f"{(peak - base) / 2**20:.0f} MB"
        once = c.get_signal_range(str(path), [f"c{i}" for i in range(8)], years, T0 + hour,
                                  n_points=2000)["array"]
        assert np.array_equal(res["array"], np.tile(once, (32, 1)), equal_nan=True)
        assert np.isfinite(once).any()
