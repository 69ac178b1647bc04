"""The tile grid: pure functions from windows to tiles and back (plus mef3io's rounding)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import direct_read
from mef3io_server.server import tile_grid as tg

T0 = 1_600_000_000_000_000
RATES = [256.0, 250.0, 1000.0, 512.5, 30000.0, 0.5, 2048.0, 1.0 / 3.0, 999.9]


# ---------------------------------------------------------------- samples_in_window


@pytest.mark.parametrize("t0,t1,fs,n", [
    (0, 1_000_000, 256.0, 256),
    (0, 500, 1000.0, 1),        # exactly half a sample rounds up
    (0, 1500, 1000.0, 2),
    (0, 2500, 1000.0, 3),       # half-up, not banker's (which would give 2)
    (0, 499, 1000.0, 0),
    (0, 1953, 256.0, 0),        # 0.49992 samples
    (0, 1954, 256.0, 1),
    (5, 5, 256.0, 0),           # empty
    (10, 5, 256.0, 0),          # inverted
    (0, 86_400 * 10**6, 30000.0, 86_400 * 30000),
])
def test_samples_in_window_values(t0, t1, fs, n):
    assert tg.samples_in_window(t0, t1, fs) == n


def test_round_half_up():
    assert tg.round_half_up(Fraction(1, 2)) == 1
    assert tg.round_half_up(Fraction(5, 2)) == 3
    assert tg.round_half_up(Fraction(-1, 2)) == 0
    assert tg.round_half_up(Fraction(-3, 2)) == -1
    assert tg.round_half_up(Fraction(49, 100)) == 0


def test_samples_in_window_matches_mef3io(write_recording):
    """mef3io's own rounding of the sample count, on windows of many lengths."""
    path = write_recording("rounding", {"a": np.arange(5000.0)}, fs=1000.0)
    for dur in (500, 1500, 2500, 3499, 3500, 3501, 10_000, 123_456):
        got = direct_read(path, ["a"], T0 + 7, T0 + 7 + dur)
        assert got.shape[1] == tg.samples_in_window(T0 + 7, T0 + 7 + dur, 1000.0), dur
    path = write_recording("rounding256", {"a": np.arange(5000.0)}, fs=256.0)
    for dur in (1953, 1954, 5859, 5860, 1_000_000, 3_906_250 + 1953):
        got = direct_read(path, ["a"], T0, T0 + dur)
        assert got.shape[1] == tg.samples_in_window(T0, T0 + dur, 256.0), dur


@given(st.integers(-10**15, 10**15), st.integers(0, 10**12), st.sampled_from(RATES))
def test_samples_in_window_exact(t0, dur, fs):
    n = tg.samples_in_window(t0, t0 + dur, fs)
    exact = Fraction(dur) * Fraction(fs) / 10**6
    assert n == math.floor(exact + Fraction(1, 2)) if dur > 0 else n == 0
    assert abs(n - exact) <= Fraction(1, 2)


# ---------------------------------------------------------------- exact periods and tile sizes


@pytest.mark.parametrize("fs,q", [(256.0, 4), (250.0, 1), (512.5, 41), (1000.0, 1), (30000.0, 3)])
def test_exact_period_samples(fs, q):
    assert tg.exact_period_samples(fs) == q
    span = Fraction(q * 10**6) / Fraction(fs)
    assert span.denominator == 1


def test_exact_period_none_for_awkward_rate():
    assert tg.exact_period_samples(1.0 / 3.0, limit=1000) is None


@pytest.mark.parametrize("dur,fs,L", [(10.0, 256.0, 2560), (1.0, 512.5, 533), (0.001, 1.0, 1),
                                      (60.0, 250.0, 15000)])
def test_choose_tile_samples(dur, fs, L):
    assert tg.choose_tile_samples(dur, fs) == L


@given(st.floats(0.001, 3600.0), st.sampled_from(RATES), st.none() | st.integers(1, 100_000))
def test_choose_tile_samples_properties(dur, fs, block):
    L = tg.choose_tile_samples(dur, fs, block)
    base = max(1, int(round(dur * fs)))
    assert L >= 1 and L >= base
    if block:
        assert L % block == 0 and L < base + block
    else:
        q = tg.exact_period_samples(fs)
        if q and q <= base:
            assert L % q == 0 and L < base + q
        else:
            assert L == base


# ---------------------------------------------------------------- grid and plans


def test_tile_windows_are_contiguous_and_exact():
    g = tg.TileGrid(T0, 256.0, 2560)
    assert g.tile_window(0) == (T0, T0 + 10_000_000)
    assert g.tile_window(3) == (T0 + 30_000_000, T0 + 40_000_000)
    g = tg.TileGrid(T0, 512.5, 533)
    for k in range(-3, 50):
        a, b = g.tile_window(k)
        assert b == g.tile_window(k + 1)[0]
        assert tg.samples_in_window(a, b, 512.5) == 533
        assert abs(g.tile_phase(k)) < Fraction(1, 2)


def test_tiles_for_span():
    g = tg.TileGrid(0, 1000.0, 100)
    assert list(g.tiles_for_span(0, 100)) == [0]
    assert list(g.tiles_for_span(99, 101)) == [0, 1]
    assert list(g.tiles_for_span(-1, 1)) == [-1, 0]
    assert list(g.tiles_for_span(5, 5)) == []


def test_plan_inside_one_tile():
    g = tg.TileGrid(T0, 1000.0, 100)
    plan = tg.plan_window(g, T0 + 10_000, 50)
    assert plan.offset == 10 and plan.phase == 0
    assert plan.pieces == (tg.TilePiece(0, 10, 60, 0, 50),)


def test_plan_across_edges_and_before_anchor():
    g = tg.TileGrid(T0, 1000.0, 100)
    plan = tg.plan_window(g, T0 - 20_000, 250)
    assert [p.tile for p in plan.pieces] == [-1, 0, 1, 2]
    assert plan.pieces[0] == tg.TilePiece(-1, 80, 100, 0, 20)
    assert plan.pieces[-1] == tg.TilePiece(2, 0, 30, 220, 250)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RATES[:7]), st.integers(1, 5000), st.integers(-10**10, 10**10),
       st.integers(1, 20_000), st.data())
def test_plan_window_covers_exactly(fs, L, t_off, n, data):
    g = tg.TileGrid(T0, fs, L)
    j0 = data.draw(st.integers(0, n - 1))
    j1 = data.draw(st.integers(j0 + 1, n))
    plan = tg.plan_window(g, T0 + t_off, n, j0, j1)
    # Pieces cover [j0, j1) in order, without overlap, each inside its tile.
    pos = j0
    for p in plan.pieces:
        assert p.out_start == pos and p.out_stop > p.out_start
        assert 0 <= p.tile_start < p.tile_stop <= L
        assert p.tile_stop - p.tile_start == p.out_stop - p.out_start
        # window sample j is grid sample j + M, and grid sample g is tile g // L at g % L
        assert p.tile * L + p.tile_start == p.out_start + plan.offset
        pos = p.out_stop
    assert pos == j1
    assert -Fraction(1, 2) <= plan.phase < Fraction(1, 2)


# ---------------------------------------------------------------- phases


def test_block_phases_on_and_off_grid():
    g = tg.TileGrid(T0, 1000.0, 100)
    starts = np.array([T0, T0 + 5000, T0 + 5250, T0 + 5500, T0 + 5750])
    np.testing.assert_allclose(tg.block_phases(g, starts), [0, 0, 0.25, -0.5, -0.25])
    assert tg.block_phases(g, np.array([], dtype=np.int64)).size == 0


def test_slicing_is_exact_rules():
    g = tg.TileGrid(T0, 1000.0, 100)
    assert tg.slicing_is_exact(g, Fraction(0), 0, np.array([]))
    assert tg.slicing_is_exact(g, Fraction(0), 0, np.array([0.0, 0.2]))
    assert not tg.slicing_is_exact(g, Fraction(0), 0, np.array([0.0, 0.4999]))
    assert not tg.slicing_is_exact(g, Fraction(2, 5), 0, np.array([-0.2]))


# ---------------------------------------------------------------- chunks


@pytest.mark.parametrize("nch,budget,mult,per", [
    (1, 2_500_000, 1, 625_000), (16, 2_500_000, 1, 39_062), (16, 2_500_000, 4, 39_060),
    (1_000_000, 2_500_000, 4, 1), (3, 10, 1, 1)])
def test_chunk_samples(nch, budget, mult, per):
    assert tg.chunk_samples(nch, budget, multiple_of=mult) == per


@given(st.integers(1, 5000), st.integers(4096, 64 * 2**20), st.integers(1, 50))
def test_chunk_samples_within_budget(nch, budget, mult):
    per = tg.chunk_samples(nch, budget, multiple_of=mult)
    assert per >= 1
    if nch * 4 <= budget:
        assert per * nch * 4 <= budget


@given(st.integers(0, 100_000), st.integers(1, 50_000))
def test_chunk_bounds_partition(n, per):
    b = tg.chunk_bounds(n, per)
    if n == 0:
        assert b == []
        return
    assert b[0][0] == 0 and b[-1][1] == n
    for (a0, a1), (b0, _) in zip(b, b[1:]):
        assert a1 == b0
    assert all(0 < j1 - j0 <= per for j0, j1 in b)
    assert len(b) == -(-n // per)
