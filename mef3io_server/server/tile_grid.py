"""The tile grid: pure functions from a time window to tiles and back to samples.

Like the chunk grid of zarr, this module knows nothing about files, caches or
networks. A channel served at ``fs`` Hz is cut into tiles of ``tile_samples``
consecutive samples of ONE regular grid anchored at ``anchor_uutc`` (the
channel's first sample): grid sample ``g`` stands at
``anchor_uutc + g * 1e6 / fs`` uUTC and tile ``k`` holds grid samples
``[k * L, (k + 1) * L)``. Tile ``k`` is decoded as the mef3io read of the
half-open window ``[tile_start(k), tile_start(k + 1))``.

Windows are half-open, ``[t0, t1)`` in uUTC, and hold
``round_half_up((t1 - t0) * fs / 1e6)`` samples, sample ``j`` standing at
``t0 + j * 1e6 / fs`` -- exactly mef3io's rule. A request window is served by
slicing tiles when that is provably the same as a direct read: every data
sample in the tile must fall on the same side of the half-sample boundary on
the request's grid as on the tile's grid. :func:`plan_window` decides this from
the phases of the MEF blocks (from the block index; see
:func:`block_phases`) and marks tiles where it cannot be guaranteed; those
channels are then read directly.

All arithmetic on times is exact (integers and ``fractions.Fraction``), so
windows days long at tens of kHz lose no sample to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

#: Data samples this close (in samples) to a request's half-sample boundary are
#: not trusted to land identically on two grids: such tiles are read directly.
PHASE_TOLERANCE = 1e-3

_MICRO = 10**6


def round_half_up(x: Fraction) -> int:
    """``floor(x + 1/2)`` for an exact rational: mef3io's rounding of sample counts."""
    return math.floor(x + Fraction(1, 2))


@lru_cache(maxsize=4096)
def _rate(fs: float) -> Fraction:
    return Fraction(fs)


@lru_cache(maxsize=4096)
def _rate_terms(fs: float) -> tuple[int, int]:
    """``(2 * p, 2 * q * 10**6)`` for ``fs = p / q`` exactly (see :func:`samples_in_window`)."""
    r = Fraction(fs)
    return 2 * r.numerator, 2 * r.denominator * _MICRO


def samples_in_window(t0: int, t1: int, fs: float) -> int:
    """Samples a ``[t0, t1)`` window holds at ``fs`` Hz (0 for an empty or inverted one):
    ``round_half_up((t1 - t0) * fs / 10**6)``, exactly, in integer arithmetic."""
    if t1 <= t0:
        return 0
    num, den = _rate_terms(fs)
    return (int(t1 - t0) * num + den // 2) // den


def exact_period_samples(fs: float, limit: int = 1_000_000) -> Optional[int]:
    """Smallest ``q`` such that ``q`` samples at ``fs`` last a whole number of uUTC.

    ``None`` when no such ``q <= limit`` exists (an irrational-looking rate).
    256 Hz -> 4 (15625 us), 250 Hz -> 1, 512.5 Hz -> 41.
    """
    period = Fraction(_MICRO) / _rate(fs)   # microseconds per sample, exact
    q = period.denominator
    return q if q <= limit else None


def choose_tile_samples(tile_duration_s: float, fs: float,
                        block_samples: Optional[int] = None) -> int:
    """Samples per tile for a channel at ``fs`` Hz.

    ``round(tile_duration_s * fs)``, at least 1; rounded up to a whole number of
    MEF blocks when ``block_samples`` is given (``RESPECT_MEF_BLOCKS``),
    otherwise up to a multiple of :func:`exact_period_samples` when that keeps it
    within 2x, so every tile starts on an exact microsecond.
    """
    L = max(1, int(round(tile_duration_s * fs)))
    if block_samples:
        b = max(1, int(block_samples))
        return max(b, -(-L // b) * b)
    q = exact_period_samples(fs)
    if q and q <= L:
        L = -(-L // q) * q
    return L


@lru_cache(maxsize=1 << 16)
def _tile_start(anchor_uutc: int, fs: float, tile_samples: int, k: int) -> int:
    """:meth:`TileGrid.tile_start`, memoized: exact ``Fraction`` arithmetic, asked
    for every channel and tile a read or a prefetch plan touches."""
    return anchor_uutc + round_half_up(Fraction(k * tile_samples * _MICRO) / _rate(fs))


@dataclass(frozen=True)
class TileGrid:
    """One channel's tiling at one served rate."""

    anchor_uutc: int   # time of grid sample 0 (the channel's first sample), uUTC
    fs: float          # served sampling rate, Hz
    tile_samples: int  # L: samples per tile

    def tile_start(self, k: int) -> int:
        """Start of tile ``k`` in uUTC (the tile window is ``[start(k), start(k+1))``)."""
        return _tile_start(self.anchor_uutc, self.fs, self.tile_samples, int(k))

    def tile_window(self, k: int) -> tuple[int, int]:
        return self.tile_start(k), self.tile_start(k + 1)

    def tile_phase(self, k: int) -> Fraction:
        """Where tile ``k``'s own grid sits on this grid, in samples (|x| < 1 / period_us).

        ``tile_start(k)`` is rounded to a whole microsecond, so tile ``k``'s
        sample ``i`` stands at grid position ``k * L + i + tile_phase(k)``;
        exactly 0 when tiles span whole microseconds.
        """
        exact = Fraction(k * self.tile_samples * _MICRO) / _rate(self.fs)
        return (self.tile_start(k) - self.anchor_uutc - exact) * _rate(self.fs) / _MICRO

    def grid_position(self, t: int) -> Fraction:
        """Exact position of time ``t`` on this grid, in samples (may be fractional)."""
        return Fraction(t - self.anchor_uutc) * _rate(self.fs) / _MICRO

    def tiles_for_span(self, g0: int, g1: int) -> range:
        """Tiles holding grid samples ``[g0, g1)``."""
        if g1 <= g0:
            return range(0)
        L = self.tile_samples
        return range(g0 // L, (g1 - 1) // L + 1)


@lru_cache(maxsize=4096)
def tile_windows(grid: TileGrid, ks: tuple) -> tuple[list[int], list[int]]:
    """Starts and ends (uUTC) of tiles ``ks`` of ``grid``: asked for every channel of
    a read or a prefetch plan, computed once."""
    win = [grid.tile_window(k) for k in ks]
    return [a for a, _ in win], [b for _, b in win]


@lru_cache(maxsize=4096)
def tiles_aligned(grid: TileGrid) -> bool:
    """Tiles 0 and 1 start on the grid's samples (so every tile does)."""
    return all(abs(float(grid.tile_phase(k))) < PHASE_TOLERANCE for k in (0, 1))


def sample_offset_us(j: int, fs: float) -> int:
    """uUTC offset of window sample ``j`` at ``fs`` Hz from the window's start,
    ``round_half_up(j * 1e6 / fs)`` exactly: where a chunk starting at sample
    ``j`` starts (exact, so also the floor, on multiples of
    :func:`exact_period_samples`)."""
    if j == 0:
        return 0
    return round_half_up(Fraction(j * _MICRO) / _rate(fs))


def chunk_span(t0: int, t1: int, fs: float, n: int, j0: int, j1: int) -> tuple[int, int]:
    """``[a, b)`` uUTC of samples ``[j0, j1)`` of the ``n``-sample window ``[t0, t1)``
    at ``fs`` Hz: each end at :func:`sample_offset_us` from ``t0``, the last
    chunk ending at ``t1``."""
    return t0 + sample_offset_us(j0, fs), (t1 if j1 == n else t0 + sample_offset_us(j1, fs))


@dataclass(frozen=True)
class TilePiece:
    """Part of a window served by one tile: ``out[out_start:out_stop] = tile[tile_start:tile_stop]``."""

    tile: int
    tile_start: int
    tile_stop: int
    out_start: int
    out_stop: int


@dataclass(frozen=True)
class WindowPlan:
    """How samples ``[j0, j1)`` of a window are assembled for one channel."""

    n_samples: int                 # samples of the whole window
    offset: int                    # M: window sample j is grid sample j + M
    phase: Fraction                # the window's grid position minus M, in [-1/2, 1/2)
    pieces: tuple[TilePiece, ...]  # in order, covering [j0, j1) exactly


def window_offset(grid: TileGrid, t0: int) -> tuple[int, Fraction]:
    """``(M, phase)``: window sample ``j`` falls nearest grid sample ``j + M``."""
    pos = grid.grid_position(t0)
    M = round_half_up(pos)
    return M, pos - M


def plan_window(grid: TileGrid, t0: int, n_samples: int, j0: int = 0,
                j1: Optional[int] = None) -> WindowPlan:
    """Map window samples ``[j0, j1)`` of the window starting at ``t0`` to tile slices.

    Pure arithmetic: it does not decide whether slicing is exact (see
    :func:`slicing_is_exact`).
    """
    j1 = n_samples if j1 is None else j1
    M, phase = window_offset(grid, t0)
    L = grid.tile_samples
    pieces = []
    for k in grid.tiles_for_span(j0 + M, j1 + M):
        g_lo = max(k * L, j0 + M)
        g_hi = min((k + 1) * L, j1 + M)
        pieces.append(TilePiece(k, g_lo - k * L, g_hi - k * L, g_lo - M, g_hi - M))
    return WindowPlan(n_samples, M, phase, tuple(pieces))


def block_phases(grid: TileGrid, block_starts_uutc: np.ndarray) -> np.ndarray:
    """Phase of each MEF block's first sample on the grid, in samples, in [-1/2, 1/2).

    Samples of a block are placed at ``block_start + i * 1e6 / fs``, so a
    block's phase is that of all its samples. 0 for data on the grid.
    """
    starts = np.asarray(block_starts_uutc, dtype=np.int64)
    if starts.size == 0:
        return np.zeros(0)
    period = _MICRO / grid.fs
    # Offsets from the anchor, reduced modulo a whole number of microseconds
    # spanning an integer number of samples when one exists, to keep the float
    # arithmetic exact-ish even days into a recording.
    q = exact_period_samples(grid.fs)
    rel = starts - grid.anchor_uutc
    if q is not None:
        span_us = int(Fraction(q * _MICRO) / _rate(grid.fs))
        rel = np.mod(rel, span_us)
    pos = rel / period
    return pos - np.floor(pos + 0.5)


def slicing_is_exact(grid: TileGrid, window_phase: Fraction, tile: int,
                     phases_in_tile: np.ndarray) -> bool:
    """True when the slice of ``tile`` equals a direct read on the window's grid.

    A data sample at grid position ``g + p`` (``g`` whole, ``p`` its block's
    phase in [-1/2, 1/2)) lands on tile index ``g - k*L + round(p - tile_phase)``
    and on window index ``g - M + round(p - window_phase)``. Slicing is exact
    when both roundings are 0 for every block in the tile, each clear of a
    half-sample tie by :data:`PHASE_TOLERANCE` (so no sample can also cross a
    tile edge). ``phases_in_tile``: phases of the blocks overlapping the tile
    (empty: no data, nothing to disagree about).
    """
    if phases_in_tile.size == 0:
        return True
    limit = 0.5 - PHASE_TOLERANCE
    a = np.abs(phases_in_tile - float(grid.tile_phase(tile)))
    b = np.abs(phases_in_tile - float(window_phase))
    return bool(a.max() < limit and b.max() < limit)


def chunk_samples(n_channels: int, chunk_bytes: int, itemsize: int = 4,
                  multiple_of: int = 1) -> int:
    """Samples per channel in one streamed chunk of at most ``chunk_bytes``.

    At least one sample (a single sample row of a huge channel list can exceed
    the budget); a multiple of ``multiple_of`` when that leaves at least one.
    """
    per = max(1, chunk_bytes // max(1, n_channels * itemsize))
    if multiple_of > 1 and per >= multiple_of:
        per -= per % multiple_of
    return per


def chunk_bounds(n_samples: int, per_chunk: int) -> Sequence[tuple[int, int]]:
    """``[(j0, j1), ...]`` cutting ``n_samples`` into pieces of ``per_chunk``."""
    return [(j, min(n_samples, j + per_chunk)) for j in range(0, n_samples, per_chunk)]


#: A reduced (``cache_fs``) tile holds at least this many served samples ...
REDUCED_TILE_MIN_SAMPLES = 4096
#: ... unless that would decode more than this many native samples per channel.
REDUCED_TILE_MAX_NATIVE = 1 << 18


def reduced_tile_duration(tile_duration_s: float, served_fs: float, native_fs: float) -> float:
    """Seconds of one reduced tile: long enough that an overview touches few tiles.

    ``tile_duration_s`` (``TILE_DURATION_S``) at 4 Hz would be 40 samples, and
    an hour of 64 channels 23 000 tiles of bookkeeping; a reduced tile instead
    spans at least :data:`REDUCED_TILE_MIN_SAMPLES` served samples, as long as
    its native span (what one decode reads) stays within
    :data:`REDUCED_TILE_MAX_NATIVE` samples, and never less than
    ``tile_duration_s``. With a whole ratio ``native_fs / served_fs`` the
    reduced series does not depend on the tile length (every pair covers the
    same ``2 * ratio`` native samples counted from the channel's start).
    """
    want = REDUCED_TILE_MIN_SAMPLES / served_fs
    cap = REDUCED_TILE_MAX_NATIVE / native_fs
    return max(tile_duration_s, min(want, cap))
