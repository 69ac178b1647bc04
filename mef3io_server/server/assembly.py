"""Window assembly: a window of some channels, chunk by chunk, from tiles.

For a window ``[t0, t1)`` at ``fs`` Hz the channels are grouped by (tile grid,
native rate). Each group is served one of three ways:

* **sliced** -- its tiles (:mod:`.tile_fetch`) are sliced straight into each
  output chunk (:func:`.tile_grid.plan_window`), where that is provably the
  same as a direct mef3io read;
* **direct** -- channels whose tiles cannot be sliced exactly for this window
  (data off the window's grid after a gap, an out-of-order index) are read
  directly, uncached;
* **window first** -- a cold window whose tiles would decode far more than the
  window itself (short MEF blocks at high rates) is read directly first, its
  tiles decoded in the background after.

While a chunk is yielded, the tiles of the next chunks decode in the
background (decode-ahead), so decode overlaps sending. The ``MAX_READ_MB``
limit is checked here. Output equals ``mef3io.Reader.read(channels, t0, t1,
dtype="float32")`` value for value and NaN for NaN.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .cache_keys import tile_key
from .errors import Cancelled, ResourceLimit, decode_failure
from .inflight import Lane
from .block_index import Placement
from .recordings import ChannelInfo, Recording
from .tile_fetch import TileFetcher

#: ``(j0, j1, rows)``: window samples ``[j0, j1)`` of every channel.
Chunk = tuple[int, int, np.ndarray]


class WindowAssembler:
    """Assemble windows from tiles (see module docstring)."""

    def __init__(self, fetcher: TileFetcher):
        self.fetcher = fetcher
        self.tuning = fetcher.tuning
        self.stats = fetcher.stats

    @staticmethod
    def plan_groups(rec: Recording, chans: Sequence[ChannelInfo], fs: float):
        """Channels (indices) grouped by (tile grid, native rate): each group decodes together."""
        groups: dict[tuple[tg.TileGrid, float], list[int]] = defaultdict(list)
        for i, ch in enumerate(chans):
            groups[(rec.grid(ch, fs), ch.fs)].append(i)
        return groups

    def check_size(self, n: int, n_channels: int) -> None:
        """Refuse a window over ``MAX_READ_MB`` of float32."""
        nbytes = n * n_channels * 4
        limit = self.tuning.max_read_bytes
        if nbytes > limit:
            raise ResourceLimit(
                f"the window holds {n} samples x {n_channels} channels = "
                f"{nbytes / 2**20:.0f} MB of float32, over the server's limit of "
                f"{limit / 2**20:.0f} MB (MAX_READ_MB); read it in parts")

    def chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
               t1: int, per_chunk: int, lane: Lane = Lane.FOREGROUND,
               on_chunk: Optional[Callable[[int, int], None]] = None,
               limit_bytes: bool = True, cancel=None) -> Iterator[Chunk]:
        """Yield ``(j0, j1, rows)`` covering the window ``[t0, t1)`` at ``fs`` Hz.

        ``rows`` is a fresh C-contiguous float32 array ``(len(chans), j1 - j0)``.
        ``limit_bytes=False`` skips the ``MAX_READ_MB`` check, for callers that
        consume the chunks as they come (``n_points`` reads) and never hold
        the window; ``per_chunk`` must then be a multiple of
        :func:`.tile_grid.exact_period_samples` for bounded memory. ``cancel``:
        the read's cancel token; once it fires, no more is decoded or scheduled
        for this read (:class:`.errors.Cancelled`).
        """
        n = tg.samples_in_window(t0, t1, fs)
        if n <= 0:
            return
        if limit_bytes:
            self.check_size(n, len(chans))
        fg = lane is Lane.FOREGROUND
        fetcher = self.fetcher
        q = tg.exact_period_samples(fs) or 0
        first: list[int] = []
        first_groups = []
        unread = fg and limit_bytes and self._index_unread(rec, chans, fs, n)
        if unread:
            # The block index these channels would need first is big and not read
            # yet: the window straight from mef3io, index and tiles in the
            # background after.
            sliced_groups, direct = [], []
            for (grid, native), idxs in self.plan_groups(rec, chans, fs).items():
                first.extend(idxs)
                first_groups.append((grid, native, idxs))
        else:
            sliced_groups, direct = self._sliceable(rec, chans, fs, t0, n)
        # Cold windows whose tiles would decode far more than the window itself
        # (short MEF blocks at high rates): the window first, its tiles after.
        if fg and not unread:
            for g in list(sliced_groups):
                grid, native, idxs = g
                if grid.fs >= native and self._window_first(rec, [chans[i] for i in idxs],
                                                             grid, t0, t1, n):
                    sliced_groups.remove(g)
                    first.extend(idxs)
                    first_groups.append(g)
        if first or direct:
            with self.stats.lock:
                self.stats.window_first_reads += bool(first) and not unread
                self.stats.unread_index_reads += unread
                self.stats.direct_reads += bool(direct)
        bounds = tg.chunk_bounds(n, per_chunk)
        # Channels read directly for the whole window at once: window-first ones,
        # and off-grid ones when chunk starts would fall between microseconds.
        whole = list(first)
        if direct and (not q or per_chunk % q):
            whole, direct = whole + direct, []
        # (output rows, decoded part) per part: the parts are never joined (that
        # would copy the whole window, benchmarks/decisions.md).
        whole_parts = []
        if whole:
            o = 0
            for rows in self.direct_split(rec, [chans[i] for i in whole], t0, t1, lane,
                                          cancel):
                idx = whole[o:o + len(rows)]
                o += len(rows)
                run = idx == list(range(idx[0], idx[0] + len(idx)))
                whole_parts.append((slice(idx[0], idx[0] + len(idx)) if run else idx, rows))
        for grid, native, idxs in first_groups:       # their tiles, in the background
            if not unread:          # (unread: after the last chunk, see the end)
                fetcher.start_background(rec, [chans[i] for i in idxs], grid, t0, 0, n)
        # Chunks whose tiles are decoding ahead of the one being sent, never
        # more than a quarter of the cache (as prefetch).
        ahead = max(1, min(self.tuning.decode_ahead_bytes, fetcher.cache.max_bytes // 4)
                    // max(1, per_chunk * len(chans) * 4))
        scheduled = 1           # chunks [0, scheduled) are decoded or decoding
        # Per group: the tiles in hand (a chunk is often a slice of the tiles the
        # last one used: they are fetched once per read, not once per chunk) and
        # the last tile fetched or started in the background.
        hands = [TileHand() for _ in sliced_groups]
        offsets = [tg.window_offset(grid, t0)[0] for grid, _, _ in sliced_groups]
        blocks = self._fill_blocks(sliced_groups, offsets, len(chans), bounds)
        block, b0, b1 = None, 0, 0
        try:
            for ci, (j0, j1) in enumerate(bounds):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("the read was cancelled")
                if blocks is not None:
                    if j1 > b1:                 # the next block: filled from its tiles at once
                        b0, b1 = j0, blocks[ci]
                        block = np.empty((len(chans), b1 - b0), dtype=np.float32)
                        grid, native, idxs = sliced_groups[0]
                        self._fill(rec, chans, grid, idxs, t0, n, b0, b1, block, lane, cancel,
                                   hands[0])
                    out = np.ascontiguousarray(block[:, j0 - b0:j1 - b0])
                else:
                    out = np.empty((len(chans), j1 - j0), dtype=np.float32)
                    for (grid, native, idxs), hand in zip(sliced_groups, hands):
                        self._fill(rec, chans, grid, idxs, t0, n, j0, j1, out, lane, cancel,
                                   hand)
                for idx, rows in whole_parts:
                    out[idx] = rows[:, j0:j1]
                if direct:          # off-grid channels, read chunk by chunk
                    a, b = tg.chunk_span(t0, t1, fs, n, j0, j1)
                    out[direct] = self.direct(rec, [chans[i] for i in direct], a, b, lane, cancel)
                if fg and sliced_groups:
                    # One background job per chunk, in order: each chunk's tiles are
                    # published as soon as they are decoded (a job of many chunks
                    # would hold the next chunk back until all of them are).
                    while scheduled < min(len(bounds), ci + 1 + ahead):
                        nj0, nj1 = bounds[scheduled]
                        for (grid, native, idxs), hand, M in zip(sliced_groups, hands, offsets):
                            last = int(grid.tiles_for_span(nj0 + M, nj1 + M)[-1])
                            if last > hand.reached:      # else its tiles are in hand or started
                                fetcher.start_background(rec, [chans[i] for i in idxs], grid, t0,
                                                         nj0, nj1)
                                hand.reached = last
                        scheduled += 1
                if on_chunk is not None:
                    on_chunk(j0, j1)
                yield j0, j1, out
        finally:
            if unread and not (cancel is not None and cancel.cancelled):
                # The block index and the tiles once the answer is sent (or the
                # reader stopped taking it): reading a big index beside the
                # answer would take the cores from it.
                for grid, native, idxs in first_groups:
                    fetcher.start_background_soon(rec, [chans[i] for i in idxs], grid, t0,
                                                  0, n)

    def _fill_blocks(self, sliced_groups: list, offsets: list, n_channels: int,
                     bounds: list) -> Optional[list[int]]:
        """For each chunk ``bounds[i]``, where the fill block starting at it would end
        (see ``StoreTuning.fill_block_bytes``); None when chunks are filled one by
        one: more than one tile group (or one not holding every channel, in
        order), one chunk, or blocks no bigger than a chunk."""
        if len(sliced_groups) != 1 or len(bounds) < 2:
            return None
        grid, _, idxs = sliced_groups[0]
        if len(idxs) != n_channels or list(idxs) != list(range(n_channels)):
            return None
        most = self.tuning.fill_block_bytes // (4 * n_channels)
        M, L = offsets[0], grid.tile_samples
        ends, k = [], 0
        for j0, j1 in bounds:
            # The tiles chunk j0 needs end at this sample of the window: the block
            # takes the whole chunks inside them (at least this chunk).
            reach = min(((j1 - 1 + M) // L + 1) * L - M, j0 + most)
            while k < len(bounds) and bounds[k][1] <= reach:
                k += 1
            ends.append(max(j1, bounds[k - 1][1] if k else j1))
        if all(e == j1 for e, (_, j1) in zip(ends, bounds)):
            return None
        return ends

    def _sliceable(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
                   n: int) -> tuple[list, list[int]]:
        """``(sliced groups [(grid, native, idxs)], direct idxs)``: which channels'
        tiles can be sliced exactly for the window of ``n`` samples from ``t0``."""
        direct: list[int] = []
        sliced_groups = []
        for (grid, native), idxs in self.plan_groups(rec, chans, fs).items():
            M, phase = tg.window_offset(grid, t0)
            # Grid-level conditions are the same for every channel of the group.
            grid_ok = abs(float(phase)) < 0.5 - tg.PHASE_TOLERANCE and tg.tiles_aligned(grid)
            ks = grid.tiles_for_span(M, M + n)
            # The blocks that matter are those of the window's tiles.
            a = grid.tile_start(ks[0]) if len(ks) else t0
            b = grid.tile_start(ks[-1] + 1) if len(ks) else t0
            if grid.fs < native:
                sliced_groups.append((grid, native, list(idxs)))   # defined by their tiles
                continue
            keep = []
            wheres = rec.placements([chans[i] for i in idxs], grid, a, b)
            for i, where in zip(idxs, wheres):
                ch = chans[i]
                if where is Placement.UNORDERED:
                    direct.append(i)        # its index cannot say where blocks are
                elif grid_ok and where is Placement.ON_GRID:
                    keep.append(i)
                elif self._exact_for_window(rec, ch, grid, phase, M, n):
                    keep.append(i)
                else:
                    direct.append(i)
            if keep:
                sliced_groups.append((grid, native, keep))
        return sliced_groups, direct

    def _index_unread(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                      n: int) -> bool:
        """Whether a read should go straight to mef3io because the block index it
        needs first is not read yet and holds more than ``direct_first_index_blocks``
        blocks (reading it costs about as much as the window: a week of 64 channels,
        a thousand channels). Only at the channels' own rates (reduced rates are
        defined by their tiles) and for windows held whole anyway."""
        t = self.tuning
        if n * len(chans) * 4 > t.window_first_max_bytes or self.fetcher.closed:
            return False
        if any(ch.fs != fs for ch in chans):
            return False
        return rec.unread_index_blocks(chans) > t.direct_first_index_blocks

    def _window_first(self, rec: Recording, group: Sequence[ChannelInfo], grid: tg.TileGrid,
                      t0: int, t1: int, n: int) -> bool:
        """Whether a read of ``[t0, t1)`` should decode the window itself first.

        Only when none of the group's tiles for it is cached or being decoded
        (a cold read), the window fits ``window_first_max_bytes``, and the
        tiles span MEF blocks holding at least ``window_first_ratio`` times
        the samples of the blocks the window touches (a direct read decodes
        whole blocks too): e.g. 10 s at 32 kHz (1 s blocks) straddles two
        10 s tiles, 2x the decode. At 256 Hz (10 s blocks, 10 s tiles) never.
        """
        t = self.tuning
        if n * len(group) * 4 > t.window_first_max_bytes or self.fetcher.closed:
            return False
        M, _ = tg.window_offset(grid, t0)
        ks = grid.tiles_for_span(M, M + n)
        if not len(ks):
            return False
        a, b = grid.tile_start(ks[0]), grid.tile_start(ks[-1] + 1)
        ch = group[0]
        tiles_span = rec.blocks_span(ch, a, b)
        window_span = rec.blocks_span(ch, t0, t1)
        if window_span <= 0 or tiles_span < t.window_first_ratio * window_span:
            return False
        rkey, fs = rec.key, float(grid.fs)
        keys = [tile_key(rkey, c.name, fs, int(k)) for k in ks for c in group]
        if self.fetcher.inflight.any_pending(keys):
            return False
        cache = self.fetcher.cache
        return not any(key in cache for key in keys)

    def direct_split(self, rec: Recording, chans: Sequence[ChannelInfo], a: int, b: int,
                     lane: Lane = Lane.FOREGROUND, cancel=None) -> list[np.ndarray]:
        """Direct read of ``[a, b)``, its channels split over parallel mef3io reads
        (:func:`.decode_plan.split_channels`): the first part in this thread, the
        others on the lane's workers. One ``(len(part), n)`` float32 array per
        part, in the order of ``chans``."""
        decoder = self.fetcher.decoder
        parts = self.fetcher.split_channels(list(chans))
        futs = []
        for part in parts[1:]:
            try:
                futs.append(decoder.submit(rec.source, [c.name for c in part], a, b, lane,
                                           cancel=cancel))
            except Exception as e:  # noqa: BLE001
                raise decode_failure(rec.path, [c.name for c in part], a, b, e) from e
        rows = [self.direct(rec, parts[0], a, b, lane, cancel)]
        for part, fut in zip(parts[1:], futs):
            try:
                rows.append(np.asarray(fut.result(), dtype=np.float32))
            except Cancelled:
                raise
            except Exception as e:  # noqa: BLE001
                raise decode_failure(rec.path, [c.name for c in part], a, b, e) from e
        return rows

    def direct(self, rec: Recording, chans: Sequence[ChannelInfo], a: int, b: int,
               lane: Lane, cancel=None) -> np.ndarray:
        """One direct (uncached) mef3io read of ``[a, b)`` uUTC of ``chans``."""
        try:
            return self.fetcher.decoder.decode(rec.source, [c.name for c in chans], a, b, lane,
                                               cancel=cancel)
        except Cancelled:
            raise
        except Exception as e:  # noqa: BLE001
            raise decode_failure(rec.path, [c.name for c in chans], a, b, e) from e

    @staticmethod
    def _exact_for_window(rec, ch, grid, phase, M, n) -> bool:
        for k in grid.tiles_for_span(M, M + n):
            a, b = grid.tile_window(k)
            if not tg.slicing_is_exact(grid, phase, k, rec.phases_in_window(ch, grid, a, b)):
                return False
        return True

    def _fill(self, rec, chans, grid, idxs, t0, n, j0, j1, out, lane, cancel=None,
              hand: Optional["TileHand"] = None) -> None:
        """Samples ``[j0, j1)`` of the channels ``idxs`` (one group) into ``out``,
        from the tiles in ``hand`` (fetching those it lacks into it)."""
        plan = tg.plan_window(grid, t0, n, j0, j1)
        group = [chans[i] for i in idxs]
        hand = TileHand() if hand is None else hand
        hand.drop_before(plan.pieces[0].tile)
        need = [p.tile for p in plan.pieces if p.tile not in hand.tiles]
        if need:
            got = self.fetcher.fetch(rec, group, grid, need, lane, cancel)
            for k in need:
                hand.tiles[k] = [got[(ch.name, k)] for ch in group]
            hand.reached = max(hand.reached, need[-1])
        # Rows idxs[0] .. idxs[-1] in order (the usual case): one concatenate per
        # piece straight into the output, instead of one assignment per channel
        # (np.stack would walk the list three more times: 1024 channels, ~1.4 ms).
        rows = slice(idxs[0], idxs[-1] + 1) if idxs[-1] - idxs[0] + 1 == len(idxs) else None
        for p in plan.pieces:
            o0, o1 = p.out_start - j0, p.out_stop - j0          # samples of the chunk
            s0, s1 = p.tile_start, p.tile_stop                  # samples of the tile
            arrays = hand.tiles[p.tile]
            if rows is not None and len(group) > 1:
                np.concatenate([a[None, s0:s1] for a in arrays], out=out[rows, o0:o1])
                continue
            for i, a in zip(idxs, arrays):
                out[i, o0:o1] = a[s0:s1]


class TileHand:
    """The tiles one read of one channel group holds while it sends chunks.

    ``tiles``: tile number -> that tile of each channel of the group (in group
    order). Tiles before the chunk being filled are let go; a window's tiles
    are at most the window plus one tile per channel. ``reached``: the last tile
    fetched or started in the background for the read (-inf before any).
    """

    __slots__ = ("tiles", "reached")

    def __init__(self):
        self.tiles: dict[int, list[np.ndarray]] = {}
        self.reached: float = float("-inf")

    def drop_before(self, k: int) -> None:
        for old in [j for j in self.tiles if j < k]:
            del self.tiles[old]
