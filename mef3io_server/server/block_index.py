"""Block index: what reads need to know of each channel's MEF blocks, summarized once.

A MEF channel's block index (its ``.tidx`` files) lists every block's start
and end time (uUTC). A week of 64 channels holds millions of blocks, so nothing
of it is read when a recording opens. mef3io's ``block_envelope`` reads a
channel's index in time roughly proportional to the channel's length, whatever
window is asked (benchmarks/decisions.md, issue 21), so each channel's index is
read *once*, whole, when a read first needs it (one call for all the channels
that read asks for), and kept as a small :class:`ChannelSummary`:

* the gap-free runs of blocks (``[start, end)`` uUTC; blocks closer than a
  sample are one run): whether a tile has data follows from them exactly;
* per *page* of time (:func:`page_span_us`, anchored at the recording's start),
  the lowest and highest phase of the blocks starting in it on the channel's
  own sample grid, and the blocks themselves only for pages where some block
  is off that grid: whether tiles can be sliced exactly follows from them;
* the first block's length (``RESPECT_MEF_BLOCKS``) and each run's block length
  (to estimate what a read decodes).

Summaries live in an :class:`IndexCache`, least recently used out first,
bounded in bytes (``INDEX_CACHE_MB``), shared by every open recording; a
continuous week of a channel is under 2 KB. Answers derived from them
(has a tile data; where are a span's blocks on a grid) are memoized per
recording version; all the memos together hold at most
:attr:`IndexCache.memo_limit` answers (when over, the largest memo starts over).

Right after a recording opens, :class:`.index_warmer.IndexWarmer` reads the
summaries of its channels in the background (:meth:`BlockIndex.warm`, within
half of ``INDEX_CACHE_MB``): the open does not wait for it, and a read that
comes before it is done waits only for what is left of it.

A channel whose blocks are not in time order (a damaged ``.tidx``) is marked
so: nothing is concluded from its index (it has data anywhere, is never sliced
from tiles), and the log says what ``mef3io.Validator`` finds.
"""
from __future__ import annotations

import itertools
import logging
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Sequence

import numpy as np
from cachetools import LRUCache

from . import tile_grid as tg

log = logging.getLogger("mef3io_server.block_index")

#: Page span below / at or above :data:`FAST_RATE_HZ`: about 2048 blocks of a
#: typical writer's 10 s (slow rates) or 1 s (fast rates) blocks.
PAGE_SECONDS_SLOW = 20480.0
PAGE_SECONDS_FAST = 2048.0
FAST_RATE_HZ = 5000.0

#: Bytes counted for a summary besides its arrays.
SUMMARY_OVERHEAD_BYTES = 1024
#: Most channels whose whole index one mef3io call reads, and the bytes of
#: index one call may return (32 per block; blocks counted as if 1 s long).
SCAN_BATCH = 64
SCAN_BYTES = 64 << 20


def page_span_us(fs: float) -> int:
    """The span of one page (uUTC) of a channel sampled at ``fs`` Hz."""
    return int((PAGE_SECONDS_FAST if fs >= FAST_RATE_HZ else PAGE_SECONDS_SLOW) * 1e6)


def in_time_order(starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether block starts and ends (uUTC) both run in time order, each block ending
    at or after its start: what searching an index by time needs."""
    return bool(np.all(starts[1:] >= starts[:-1]) and np.all(ends[1:] >= ends[:-1])
                and np.all(ends >= starts))


def slack_us(fs: float) -> int:
    """Half a sample period and a microsecond (uUTC): how far from a block a window
    still counts as having its data."""
    return int(5e5 / fs) + 1


class Placement(Enum):
    """Where a channel's blocks over some span sit on a tile grid."""

    ON_GRID = "on grid"          # every block starts on a grid sample
    OFF_GRID = "off grid"        # some block does not: check the tiles one by one
    UNORDERED = "unordered"      # the index is not in time order: conclude nothing


@dataclass(frozen=True)
class ChannelSummary:
    """What reads need of one channel's block index (times uUTC, phases in samples).

    ``run_*``: gap-free runs of blocks and the length of each run's first block;
    ``pages``: page numbers holding block starts, with the lowest and highest
    phase of those blocks on the channel's own grid; ``off_blocks``: page ->
    (starts, ends) of the pages where some block is off that grid.
    """

    ordered: bool
    run_starts: np.ndarray
    run_ends: np.ndarray
    run_block_us: np.ndarray
    pages: np.ndarray
    page_pmin: np.ndarray
    page_pmax: np.ndarray
    off_blocks: dict = field(default_factory=dict)
    first_block_samples: int = 0
    longest_block_us: int = 0

    @property
    def nbytes(self) -> int:
        arrays = (self.run_starts, self.run_ends, self.run_block_us, self.pages,
                  self.page_pmin, self.page_pmax)
        off = sum(s.nbytes + e.nbytes for s, e in self.off_blocks.values())
        return SUMMARY_OVERHEAD_BYTES + sum(a.nbytes for a in arrays) + off

    @classmethod
    def of(cls, ch, origin: int, starts, ends) -> "ChannelSummary":
        """The summary of ``ch`` (name, fs, start_uutc) from its whole index."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        fs = float(ch.fs)
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        first = int(round((ends[0] - starts[0]) * fs / 1e6)) if starts.size else 0
        if not in_time_order(starts, ends):
            return cls(False, empty_i, empty_i, empty_i, empty_i, empty_f, empty_f,
                       first_block_samples=max(0, first))
        if not starts.size:
            return cls(True, empty_i, empty_i, empty_i, empty_i, empty_f, empty_f)
        # Runs: blocks closer than two slacks join (has-data answers stay exact:
        # no window with its slack fits in such a gap).
        breaks = np.nonzero((starts[1:] - ends[:-1]) >= 2 * slack_us(fs))[0] + 1
        first_of_run = np.concatenate(([0], breaks))
        last_of_run = np.concatenate((breaks - 1, [starts.size - 1]))
        run_block = ends[first_of_run] - starts[first_of_run]
        # Phases on the channel's own grid, per page of block starts.
        grid = tg.TileGrid(int(ch.start_uutc), fs, 1)
        phases = tg.block_phases(grid, starts)
        span = page_span_us(fs)
        page_of = (starts - origin) // span
        cut = np.nonzero(np.diff(page_of))[0] + 1
        firsts = np.concatenate(([0], cut))
        pmin = np.minimum.reduceat(phases, firsts)
        pmax = np.maximum.reduceat(phases, firsts)
        pages = page_of[firsts]
        off = {}
        for i in np.nonzero(np.maximum(np.abs(pmin), np.abs(pmax)) >= tg.PHASE_TOLERANCE)[0]:
            a = firsts[i]
            b = firsts[i + 1] if i + 1 < firsts.size else starts.size
            off[int(pages[i])] = (starts[a:b].copy(), ends[a:b].copy())
        return cls(True, starts[first_of_run].copy(), ends[last_of_run].copy(),
                   run_block.astype(np.int64), pages.astype(np.int64), pmin, pmax, off,
                   max(0, first), int((ends - starts).max()))


class IndexCache:
    """Channel summaries of every open recording, bounded in bytes, least recently
    used out; and the bound of the memos derived from them.

    Keys are ``(owner, channel)``; ``owner`` identifies one recording version's
    :class:`BlockIndex`. A summary larger than the whole bound is used once and
    not kept. ``max_bytes`` 0 keeps none (each read that needs one reads it again).
    """

    #: Bytes an answer in a memo is counted for (its key tuple, dict slot, value).
    MEMO_ENTRY_BYTES = 128
    #: Answers the memos may hold however small the cache.
    MIN_MEMO_ENTRIES = 20_000

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: LRUCache = LRUCache(maxsize=max(1, self.max_bytes),
                                         getsizeof=lambda s: s.nbytes)
        self._lock = threading.Lock()
        self.loads = 0          # mef3io index calls since start
        #: Answers all the indexes' memos may hold together (see BlockIndex).
        self.memo_limit = max(self.MIN_MEMO_ENTRIES, self.max_bytes // self.MEMO_ENTRY_BYTES)
        self.memo_entries = 0
        self._indexes: "weakref.WeakSet[BlockIndex]" = weakref.WeakSet()

    def get(self, key: tuple) -> Optional[ChannelSummary]:
        with self._lock:
            return self._items.get(key)

    def kept_many(self, keys: Sequence[tuple]) -> list[bool]:
        """Whether each key's summary is kept (not counted as a use)."""
        with self._lock:
            items = self._items
            return [k in items for k in keys]

    def get_many(self, keys: Sequence[tuple]) -> list[Optional[ChannelSummary]]:
        """:meth:`get` of each key, under one lock."""
        with self._lock:
            get = self._items.get
            return [get(k) for k in keys]

    def put(self, key: tuple, summary: ChannelSummary) -> None:
        if summary.nbytes > self.max_bytes:
            return
        with self._lock:
            self._items[key] = summary

    def memos_grew(self, index: "BlockIndex", n: int) -> None:
        """``index`` added ``n`` answers to its memos: past :attr:`memo_limit` in all,
        the index holding the most starts over."""
        with self._lock:
            self._indexes.add(index)
            self.memo_entries += n
            if self.memo_entries <= self.memo_limit:
                return
            biggest = max(self._indexes, key=lambda i: i.memo_size, default=None)
        if biggest is not None:
            biggest.clear_memos()

    def memos_dropped(self, n: int) -> None:
        with self._lock:
            self.memo_entries = max(0, self.memo_entries - n)

    def forget(self, owner: int) -> None:
        """Drop every summary of ``owner`` (a recording version that closed)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == owner]:
                self._items.pop(key, None)

    def kept_of(self, owner: int) -> int:
        """How many summaries of ``owner`` are kept."""
        with self._lock:
            return sum(1 for k in self._items if k[0] == owner)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._items.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_owners = itertools.count(1)


class BlockIndex:
    """The block index of one recording version, summarized per channel through an
    :class:`IndexCache` (see module docstring).

    ``load(names, t0, t1)`` is mef3io's ``block_envelope`` for several channels
    over ``[t0, t1)`` uUTC (None: open ends): ``{name: {"start_uutc",
    "end_uutc", ...}}``. ``channels`` are the recording's
    :class:`~.recordings.ChannelInfo` (name, fs, start_uutc, end_uutc);
    ``origin`` anchors the pages (uUTC). ``on_disorder(names)`` is told once of
    channels found out of order.
    """

    def __init__(self, load: Callable[[list, Optional[int], Optional[int]], dict],
                 channels: Sequence, origin: int, cache: IndexCache,
                 on_disorder: Optional[Callable[[list], None]] = None):
        self._load = load
        self._by_name = {c.name: c for c in channels}
        self.origin = int(origin)
        self.cache = cache
        self.owner = next(_owners)
        self._on_disorder = on_disorder
        self._disordered: set[str] = set()
        self._load_lock = threading.Lock()
        #: Blocks each channel's index holds, as its files' sizes say (0: unknown).
        self.sizes: dict[str, int] = {}
        self._has_data: dict[tuple, bool] = {}
        self._placement: dict[tuple, Placement] = {}
        self._forgotten = False

    # ---- summaries

    def summaries(self, chans: Sequence) -> list[ChannelSummary]:
        """The summary of each of ``chans``, reading the missing ones' whole index
        (``SCAN_BATCH`` channels per mef3io call)."""
        out: list[Optional[ChannelSummary]] = self.cache.get_many(
            [(self.owner, ch.name) for ch in chans])
        if None not in out:
            return out          # type: ignore[return-value]
        with self._load_lock:
            need: dict[str, object] = {}
            for i, ch in enumerate(chans):
                if out[i] is None:
                    s = self.cache.get((self.owner, ch.name))    # read meanwhile?
                    if s is None:
                        need.setdefault(ch.name, ch)
                    out[i] = s
            got: dict[str, ChannelSummary] = {}
            for part in _scan_batches(list(need.values())):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    env = self._load(part, None, None)
                self.cache.loads += 1
                disordered = []
                for n in part:
                    s = ChannelSummary.of(need[n], self.origin, env[n]["start_uutc"],
                                          env[n]["end_uutc"])
                    self.cache.put((self.owner, n), s)
                    got[n] = s
                    if not s.ordered and n not in self._disordered:
                        self._disordered.add(n)
                        disordered.append(n)
                del env
                if disordered and self._on_disorder is not None:
                    self._on_disorder(disordered)
        return [s if s is not None else got[ch.name] for s, ch in zip(out, chans)]

    def summary(self, ch) -> ChannelSummary:
        return self.summaries([ch])[0]

    def unread_blocks(self, chans: Sequence) -> int:
        """Blocks (as the files' sizes say) of the channels of ``chans`` whose summary
        is not kept: what answering about them would read first."""
        kept = self.cache.kept_many([(self.owner, ch.name) for ch in chans])
        sizes = self.sizes
        return sum(sizes.get(ch.name, 0) for ch, k in zip(chans, kept) if not k)

    # ---- questions reads ask

    def has_data_tiles(self, chans: Sequence, grid: tg.TileGrid,
                       ks: Sequence[int]) -> list[list[bool]]:
        """For each channel of ``chans`` (all on ``grid``), whether it has data in each
        tile ``ks``: some block overlaps the tile's window, with half a sample of
        slack. Memoized per tile. A channel whose index is out of order may have
        data anywhere: all True."""
        memo = self._has_data
        fs = float(grid.fs)
        out: list[Optional[list]] = []
        todo: list[int] = []
        for i, ch in enumerate(chans):
            flags = [memo.get((ch.name, fs, k)) for k in ks]
            if None in flags:
                todo.append(i)
                out.append(None)
            else:
                out.append(flags)
        if not todo:
            return out          # type: ignore[return-value]
        starts, ends = tg.tile_windows(grid, tuple(ks))
        sums = self.summaries([chans[i] for i in todo])
        before = len(memo)
        for i, s in zip(todo, sums):
            ch = chans[i]
            flags = self._overlaps(s, ch.fs, starts, ends)
            for k, f in zip(ks, flags):
                memo[(ch.name, fs, k)] = f
            out[i] = flags
        self.cache.memos_grew(self, max(0, len(memo) - before))
        return out          # type: ignore[return-value]

    @staticmethod
    def _overlaps(s: ChannelSummary, fs: float, t0s, t1s) -> list[bool]:
        if not s.ordered:
            return [True] * len(t0s)
        sl = slack_us(fs)
        lo = np.searchsorted(s.run_ends, _int64s([t - sl for t in t0s]), side="right")
        hi = np.searchsorted(s.run_starts, _int64s([t + sl for t in t1s]), side="left")
        return (hi > lo).tolist()

    def has_data_many(self, ch, t0s: Sequence[int], t1s: Sequence[int]) -> list[bool]:
        """For each window ``[t0s[i], t1s[i])`` (uUTC): whether any block of ``ch``
        overlaps it (half a sample of slack). Not memoized."""
        if not len(t0s):
            return []
        return self._overlaps(self.summary(ch), ch.fs, list(t0s), list(t1s))

    def _native(self, ch, grid: tg.TileGrid) -> bool:
        return float(grid.fs) == float(ch.fs) and int(grid.anchor_uutc) == int(ch.start_uutc)

    def _page_span(self, ch, s: ChannelSummary, t0: int, t1: int) -> tuple[int, int]:
        """Pages ``[p0, p1]`` holding the starts of blocks that may overlap ``[t0, t1)``."""
        return _pages(_clip(t0) - self.origin, _clip(t1) - self.origin, s.longest_block_us,
                      page_span_us(ch.fs))

    def placement(self, ch, grid: tg.TileGrid, t0: int, t1: int) -> Placement:
        """Where the blocks of ``ch`` overlapping ``[t0, t1)`` sit on ``grid``."""
        return self.placements([ch], grid, t0, t1)[0]

    def placements(self, chans: Sequence, grid: tg.TileGrid, t0: int,
                   t1: int) -> list[Placement]:
        """:meth:`placement` of each of ``chans``: decided per page of blocks (a page
        with a block off the grid makes the span off grid), memoized per page."""
        memo = self._placement
        g = (grid.anchor_uutc, grid.fs, grid.tile_samples)
        sums = self.summaries(chans)
        out = []
        before = len(memo)
        a, b = _clip(t0) - self.origin, _clip(t1) - self.origin
        for ch, s in zip(chans, sums):
            if not s.ordered:
                out.append(Placement.UNORDERED)
                continue
            p0, p1 = _pages(a, b, s.longest_block_us, page_span_us(ch.fs))
            key = (ch.name, g, p0, p1)
            v = memo.get(key)
            if v is None:
                v = self._placement_of(ch, s, grid, p0, p1)
                memo[key] = v
            out.append(v)
        self.cache.memos_grew(self, max(0, len(memo) - before))
        return out

    def _placement_of(self, ch, s: ChannelSummary, grid: tg.TileGrid, p0: int,
                      p1: int) -> Placement:
        lo, hi = np.searchsorted(s.pages, [p0, p1 + 1])
        if hi <= lo:
            return Placement.ON_GRID                # no block there
        if self._native(ch, grid):
            off = any(int(p) in s.off_blocks for p in s.pages[lo:hi])
            return Placement.OFF_GRID if off else Placement.ON_GRID
        span = page_span_us(ch.fs)
        ph = tg.block_phases(grid, self._block_starts(ch, self.origin + p0 * span,
                                                      self.origin + (p1 + 1) * span))
        on = ph.size == 0 or float(np.max(np.abs(ph))) < tg.PHASE_TOLERANCE
        return Placement.ON_GRID if on else Placement.OFF_GRID

    def _block_starts(self, ch, t0: int, t1: int) -> np.ndarray:
        """Starts of the blocks of ``ch`` starting in ``[t0, t1)``, from mef3io (the
        rare grids that are not the channel's own)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = self._load([ch.name], t0, t1)[ch.name]
        starts = np.asarray(e["start_uutc"], dtype=np.int64)
        return starts[(starts >= t0) & (starts < t1)]

    def phases_in_window(self, ch, grid: tg.TileGrid, t0: int, t1: int) -> np.ndarray:
        """Phases on ``grid`` (samples, see :func:`.tile_grid.block_phases`) that the
        blocks of ``ch`` overlapping ``[t0, t1)`` take: their lowest and highest
        for pages on the grid, each block's for pages off it (empty: no block).
        What :func:`.tile_grid.slicing_is_exact` needs, no more."""
        s = self.summary(ch)
        if not s.ordered:
            raise ValueError(f"the block index of {ch.name} is out of order")
        if not self._overlaps(s, ch.fs, [t0], [t1])[0]:
            return np.zeros(0)
        p0, p1 = self._page_span(ch, s, t0, t1)
        span = page_span_us(ch.fs)
        if not self._native(ch, grid):
            starts = self._block_starts(ch, self.origin + p0 * span,
                                        self.origin + (p1 + 1) * span)
            return tg.block_phases(grid, starts)
        lo, hi = np.searchsorted(s.pages, [p0, p1 + 1])
        parts = []
        for i in range(lo, hi):
            p = int(s.pages[i])
            blocks = s.off_blocks.get(p)
            if blocks is None:
                parts.append(np.array([s.page_pmin[i], s.page_pmax[i]]))
                continue
            starts, ends = blocks
            sel = (ends > t0) & (starts < t1)
            parts.append(tg.block_phases(grid, starts[sel]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def blocks_span(self, ch, t0: int, t1: int) -> int:
        """uUTC covered by the blocks of ``ch`` overlapping ``[t0, t1)`` (what a read
        of that window decodes), 0 when none does: each run's blocks taken as
        its first block's length (exact for writers of regular blocks; an
        estimate for deciding how to read, never for what is read)."""
        s = self.summary(ch)
        if not s.ordered or not s.run_starts.size:
            return max(0, t1 - t0) if not s.ordered else 0
        t0, t1 = _clip(t0), _clip(t1)
        lo = int(np.searchsorted(s.run_ends, t0, side="right"))
        hi = int(np.searchsorted(s.run_starts, t1, side="left"))
        total = 0
        for i in range(lo, hi):
            rs, re, d = int(s.run_starts[i]), int(s.run_ends[i]), max(1, int(s.run_block_us[i]))
            a = rs + (max(t0, rs) - rs) // d * d
            b = min(re, rs + -(-(min(t1, re) - rs) // d) * d)
            total += max(0, b - a)
        return total

    def first_block_samples(self, ch) -> int:
        """Samples in the first block of ``ch`` (0 when it has none)."""
        return self.summary(ch).first_block_samples

    def warm(self, budget_bytes: int, batch: int = SCAN_BATCH) -> int:
        """Read the summaries of every channel, ``batch`` channels per step, until
        those read hold ``budget_bytes``; returns their bytes."""
        used = 0
        chans = list(self._by_name.values())
        for i in range(0, len(chans), batch):
            if used >= budget_bytes or self._forgotten:
                break
            used += sum(s.nbytes for s in self.summaries(chans[i:i + batch]))
        return used

    @property
    def memo_size(self) -> int:
        """Answers held in this index's memos."""
        return len(self._has_data) + len(self._placement)

    def clear_memos(self) -> None:
        """Start the memos over (the answers are derived again from the summaries)."""
        n = self.memo_size
        self._has_data = {}
        self._placement = {}
        self.cache.memos_dropped(n)

    def forget(self) -> None:
        """Drop this version's summaries and memos (its recording closed)."""
        self._forgotten = True
        self.cache.forget(self.owner)
        self.clear_memos()


def _scan_batches(chans: list) -> list[list[str]]:
    """Names of ``chans`` in batches of at most ``SCAN_BATCH`` whose whole indexes
    stay within ``SCAN_BYTES`` (each channel's blocks counted as 1 s long)."""
    out: list[list[str]] = []
    part: list[str] = []
    size = 0
    for ch in chans:
        est = 32 * max(1, (int(ch.end_uutc) - int(ch.start_uutc)) // 1_000_000)
        if part and (len(part) >= SCAN_BATCH or size + est > SCAN_BYTES):
            out.append(part)
            part, size = [], 0
        part.append(ch.name)
        size += est
    if part:
        out.append(part)
    return out


_INT64 = np.iinfo(np.int64)


_CLIP_LO, _CLIP_HI = int(_INT64.min) // 2, int(_INT64.max) // 2


def _pages(a: int, b: int, longest_us: int, span_us: int) -> tuple[int, int]:
    """Pages ``[p0, p1]`` (of ``span_us``) holding the starts of blocks (at most
    ``longest_us`` long) that may overlap ``[a, b)``, uUTC from the pages' origin."""
    return (a - longest_us) // span_us, b // span_us


def _clip(t: int) -> int:
    return min(max(int(t), _CLIP_LO), _CLIP_HI)


def _int64s(times: list) -> np.ndarray:
    """uUTC times as int64, those beyond its range clipped to it (no block is there)."""
    try:
        return np.array(times, dtype=np.int64)
    except OverflowError:
        return np.array([min(max(int(t), _INT64.min), _INT64.max) for t in times],
                        dtype=np.int64)
