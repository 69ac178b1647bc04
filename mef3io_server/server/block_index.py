"""Block index: where each channel's MEF blocks are, loaded in pages as reads need them.

A MEF channel's block index (its ``.tidx`` files) lists every block's start
and end time (uUTC) and its minimum and maximum. A week of 64 channels holds
millions of blocks, so nothing of it is read when a recording opens: what a
read needs is loaded in *pages* -- the blocks of some channels overlapping one
fixed span of time -- through mef3io's ``block_envelope`` (times and extrema
only, nothing decoded), one call for all the channels a read asks for.

Pages live in an :class:`IndexCache`, least recently used out first, bounded
in bytes (``INDEX_CACHE_MB``), shared by every open recording: an index of a
week nobody reads never sits in memory, and one that was read leaves when
memory is wanted for others. Answers derived from pages (has a tile data; are
a page's blocks on a tile grid) are small and kept per recording version in
memos, so a warm read asks no page at all; all the memos together hold at most
:attr:`IndexCache.memo_limit` answers (when over, the largest memo starts over).

Page spans are fixed per rate class (:func:`page_span_us`) and anchored at the
recording's start: page ``p`` covers ``[origin + p*span, origin + (p+1)*span)``
uUTC and holds every block overlapping it (a block across a page boundary is
in both pages; :meth:`BlockIndex.blocks` counts it once).

Right after a recording opens, :class:`IndexWarmer` loads the first page of
each channel in the background (where a viewer starts; for recordings shorter
than a page, all of the index), within half of ``INDEX_CACHE_MB``: the open
does not wait for it, and a read that comes before it is done waits only for
what is left of it.

A page whose blocks are not in time order (a damaged ``.tidx``) is marked so:
nothing is concluded from it (its channel has data anywhere, is never sliced
from tiles over that span), and the log says what ``mef3io.Validator`` finds.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import warnings
import weakref
from dataclasses import dataclass
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

#: Bytes a page holds per block: start, end (int64), min, max (float64).
BYTES_PER_BLOCK = 32
#: Bytes counted for a page besides its arrays (object, arrays' headers).
PAGE_OVERHEAD_BYTES = 512


def page_span_us(fs: float) -> int:
    """The span of one index page (uUTC) of a channel sampled at ``fs`` Hz."""
    return int((PAGE_SECONDS_FAST if fs >= FAST_RATE_HZ else PAGE_SECONDS_SLOW) * 1e6)


def in_time_order(starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether block starts and ends (uUTC) both run in time order, each block ending
    at or after its start: what searching an index by time needs."""
    return bool(np.all(starts[1:] >= starts[:-1]) and np.all(ends[1:] >= ends[:-1])
                and np.all(ends >= starts))


@dataclass(frozen=True)
class IndexPage:
    """The blocks of one channel overlapping one page span (uUTC; extrema in units)."""

    starts: np.ndarray      # int64
    ends: np.ndarray        # int64, just past each block's last sample
    mins: np.ndarray        # float64 (NaN: unset)
    maxs: np.ndarray
    ordered: bool           # starts and ends in time order (see in_time_order)

    @property
    def nbytes(self) -> int:
        return PAGE_OVERHEAD_BYTES + self.starts.size * BYTES_PER_BLOCK

    @classmethod
    def from_envelope(cls, e: dict) -> "IndexPage":
        starts = np.asarray(e["start_uutc"], dtype=np.int64)
        ends = np.asarray(e["end_uutc"], dtype=np.int64)
        return cls(starts, ends, np.asarray(e["min"], dtype=np.float64),
                   np.asarray(e["max"], dtype=np.float64), in_time_order(starts, ends))


class IndexCache:
    """Index pages of every open recording, bounded in bytes, least recently used out.

    Keys are ``(owner, channel, page)``; ``owner`` identifies one recording
    version's :class:`BlockIndex`. A page larger than the whole bound is used
    once and not kept. ``max_bytes`` 0 keeps nothing (every read loads again).
    """

    #: Bytes an answer in a memo is counted for (its key tuple, dict slot, value).
    MEMO_ENTRY_BYTES = 128
    #: Answers the memos may hold however small the cache.
    MIN_MEMO_ENTRIES = 20_000

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        #: Answers all the indexes' memos may hold together (see BlockIndex).
        self.memo_limit = max(self.MIN_MEMO_ENTRIES, self.max_bytes // self.MEMO_ENTRY_BYTES)
        self.memo_entries = 0
        self._indexes: "weakref.WeakSet[BlockIndex]" = weakref.WeakSet()
        self._pages: LRUCache = LRUCache(maxsize=max(1, self.max_bytes),
                                         getsizeof=lambda p: p.nbytes)
        self._lock = threading.Lock()
        self.loads = 0          # index loads from mef3io since start (one per page span)

    def get(self, key: tuple) -> Optional[IndexPage]:
        with self._lock:
            return self._pages.get(key)

    def put(self, key: tuple, page: IndexPage) -> None:
        if page.nbytes > self.max_bytes:
            return
        with self._lock:
            self._pages[key] = page

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
        """Drop every page of ``owner`` (a recording version that closed)."""
        with self._lock:
            for key in [k for k in self._pages if k[0] == owner]:
                self._pages.pop(key, None)

    def pages_of(self, owner: int) -> int:
        """How many pages of ``owner`` are kept."""
        with self._lock:
            return sum(1 for k in self._pages if k[0] == owner)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._pages.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)


class Placement(Enum):
    """Where a channel's blocks over some span sit on a tile grid."""

    ON_GRID = "on grid"          # every block starts on a grid sample
    OFF_GRID = "off grid"        # some block does not: check the tiles one by one
    UNORDERED = "unordered"      # the index is not in time order: conclude nothing


@dataclass(frozen=True)
class Blocks:
    """The blocks of one channel overlapping a span, each once, in index order."""

    starts: np.ndarray
    ends: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    ordered: bool


_owners = itertools.count(1)


class BlockIndex:
    """The block index of one recording version, paged through an :class:`IndexCache`.

    ``load(names, t0, t1)`` is mef3io's ``block_envelope`` for several channels
    over ``[t0, t1)`` uUTC: ``{name: {"start_uutc", "end_uutc", "min", "max"}}``.
    ``channels`` are the recording's :class:`~.recordings.ChannelInfo`
    (name, fs, start_uutc, end_uutc); ``origin`` anchors the pages (uUTC).
    ``on_disorder(names)`` is told once of channels found out of order.
    """

    def __init__(self, load: Callable[[list, int, int], dict], channels: Sequence,
                 origin: int, cache: IndexCache,
                 on_disorder: Optional[Callable[[list], None]] = None):
        self._load = load
        self._by_name = {c.name: c for c in channels}
        self.origin = int(origin)
        self.cache = cache
        self.owner = next(_owners)
        self._on_disorder = on_disorder
        self._disordered: set[str] = set()
        self._load_lock = threading.Lock()
        self._has_data: dict[tuple, bool] = {}
        self._placement: dict[tuple, Placement] = {}
        self._forgotten = False

    # ---- pages

    def _page_range(self, ch, t0: int, t1: int) -> range:
        """Pages of ``ch`` overlapping ``[t0, t1)`` within the channel's span."""
        span = page_span_us(ch.fs)
        a, b = max(t0, ch.start_uutc), min(t1, ch.end_uutc)
        if b <= a:
            # A zero-length span still asks about the block holding it (as mef3io).
            if t0 == t1 and ch.start_uutc <= t0 < ch.end_uutc:
                b = a + 1
            else:
                return range(0)
        return range((a - self.origin) // span, (b - 1 - self.origin) // span + 1)

    def _page_window(self, ch, p: int) -> tuple[int, int]:
        span = page_span_us(ch.fs)
        return self.origin + p * span, self.origin + (p + 1) * span

    def pages(self, chans: Sequence, t0: int, t1: int) -> dict[str, list[tuple[int, IndexPage]]]:
        """``{name: [(page number, page)]}`` covering ``[t0, t1)`` of each channel,
        loading the missing pages: one ``load`` per (page span, page number) for all
        the channels missing it."""
        out: dict[str, list] = {}
        missing: dict[tuple[int, int], list[str]] = {}
        for ch in chans:
            got = []
            for p in self._page_range(ch, t0, t1):
                page = self.cache.get((self.owner, ch.name, p))
                if page is None:
                    missing.setdefault((page_span_us(ch.fs), p), []).append(ch.name)
                got.append((p, page))
            out[ch.name] = got
        if not missing:
            return out
        loaded: dict[tuple[str, int], IndexPage] = {}
        with self._load_lock:
            for (span, p), names in missing.items():
                # Another read may have loaded some of them meanwhile.
                need = []
                for n in names:
                    page = self.cache.get((self.owner, n, p))
                    if page is None:
                        need.append(n)
                    else:
                        loaded[(n, p)] = page
                if not need:
                    continue
                a = self.origin + p * span
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    env = self._load(need, a, a + span)
                self.cache.loads += 1
                disordered = []
                for n in need:
                    page = IndexPage.from_envelope(env[n])
                    self.cache.put((self.owner, n, p), page)
                    loaded[(n, p)] = page
                    if not page.ordered and n not in self._disordered:
                        self._disordered.add(n)
                        disordered.append(n)
                if disordered and self._on_disorder is not None:
                    self._on_disorder(disordered)
        for name, got in out.items():
            out[name] = [(p, page if page is not None else loaded[(name, p)])
                         for p, page in got]
        return out

    def blocks(self, ch, t0: int, t1: int) -> Blocks:
        """The blocks of ``ch`` overlapping ``[t0, t1)`` uUTC, each once."""
        return self._blocks(ch, self.pages([ch], t0, t1)[ch.name], t0, t1)

    def _blocks(self, ch, pages: list, t0: int, t1: int) -> Blocks:
        parts = []
        ordered = True
        for i, (p, page) in enumerate(pages):
            ordered = ordered and page.ordered
            if i == 0:
                parts.append((page.starts, page.ends, page.mins, page.maxs))
                continue
            # Blocks reaching back across the page boundary are in the page before.
            keep = page.starts >= self._page_window(ch, p)[0]
            parts.append((page.starts[keep], page.ends[keep], page.mins[keep],
                          page.maxs[keep]))
        if not parts:
            e64, ef = np.zeros(0, np.int64), np.zeros(0)
            return Blocks(e64, e64, ef, ef, True)
        starts, ends, mins, maxs = (np.concatenate([q[j] for q in parts]) for j in range(4))
        if len(parts) > 1 and ordered:
            ordered = in_time_order(starts, ends)       # across the pages too
        t0, t1 = _clip(t0), _clip(t1)
        if t0 == t1:
            sel = (starts <= t0) & (ends > t0)
        else:
            sel = (ends > t0) & (starts < t1)
        if not sel.all():
            starts, ends, mins, maxs = starts[sel], ends[sel], mins[sel], maxs[sel]
        return Blocks(starts, ends, mins, maxs, ordered)

    def envelope(self, ch, t0: int, t1: int) -> dict:
        """mef3io's ``block_envelope`` of ``ch`` over ``[t0, t1)``, from the pages."""
        b = self.blocks(ch, t0, t1)
        return {"start_uutc": b.starts, "end_uutc": b.ends, "min": b.mins, "max": b.maxs}

    # ---- questions reads ask

    def has_data_tiles(self, chans: Sequence, grid: tg.TileGrid,
                       ks: Sequence[int]) -> list[list[bool]]:
        """For each channel of ``chans`` (all on ``grid``), whether it has data in each
        tile ``ks``: some block overlaps the tile's window, with half a sample of
        slack. Memoized per tile; the pages of the missing answers are loaded once
        for all the channels. A channel whose index is out of order over that span
        may have data anywhere: all True."""
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
        lo_t, hi_t = min(starts), max(ends)
        need = [chans[i] for i in todo]
        slack = max(int(5e5 / ch.fs) + 1 for ch in need)
        pages = self.pages(need, lo_t - slack, hi_t + slack)
        before = len(memo)
        for i in todo:
            ch = chans[i]
            b = self._blocks(ch, pages[ch.name], lo_t - slack, hi_t + slack)
            if not b.ordered:
                flags = [True] * len(ks)
            else:
                s = int(5e5 / ch.fs) + 1
                lo = np.searchsorted(b.ends, _int64s([t - s for t in starts]), side="right")
                hi = np.searchsorted(b.starts, _int64s([t + s for t in ends]), side="left")
                flags = (hi > lo).tolist()
            for k, f in zip(ks, flags):
                memo[(ch.name, fs, k)] = f
            out[i] = flags
        self.cache.memos_grew(self, max(0, len(memo) - before))
        return out          # type: ignore[return-value]

    def has_data_many(self, ch, t0s: Sequence[int], t1s: Sequence[int]) -> list[bool]:
        """For each window ``[t0s[i], t1s[i])`` (uUTC): whether any block of ``ch``
        overlaps it (half a sample of slack). Not memoized."""
        if not len(t0s):
            return []
        s = int(5e5 / ch.fs) + 1
        b = self.blocks(ch, min(t0s) - s, max(t1s) + s)
        if not b.ordered:
            return [True] * len(t0s)
        lo = np.searchsorted(b.ends, _int64s([t - s for t in t0s]), side="right")
        hi = np.searchsorted(b.starts, _int64s([t + s for t in t1s]), side="left")
        return (hi > lo).tolist()

    def placement(self, ch, grid: tg.TileGrid, t0: int, t1: int) -> Placement:
        """Where the blocks of ``ch`` overlapping ``[t0, t1)`` sit on ``grid``:
        decided page by page (memoized per page) over the pages of that span."""
        return self.placements([ch], grid, t0, t1)[0]

    def placements(self, chans: Sequence, grid: tg.TileGrid, t0: int,
                   t1: int) -> list[Placement]:
        """:meth:`placement` of each channel of ``chans`` (the pages missing from the
        memo loaded once for all of them)."""
        memo = self._placement
        g = (grid.anchor_uutc, grid.fs, grid.tile_samples)
        out: list[Optional[Placement]] = []
        todo = []
        ranges: dict[tuple, range] = {}
        for i, ch in enumerate(chans):
            span = (ch.start_uutc, ch.end_uutc, ch.fs)
            pr = ranges.get(span)
            if pr is None:
                pr = ranges[span] = self._page_range(ch, t0, t1)
            result = Placement.ON_GRID
            for p in pr:
                v = memo.get((ch.name, g, p))
                if v is None:
                    result = None
                    break
                if v is Placement.UNORDERED:
                    result = v
                    break
                if v is Placement.OFF_GRID:
                    result = v
            out.append(result)
            if result is None:
                todo.append(i)
        if not todo:
            return out          # type: ignore[return-value]
        need = [chans[i] for i in todo]
        pages = self.pages(need, t0, t1)
        before = len(memo)
        for i in todo:
            ch = chans[i]
            result = Placement.ON_GRID
            for p, page in pages[ch.name]:
                if not page.ordered:
                    v = Placement.UNORDERED
                else:
                    ph = tg.block_phases(grid, page.starts)
                    v = (Placement.ON_GRID if ph.size == 0
                         or float(np.max(np.abs(ph))) < tg.PHASE_TOLERANCE
                         else Placement.OFF_GRID)
                memo[(ch.name, g, p)] = v
                if v is Placement.UNORDERED or result is Placement.UNORDERED:
                    result = Placement.UNORDERED
                elif v is Placement.OFF_GRID:
                    result = v
            out[i] = result
        self.cache.memos_grew(self, max(0, len(memo) - before))
        return out          # type: ignore[return-value]

    def phases_in_window(self, ch, grid: tg.TileGrid, t0: int, t1: int) -> np.ndarray:
        """Phases on ``grid`` (samples, see :func:`.tile_grid.block_phases`) of the
        blocks of ``ch`` overlapping ``[t0, t1)``."""
        return tg.block_phases(grid, self.blocks(ch, t0, t1).starts)

    def blocks_span(self, ch, t0: int, t1: int) -> int:
        """uUTC covered by the blocks of ``ch`` overlapping ``[t0, t1)`` (what a read
        of that window decodes), 0 when none does."""
        b = self.blocks(ch, t0, t1)
        return int((b.ends - b.starts).sum())

    def first_block_samples(self, ch) -> int:
        """Samples in the first block of ``ch`` (0 when it has none)."""
        b = self.blocks(ch, ch.start_uutc, ch.start_uutc)
        if not b.starts.size:
            return 0
        return max(0, int(round((b.ends[0] - b.starts[0]) * ch.fs / 1e6)))

    def warm(self, budget_bytes: int, batch: int = 128) -> int:
        """Load the first page of each channel, ``batch`` channels per mef3io call,
        until the pages loaded hold ``budget_bytes``; returns the bytes loaded."""
        first: dict[tuple[int, int], list] = {}
        for ch in self._by_name.values():
            if ch.end_uutc <= ch.start_uutc:
                continue
            span = page_span_us(ch.fs)
            first.setdefault((span, (ch.start_uutc - self.origin) // span), []).append(ch)
        used = 0
        for (span, p), chans in first.items():
            a = self.origin + p * span
            for i in range(0, len(chans), batch):
                if used >= budget_bytes or self._forgotten:
                    return used
                got = self.pages(chans[i:i + batch], a, a + span)
                used += sum(page.nbytes for pages in got.values() for _, page in pages)
        return used

    @property
    def memo_size(self) -> int:
        """Answers held in this index's memos."""
        return len(self._has_data) + len(self._placement)

    def clear_memos(self) -> None:
        """Start the memos over (the answers are derived again from pages)."""
        n = self.memo_size
        self._has_data = {}
        self._placement = {}
        self.cache.memos_dropped(n)

    def forget(self) -> None:
        """Drop this version's pages and memos (its recording closed)."""
        self._forgotten = True
        self.cache.forget(self.owner)
        self.clear_memos()


class IndexWarmer:
    """Loads the first index pages of recordings just opened, one at a time, on a
    thread of its own (see module docstring), within half of the cache."""

    def __init__(self, cache: IndexCache):
        self.cache = cache
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="index-warm")

    def warm(self, index: BlockIndex) -> Optional[cf.Future]:
        """Start warming ``index`` (None when nothing may be kept or closed)."""
        if self.cache.max_bytes <= 0:
            return None
        budget = self.cache.max_bytes // 2

        def run() -> int:
            try:
                return index.warm(budget)
            except Exception:  # noqa: BLE001 - a closed recording, or a read will say
                log.debug("warming a block index failed", exc_info=True)
                return 0
        try:
            return self._pool.submit(run)
        except RuntimeError:        # closed
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_INT64 = np.iinfo(np.int64)


def _clip(t: int) -> int:
    return min(max(int(t), int(_INT64.min)), int(_INT64.max))


def _int64s(times: list) -> np.ndarray:
    """uUTC times as int64, those beyond its range clipped to it (no block is there)."""
    try:
        return np.array(times, dtype=np.int64)
    except OverflowError:
        return np.array([min(max(int(t), _INT64.min), _INT64.max) for t in times],
                        dtype=np.int64)
