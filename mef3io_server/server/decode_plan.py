"""Decode planning: which mef3io reads decode a set of missing tiles. Pure.

Given the tiles a read found missing (tile index -> channels) on one
:class:`~.tile_grid.TileGrid`, this module cuts them into *runs* (consecutive
tiles of the same channels, decoded by ONE mef3io read of their joint span)
and cuts each run's channels into *parts* (disjoint channel sets read at once
on several cores). Nothing here touches a file, a cache or a thread; channels
are anything with ``.name`` and ``.fs`` (Hz). Why reads are shaped like this
(per-read overhead against waiting behind a long read) is measured in
benchmarks/decisions.md.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence, TypeVar

from . import tile_grid as tg

C = TypeVar("C")

#: Largest float32 answer (native samples x channels, bytes) of one mef3io read
#: of consecutive tiles; a longer run is cut (never below RUN_MIN_TILES tiles).
#: A run's tiles are published when the whole read ends, so this bounds how long
#: another read needing one of them waits (benchmarks/decisions.md).
RUN_MAX_BYTES = 4 << 20
RUN_MIN_TILES = 1
#: Fewest channels worth their own mef3io read when a run is split.
SPLIT_MIN_CHANNELS = 8


def tile_native_span(grid: tg.TileGrid, native: float, k: int) -> Optional[int]:
    """Native samples in tile ``k``'s window when that is a whole number, else None.

    On the native grid (``grid.fs >= native``) it must also be
    ``tile_samples``: a tile window that is not a whole number of samples is
    decoded alone.
    """
    a, b = grid.tile_window(k)
    span = Fraction(b - a) * Fraction(native) / 1_000_000
    if span.denominator != 1 or (grid.fs >= native and span != grid.tile_samples):
        return None
    return int(span)


def split_channels(chans: list[C], ways: int, min_channels: int = SPLIT_MIN_CHANNELS
                   ) -> list[list[C]]:
    """``chans`` cut into up to ``ways`` contiguous parts of at least ``min_channels``
    (one mef3io read of many channels does not keep every core busy)."""
    ways = min(ways, len(chans) // min_channels)
    if ways <= 1:
        return [chans]
    step = -(-len(chans) // ways)
    return [chans[i:i + step] for i in range(0, len(chans), step)]


def tile_runs(grid: tg.TileGrid, jobs: dict[int, list[C]], ways: int, *,
              run_max_bytes: int = RUN_MAX_BYTES, run_min_tiles: int = RUN_MIN_TILES
              ) -> list[tuple[list[int], list[C]]]:
    """The missing tiles ``jobs`` (tile -> channels, all of one native rate)
    cut into runs, each decoded by one mef3io read.

    A run is consecutive tiles of the same channel list, each spanning a whole
    number of native samples (:func:`tile_native_span`; others are runs of
    one), of at most ``max(run_min_tiles, run_max_bytes / tile bytes of the
    channels)`` tiles. Runs are halved while there are fewer reads (runs x
    channel parts, :func:`split_channels`) than ``ways``, so a cold read still
    uses every core.
    """
    by_set: dict[tuple, tuple[list[C], list[int]]] = {}
    for k, chans in jobs.items():
        by_set.setdefault(tuple(c.name for c in chans), (chans, []))[1].append(k)
    runs: list[tuple[list[int], list[C]]] = []
    for chans, ks in by_set.values():
        native = chans[0].fs
        tile_bytes = max(1, int(grid.tile_samples * native / grid.fs)) * len(chans) * 4
        cap = max(run_min_tiles, run_max_bytes // tile_bytes)
        run: list[int] = []
        run_ok = False
        for k in sorted(ks):
            ok = len(ks) > 1 and tile_native_span(grid, native, k) is not None
            if run and run_ok and ok and k == run[-1] + 1 and len(run) < cap:
                run.append(k)
                continue
            if run:
                runs.append((run, chans))
            run, run_ok = [k], ok
        if run:
            runs.append((run, chans))
    reads = sum(len(split_channels(chans, ways)) for _, chans in runs)
    while reads < ways:
        i = max(range(len(runs)), key=lambda j: len(runs[j][0]))
        ks, chans = runs[i]
        if len(ks) < 2:
            break
        h = len(ks) // 2
        runs[i:i + 1] = [(ks[:h], chans), (ks[h:], chans)]
        reads += len(split_channels(chans, ways))
    return runs


def run_spans(grid: tg.TileGrid, native: float, ks: Sequence[int]) -> list[int]:
    """Native samples of each tile of a run (as :func:`tile_runs` makes them): the
    lengths its one read's answer is cut into. A lone tile's span may be None."""
    return [tile_native_span(grid, native, k) for k in ks]
