"""Cutting one read window into pieces whose reads join exactly to the whole read.

A window ``[start, end)`` at ``fs`` Hz holds ``N = round_half_up((end - start)
* fs / 1e6)`` samples, sample ``j`` standing at ``start + j * 1e6 / fs``
(mef3io's rule, see :mod:`mef3io_server.server.tile_grid`). Piece ``k`` covers
samples ``[j_k, j_{k+1})`` and is read as the window ``[start + j_k * 1e6 / fs,
start + j_{k+1} * 1e6 / fs)``. When each ``j_k`` is a multiple of the rate's
exact period (the fewest samples lasting a whole number of microseconds: 4 at
256 Hz, 1 at 250 Hz), every piece starts on an exact microsecond of the same
sample grid, so the pieces' reads are exactly the whole read cut in pieces.
For rates without such a period (none within a million samples) the piece
starts are rounded to the nearest microsecond: the pieces then sit within half
a microsecond of the grid, which changes nothing unless a data sample lies
within that distance of a half-sample boundary.

Pieces are also lined up with the server's tiles when possible: tiles hold
``tile_samples`` samples of a grid anchored at the channel's first sample, so
when the window's grid is that grid, the piece edges are put on tile edges
(the first piece is then shorter). Used by the command line (``get``, which
makes the pieces one at a time) and :func:`mef3io_server.dask.read_signal`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional

import numpy as np

from .server.tile_grid import (choose_tile_samples, exact_period_samples, round_half_up,
                               samples_in_window)

_MICRO = 10**6

#: The server's default tile duration (``TILE_DURATION_S``), seconds.
DEFAULT_TILE_DURATION_S = 10.0


@dataclass(frozen=True)
class Piece:
    """Samples ``[j0, j1)`` of the window, read as ``[t0, t1)`` uUTC."""

    j0: int
    j1: int
    t0: int
    t1: int

    @property
    def n_samples(self) -> int:
        return self.j1 - self.j0


def sample_time(start_uutc: int, j: int, fs: float) -> int:
    """Time of window sample ``j`` rounded half up to a whole microsecond."""
    return start_uutc + round_half_up(Fraction(j * _MICRO) / Fraction(fs))


def piece_samples(fs: float, piece_s: float, n_channels: int = 1,
                  max_bytes: Optional[int] = None,
                  tile_duration_s: float = DEFAULT_TILE_DURATION_S) -> int:
    """Samples per piece: about ``piece_s`` seconds, a whole number of server tiles.

    Rounded to a multiple of the server's tile (``tile_duration_s`` at ``fs``,
    itself a multiple of the rate's exact period when the server can make it
    one), at least one tile; then shrunk, still by whole tiles (or exact
    periods when one tile is already too big), so that ``n_channels`` float32
    rows fit in ``max_bytes``.
    """
    tile = choose_tile_samples(tile_duration_s, fs)
    period = exact_period_samples(fs) or 1
    unit = tile if tile % period == 0 else period
    n = max(1, round(piece_s * fs / unit)) * unit
    if max_bytes:
        fit = max(1, int(max_bytes) // (4 * max(1, n_channels)))
        if n > fit:
            step = unit if unit <= fit else period
            n = max(step, fit - fit % step)
    return n


def iter_pieces(start_uutc: int, end_uutc: int, fs: float, per_piece: int,
                anchor_uutc: Optional[int] = None) -> Iterator[Piece]:
    """Pieces of ``per_piece`` samples covering the window ``[start_uutc, end_uutc)`` exactly,
    made one at a time (a window of years is millions of pieces: none is planned ahead).

    ``anchor_uutc``: the first sample of the channels' tile grid (the
    channel's start); piece edges are put on multiples of ``per_piece``
    samples from the anchor (tile edges when ``per_piece`` is a whole number of
    tiles): exactly when the window's grid falls on the anchor's, otherwise
    within an exact period (a few samples) of them. The last piece ends exactly at
    ``end_uutc``. An empty window gives no pieces; the window's sample count is
    :func:`~mef3io_server.server.tile_grid.samples_in_window`.
    """
    n = samples_in_window(int(start_uutc), int(end_uutc), fs)
    if n <= 0:
        return
    per_piece = max(1, int(per_piece))
    first = per_piece
    if anchor_uutc is not None:
        pos = Fraction(int(start_uutc) - int(anchor_uutc)) * Fraction(fs) / _MICRO
        first = per_piece - round_half_up(pos) % per_piece
        if pos.denominator != 1:
            # Off the anchor's grid: stay on whole exact periods of the window's own
            # grid (so pieces still join exactly), a few samples from the tile edge.
            q = exact_period_samples(fs) or 1
            first = first - first % q or per_piece
    a, t0 = 0, int(start_uutc)
    b = min(first, n)
    while a < n:
        t1 = int(end_uutc) if b == n else sample_time(start_uutc, b, fs)
        yield Piece(a, b, t0, t1)
        a, t0, b = b, t1, min(b + per_piece, n)


def split_window(start_uutc: int, end_uutc: int, fs: float, per_piece: int,
                 anchor_uutc: Optional[int] = None) -> list[Piece]:
    """:func:`iter_pieces` as a list."""
    return list(iter_pieces(start_uutc, end_uutc, fs, per_piece, anchor_uutc))


def sample_times(start_uutc: int, j0: int, j1: int, fs: float) -> np.ndarray:
    """int64 times of window samples ``[j0, j1)``, each rounded half up to a microsecond.

    Exact integer arithmetic when the sample period is a small fraction of a
    microsecond (every common rate); otherwise float64 offsets from
    ``start_uutc`` (off by at most a microsecond, at half-microsecond ties).
    """
    period = Fraction(_MICRO) / Fraction(fs)
    a, b = period.numerator, period.denominator
    j = np.arange(int(j0), int(j1), dtype=np.int64)
    if j.size == 0:
        return j
    if 2 * a * int(j1) + b < 2**62:
        return int(start_uutc) + (2 * a * j + b) // (2 * b)
    return int(start_uutc) + np.floor(j * float(period) + 0.5).astype(np.int64)
