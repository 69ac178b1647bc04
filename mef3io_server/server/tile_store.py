"""Windows assembled from cached tiles, decoding only what is missing.

The data path of a read: the service asks :meth:`TileStore.read_chunks` for a
window of some channels of a :class:`~.recordings.Recording` at one served
rate; the tile grid (:mod:`.tile_grid`) says which tiles hold it; tiles come
from the shared :class:`~.tile_cache.TileCache` or are decoded by the
:class:`~.decode.Decoder` (several channels of one tile in one mef3io read) and
put back; slices are copied straight into the chunk being sent.

Guarantees:

* Result equals ``mef3io.Reader.read(channels, t0, t1, dtype="float32")``
  value for value and NaN for NaN. Where the block layout makes a tile slice
  differ from a direct read (data off the window's grid after a gap), that
  channel is read directly instead (uncached).
* A tile is never decoded twice at once: concurrent readers of the same
  tile wait for the one decode (foreground and prefetch alike).
* Memory of a read is one chunk plus the tiles it touches; a window of any
  length streams chunk by chunk.
* Reduced rates (``cache_fs``) are tiles of their own, keyed by rate: a tile
  at ``fs_s`` below the native rate is the native read of its span reduced by
  :func:`.reduction.minmax_ordered`.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .decode import Decoder
from .errors import DecodeFailed, ResourceLimit
from .recordings import ChannelInfo, Recording
from .reduction import minmax_ordered
from .tile_cache import TileCache

log = logging.getLogger("mef3io_server.tiles")


@dataclass
class StoreStats:
    tiles_decoded: int = 0
    prefetch_tiles_decoded: int = 0
    prefetch_hits: int = 0
    direct_reads: int = 0
    window_first_reads: int = 0
    windows_preassembled: int = 0
    prefetch_windows_planned: int = 0     # windows whose tiles prefetch checked
    prefetch_windows_skipped: int = 0     # ... skipped: checked moments before


class TileStore:
    """Cached, deduplicated, prefetching access to tiles of open recordings."""

    def __init__(self, cache: TileCache, decoder: Decoder, *, min_parallel_tiles: int = 2,
                 prefetch_ahead: int = 1, prefetch_behind: int = 1,
                 max_read_bytes: int = 1 << 34):
        self.cache = cache
        self.decoder = decoder
        self.min_parallel_tiles = min_parallel_tiles
        self.prefetch_ahead = prefetch_ahead
        self.prefetch_behind = prefetch_behind
        self.max_read_bytes = max_read_bytes
        self._lock = threading.Lock()
        self._inflight: dict[tuple, _TileFuture] = {}
        self._bg_inflight: set[tuple] = set()      # keys of _inflight decoded on "bg"
        self._prefetched: dict[tuple, None] = {}   # keys put by prefetch, not yet read
        self._nan_tiles: dict[int, np.ndarray] = {}
        self.stats = StoreStats()
        self._closed = False
        self._memo: dict = {}
        self._recent_plans: dict[tuple, float] = {}
        self._window_inflight: dict[tuple, cf.Future] = {}   # see read_chunks
        self._recent_windows: dict[tuple, None] = {}
        self._stream_ends: dict[tuple, int] = {}
        self._planned: dict[tuple, float] = {}     # see prefetch
        # Parallel mef3io reads a foreground tile is split into (one per core,
        # like the decode workers; 1 disables splitting).
        self.split_ways = max(1, min(8, os.cpu_count() or 1))
        # Plans prefetches off the request thread (see prefetch_later).
        self._planner = cf.ThreadPoolExecutor(1, thread_name_prefix="prefetch-plan")
        # Assembles steady readers' next windows (see _preassemble): waits for tiles.
        self._assembler = cf.ThreadPoolExecutor(1, thread_name_prefix="preassemble")
        # Seconds a read's prefetch waits after its last chunk (see prefetch_later).
        self.prefetch_grace_s = self.PREFETCH_GRACE_S

    # ------------------------------------------------------------ keys & tiles

    @staticmethod
    def tile_key(rec: Recording, ch: ChannelInfo, fs: float, k: int) -> tuple:
        return (rec.key, ch.name, float(fs), int(k))

    def _nan_tile(self, n: int) -> np.ndarray:
        t = self._nan_tiles.get(n)
        if t is None:
            t = np.full(n, np.nan, dtype=np.float32)
            t.flags.writeable = False
            if len(self._nan_tiles) < 64:
                self._nan_tiles[n] = t
        return t

    def _decode_tile_rows(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                          ks: Sequence[int], lane: str, inline: bool):
        """Decode the consecutive tiles ``ks`` of ``chans`` (same native rate and grid)
        with ONE mef3io read of ``[tile_start(ks[0]), tile_start(ks[-1] + 1))`` uUTC.

        Returns the list of per-tile rows ``(len(chans), grid.tile_samples)``
        float32, one per tile of ``ks`` (inline), or a future of that list.
        ``ks`` must come from :meth:`_tile_runs` (every tile but a lone one
        spans a whole number of native samples), so the read's samples split
        exactly into the per-tile reads; a reduced tile (``grid.fs`` below the
        native rate) is the reduction of its own native span, as when it is
        decoded alone. Raises (or fails the future) on a decode error or when
        the read's length is not the sum of the tiles' (never mis-sliced).
        """
        a, b = grid.tile_start(ks[0]), grid.tile_start(ks[-1] + 1)
        names = [c.name for c in chans]
        native = chans[0].fs
        L = grid.tile_samples

        def finish_tile(rows: np.ndarray, copy: bool) -> np.ndarray:
            if grid.fs < native:
                return minmax_ordered(np.ascontiguousarray(rows), L // 2)
            if rows.shape[1] != L:   # cannot happen on a consistent grid; never mis-slice
                fixed = np.full((rows.shape[0], L), np.nan, dtype=np.float32)
                m = min(L, rows.shape[1])
                fixed[:, :m] = rows[:, :m]
                rows = fixed
            elif copy:               # a slice of a run: do not pin the whole run's buffer
                rows = rows.copy()
            return rows

        def finish(rows: np.ndarray) -> list[np.ndarray]:
            if len(ks) == 1:
                return [finish_tile(rows, False)]
            spans = [self._tile_native_span(grid, native, k) for k in ks]
            if rows.shape[1] != sum(spans):
                raise DecodeFailed(f"a read of tiles {ks[0]}..{ks[-1]} returned "
                                   f"{rows.shape[1]} samples, not {sum(spans)}")
            out, o = [], 0
            for n in spans:
                out.append(finish_tile(rows[:, o:o + n], True))
                o += n
            return out

        if inline:
            return finish(self.decoder.decode(rec.source, names, a, b, lane))
        fut = self.decoder.submit(rec.source, names, a, b, lane)
        out: cf.Future = cf.Future()

        def done(f):
            try:
                out.set_result(finish(f.result()))
            except BaseException as e:  # noqa: BLE001
                out.set_exception(e)
        fut.add_done_callback(done)
        return out

    #: Largest float32 answer (native samples x channels of the group, bytes) of
    #: one mef3io read of consecutive tiles; a longer run of missing tiles is cut
    #: (never below RUN_MIN_TILES tiles per read). A run's tiles are published
    #: when the whole read ends, so any other read needing one of them waits for
    #: all of it: 4 MB (~0.2 s of CPU at 256 Hz) bounds that wait, where 64 MB
    #: made a viewer wait seconds behind another client's sweep of the same
    #: recording (benchmarks/decisions.md); the per-read cost (~4 ms for 8
    #: channels) stays ~2 % of decoding a run that long.
    RUN_MAX_BYTES = 4 << 20
    RUN_MIN_TILES = 1

    @staticmethod
    def _tile_native_span(grid: tg.TileGrid, native: float, k: int) -> Optional[int]:
        """Native samples in tile ``k``'s window when that is a whole number, else None.

        On the native grid it must also be ``tile_samples`` (a tile window
        that is not a whole number of samples is decoded alone).
        """
        a, b = grid.tile_window(k)
        span = Fraction(b - a) * Fraction(native) / 1_000_000
        if span.denominator != 1 or (grid.fs >= native and span != grid.tile_samples):
            return None
        return int(span)

    def _tile_runs(self, grid: tg.TileGrid, jobs: dict[int, list[ChannelInfo]]
                   ) -> list[tuple[list[int], list[ChannelInfo]]]:
        """The missing tiles ``jobs`` cut into runs decoded by one mef3io read each.

        A run is consecutive tiles of the same channel list, each spanning a
        whole number of native samples (:meth:`_tile_native_span`; others are
        runs of one), of at most ``max(RUN_MIN_TILES, RUN_MAX_BYTES / tile
        bytes of the group)`` tiles. Runs are halved while there are fewer
        reads than ``split_ways`` (so a cold read still uses every core).
        Measured: 360 mef3io reads of 10 s cost 2.89 s CPU against 1.59 s for
        one read of the hour (8 channels, 256 Hz).
        """
        by_set: dict[tuple, tuple[list[ChannelInfo], list[int]]] = {}
        for k, chans in jobs.items():
            by_set.setdefault(tuple(c.name for c in chans), (chans, []))[1].append(k)
        runs: list[tuple[list[int], list[ChannelInfo]]] = []
        for chans, ks in by_set.values():
            native = chans[0].fs
            tile_bytes = max(1, int(grid.tile_samples * native / grid.fs)) * len(chans) * 4
            cap = max(self.RUN_MIN_TILES, self.RUN_MAX_BYTES // tile_bytes)
            run: list[int] = []
            run_ok = False
            for k in sorted(ks):
                ok = len(ks) > 1 and self._tile_native_span(grid, native, k) is not None
                if run and run_ok and ok and k == run[-1] + 1 and len(run) < cap:
                    run.append(k)
                    continue
                if run:
                    runs.append((run, chans))
                run, run_ok = [k], ok
            if run:
                runs.append((run, chans))
        reads = sum(len(self.split_channels(chans)) for _, chans in runs)
        while reads < self.split_ways:
            i = max(range(len(runs)), key=lambda j: len(runs[j][0]))
            ks, chans = runs[i]
            if len(ks) < 2:
                break
            h = len(ks) // 2
            runs[i:i + 1] = [(ks[:h], chans), (ks[h:], chans)]
            reads += len(self.split_channels(chans))
        return runs

    def fetch_tiles(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                    tiles: Sequence[int], lane: str = "fg") -> dict[tuple[str, int], np.ndarray]:
        """Tiles ``tiles`` of every channel in ``chans`` (all on ``grid``), decoding the missing.

        Returns ``{(channel, k): float32 array of grid.tile_samples}``. Cached
        tiles are looked up in one cache call (one lock), not one per tile.
        """
        fs = float(grid.fs)
        L = grid.tile_samples
        rkey = rec.key
        result: dict[tuple[str, int], np.ndarray] = {}
        probe: list[tuple[ChannelInfo, int, tuple]] = []
        ks = [int(k) for k in tiles]
        for ch in chans:
            for k, has in zip(ks, self._has_data_tiles(rec, ch, grid, ks)):
                if not has:
                    result[(ch.name, k)] = self._nan_tile(L)
                    continue
                probe.append((ch, k, (rkey, ch.name, fs, k)))
        if not probe:
            return result
        arrs = self.cache.get_many([p[2] for p in probe])
        waits: list[tuple[tuple[str, int], "_TileFuture"]] = []
        jobs: dict[int, list[ChannelInfo]] = defaultdict(list)
        owned: dict[tuple, "_TileFuture"] = {}
        missing = []
        hit_keys = []
        waited: list[tuple] = []        # keys decoded by others (in flight)
        for (ch, k, key), arr in zip(probe, arrs):
            if arr is not None:
                result[(ch.name, k)] = arr
                hit_keys.append(key)
            else:
                missing.append((ch, k, key))
        if hit_keys and self._prefetched:
            with self._lock:
                for key in hit_keys:
                    if self._prefetched.pop(key, 0) is None:
                        self.stats.prefetch_hits += 1
        if missing:
            with self._lock:
                for ch, k, key in missing:
                    fut = self._inflight.get(key)
                    if fut is not None:
                        waited.append(key)
                    else:
                        fut = owned[key] = self._claim(key, lane)
                        jobs[k].append(ch)
                    waits.append(((ch.name, k), fut))
        if jobs:
            self._run_jobs(rec, grid, jobs, owned, lane)
        # Waiting for the background lane: it must not wait for other reads' decodes.
        urgent = lane == "fg" and any(key in self._bg_inflight for key in waited)
        with self.decoder.urgent() if urgent else contextlib.nullcontext():
            for rk, fut in waits:
                result[rk] = fut.result()
        if waited and self._prefetched:
            # Tiles prefetch was still decoding when asked for: read now, as hits are.
            with self._lock:
                for key in waited:
                    if self._prefetched.pop(key, 0) is None:
                        self.stats.prefetch_hits += 1
        return result

    def _claim(self, key: tuple, lane: str) -> "_TileFuture":
        """Register tile ``key`` as being decoded on ``lane`` by the caller (holding
        ``self._lock``); its future settles when :class:`_JobRun` publishes it."""
        fut = self._inflight[key] = _TileFuture()
        if lane == "bg":
            self._bg_inflight.add(key)
        return fut

    # Per-recording-version memos of pure functions of (channel, grid, tile):
    # they cost searchsorted / Fraction arithmetic per channel on every read.

    _MEMO_LIMIT = 500_000

    def _has_data_tiles(self, rec: Recording, ch: ChannelInfo, grid: tg.TileGrid,
                        ks: list[int]) -> list[bool]:
        """Whether ``ch`` has data in each tile ``ks`` of ``grid`` (memoized;
        :meth:`Recording.has_data_many` over the tiles missing from the memo)."""
        memo = self._memo
        base = (rec.path, rec.generation, ch.name, float(grid.fs))
        flags = [memo.get(base + (k,)) for k in ks]
        if None not in flags:
            return flags
        starts, ends = _tile_windows(grid, tuple(ks))
        flags = rec.has_data_many(ch, starts, ends)
        if len(memo) > self._MEMO_LIMIT:
            memo.clear()
        for k, f in zip(ks, flags):
            memo[base + (k,)] = f
        return flags

    def _on_grid(self, rec: Recording, ch: ChannelInfo, grid: tg.TileGrid) -> bool:
        key = (rec.path, rec.generation, ch.name, "on_grid", grid)
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = bool(rec.on_grid(ch, grid))
        return v

    def _grid_tiles_aligned(self, grid: tg.TileGrid) -> bool:
        """Tiles 0 and 1 start on the grid's samples (so every tile does)."""
        key = ("aligned", grid)
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = all(abs(float(grid.tile_phase(k))) < tg.PHASE_TOLERANCE
                                      for k in (0, 1))
        return v

    def _run_jobs(self, rec: Recording, grid: tg.TileGrid, jobs: dict[int, list[ChannelInfo]],
                  owned: dict[tuple, "_TileFuture"], lane: str) -> None:
        """Decode the tiles this call owns; publish them to the cache and to waiters.

        The work is a :class:`_JobRun` (an object, not nested closures that call
        each other): closures that refer to one another form a reference
        cycle, which kept ``owned`` -- every decoded tile of the call -- alive
        until the garbage collector's next pass (hundreds of MB under load,
        docs/reliability.md).
        """
        run = _JobRun(self, rec, grid, jobs, owned, lane)
        if lane == "fg" and self.decoder.foreground_decodes() >= self.split_ways:
            # Every core already decodes for other reads: parts on the lane's
            # workers would only queue behind theirs. This thread decodes its
            # runs whole, and the OS shares the cores between the reads.
            for ks, chans in self._tile_runs(grid, jobs):
                run.decode(ks, chans, True)
            return
        # Consecutive missing tiles are decoded by one mef3io read (see
        # _tile_runs): per-read overhead dominates short reads. A run of many
        # channels is decoded as several mef3io reads of disjoint channel sets
        # at once (see split_channels): one mef3io read of many channels does
        # not keep every core busy. Prefetch parts run on the background
        # lane's workers (PREFETCH_PROCESSES of them).
        items = [(ks, part) for ks, chans in self._tile_runs(grid, jobs)
                 for part in self.split_channels(chans)]
        if lane == "fg" and len(items) < self.min_parallel_tiles:
            for ks, part in items:
                run.decode(ks, part, True)
            return
        if lane == "fg":
            # All but the first go to the lane's workers; the first is decoded
            # in this (already waiting) thread, which saves a hand-off.
            for ks, part in items[1:]:
                run.decode(ks, part)
            run.decode(*items[0], True)
            return
        for ks, part in items:
            run.decode(ks, part)

    #: Fewest channels worth their own mef3io read when a tile is split.
    SPLIT_MIN_CHANNELS = 8

    def split_channels(self, chans: list[ChannelInfo]) -> list[list[ChannelInfo]]:
        """``chans`` cut into up to ``split_ways`` contiguous parts of >= SPLIT_MIN_CHANNELS.

        Measured (docs/benchmarks.md): on 2 cores, 64 channels x 10 s at 256 Hz
        decode in ~30 ms as two 32-channel reads at once against ~50 ms as one.
        """
        ways = min(self.split_ways, len(chans) // self.SPLIT_MIN_CHANNELS)
        if ways <= 1:
            return [chans]
        step = -(-len(chans) // ways)
        return [chans[i:i + step] for i in range(0, len(chans), step)]

    # ------------------------------------------------------------ windows

    def plan_groups(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float):
        """Channels grouped by (tile grid, native rate): each group decodes together."""
        groups: dict[tuple[tg.TileGrid, float], list[int]] = defaultdict(list)
        for i, ch in enumerate(chans):
            groups[(rec.grid(ch, fs), ch.fs)].append(i)
        return groups

    #: Window keys remembered to tell a repeated window from a new one.
    _RECENT_WINDOWS = 256

    def read_chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
                    t1: int, per_chunk: int, lane: str = "fg",
                    on_chunk: Optional[Callable[[int, int], None]] = None,
                    limit_bytes: bool = True) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(j0, j1, rows)`` covering the window ``[t0, t1)`` at ``fs`` Hz.

        ``rows`` is a C-contiguous float32 array ``(len(chans), j1 - j0)``,
        read-only when shared (see below); see :meth:`assemble_chunks`.

        A window of at most :attr:`WINDOW_SHARE_BYTES` is assembled once for
        everyone asking at the same time (the others wait for it, as for a
        tile being decoded), and kept in the cache (same budget and eviction
        as tiles, the recording's key first) once it has been asked for twice:
        a viewer redrawing, or several tools on the same window, cost a
        lookup. A window read once (paging, a single pass) is never kept, so
        it never takes the place of tiles. Such a window is then yielded in
        chunks of ``per_chunk`` samples like any other.
        """
        n = tg.samples_in_window(t0, t1, fs)
        if lane != "fg" or n <= 0 or n * len(chans) * 4 > self.WINDOW_SHARE_BYTES:
            yield from self.assemble_chunks(rec, chans, fs, t0, t1, per_chunk, lane, on_chunk,
                                            limit_bytes)
            return
        rows = self._shared_window(rec, chans, fs, t0, t1, n, lane, limit_bytes)
        for j0, j1 in tg.chunk_bounds(n, per_chunk):
            if on_chunk is not None:
                on_chunk(j0, j1)
            yield j0, j1, (rows if j1 - j0 == n else rows[:, j0:j1])

    @staticmethod
    def window_key(rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int, t1: int):
        return (rec.key, ("window",) + tuple(c.name for c in chans), float(fs), int(t0), int(t1))

    def _shared_window(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
                       t1: int, n: int, lane: str, limit_bytes: bool = True,
                       keep: bool = False) -> np.ndarray:
        """The whole window ``(len(chans), n)``, read-only: from the cache, from
        whoever is assembling it right now, or assembled here (see
        :meth:`read_chunks`). ``keep``: cache it even if not asked for before."""
        wkey = self.window_key(rec, chans, fs, t0, t1)
        rows = self.cache.get(wkey)
        if rows is not None:
            return rows
        ikey = wkey + (rec.generation,)    # never share across versions of the files
        with self._lock:
            entry = self._window_inflight.get(ikey)
            owner = entry is None
            if owner:
                # [future, keep, lane]: keep it if asked for before, or by another
                # meanwhile; lane: who assembles it
                entry = self._window_inflight[ikey] = [cf.Future(),
                                                       keep or wkey in self._recent_windows,
                                                       lane]
                if not keep:
                    self._recent_windows[wkey] = None
                    if len(self._recent_windows) > self._RECENT_WINDOWS:
                        self._recent_windows.pop(next(iter(self._recent_windows)))
            else:
                entry[1] = True
            fut = entry[0]
        if not owner:
            urgent = lane == "fg" and entry[2] == "bg"     # assembled ahead: see fetch_tiles
            with self.decoder.urgent() if urgent else contextlib.nullcontext():
                return fut.result()
        try:
            _, _, rows = next(self.assemble_chunks(rec, chans, fs, t0, t1, n,
                                                   lane, None, limit_bytes))
            rows.flags.writeable = False
            with self._lock:
                del self._window_inflight[ikey]
                keep = entry[1]
            if keep and not rec.closed and not rec.superseded:
                self.cache.put(wkey, rows)
            fut.set_result(rows)
            return rows
        except BaseException as e:
            with self._lock:
                self._window_inflight.pop(ikey, None)
            fut.set_exception(e)
            raise

    #: Largest window (float32 bytes) a steady reader's next window is assembled
    #: ahead for (see :meth:`prefetch_later`): 64 channels x 10 s at 256 Hz is 655 KB.
    PREASSEMBLE_MAX_BYTES = 1 << 20

    def _preassemble(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                     t0: int, t1: int) -> None:
        """Assemble the window ``[t0, t1)`` into the cache from its tiles (decoded on
        the background lane if missing): the next page of a steady reader is then
        one cache lookup, like a warm read. Best effort; never raises."""
        try:
            if self._closed or rec.closed or rec.superseded or t1 > rec.end_uutc:
                return      # (a window past the end would change when the files grow)
            n = tg.samples_in_window(t0, t1, fs)
            if n <= 0 or n * len(chans) * 4 > self.PREASSEMBLE_MAX_BYTES:
                return
            wkey = self.window_key(rec, chans, fs, t0, t1)
            with self._lock:
                # Asked for already (a reader faster than this thread): never twice.
                if wkey in self._recent_windows \
                        or wkey + (rec.generation,) in self._window_inflight:
                    return
            if wkey in self.cache:
                return
            self._shared_window(rec, chans, fs, t0, t1, n, "bg", keep=True)
            with self._lock:
                self.stats.windows_preassembled += 1
        except Exception:  # noqa: BLE001 - best effort, like prefetch
            log.debug("pre-assembling a window failed", exc_info=True)

    #: Largest window (float32 bytes) shared by concurrent readers and kept when
    #: asked for twice (see :meth:`read_chunks`): 128 channels x 10 s at 256 Hz
    #: is 1.3 MB, 64 x 60 s is 3.9 MB.
    WINDOW_SHARE_BYTES = 4 << 20

    def assemble_chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
                        t1: int, per_chunk: int, lane: str = "fg",
                        on_chunk: Optional[Callable[[int, int], None]] = None,
                        limit_bytes: bool = True) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(j0, j1, rows)`` covering the window ``[t0, t1)`` at ``fs`` Hz.

        ``rows`` is a fresh C-contiguous float32 array ``(len(chans), j1 - j0)``.
        Before a chunk is yielded the next one's missing tiles are already
        being decoded in the background lane, so decode overlaps sending.
        ``limit_bytes=False`` skips the ``MAX_READ_MB`` check, for callers that
        consume the chunks as they come (``n_points`` reads) and never hold
        the window; ``per_chunk`` must then be a multiple of
        :func:`.tile_grid.exact_period_samples` for bounded memory.
        """
        n = tg.samples_in_window(t0, t1, fs)
        if n <= 0:
            return
        nbytes = n * len(chans) * 4
        if limit_bytes and nbytes > self.max_read_bytes:
            raise ResourceLimit(
                f"the window holds {n} samples x {len(chans)} channels = "
                f"{nbytes / 2**20:.0f} MB of float32, over the server's limit of "
                f"{self.max_read_bytes / 2**20:.0f} MB (MAX_READ_MB); read it in parts")
        groups = self.plan_groups(rec, chans, fs)
        # Channels whose tiles cannot be sliced exactly for this window are read directly.
        direct: list[int] = []
        sliced_groups = []
        for (grid, native), idxs in groups.items():
            M, phase = tg.window_offset(grid, t0)
            # Grid-level conditions are the same for every channel of the group.
            grid_ok = abs(float(phase)) < 0.5 - tg.PHASE_TOLERANCE \
                and self._grid_tiles_aligned(grid)
            keep = []
            for i in idxs:
                ch = chans[i]
                if grid.fs < native:
                    keep.append(i)          # reduced rates are defined by their tiles
                elif not ch.index_ordered:
                    direct.append(i)        # its index cannot say where blocks are
                elif grid_ok and self._on_grid(rec, ch, grid):
                    keep.append(i)
                elif self._exact_for_window(rec, ch, grid, phase, M, n):
                    keep.append(i)
                else:
                    direct.append(i)
            if keep:
                sliced_groups.append((grid, native, keep))
        q = tg.exact_period_samples(fs) or 0
        # Cold windows whose tiles would decode far more than the window itself
        # (short MEF blocks at high rates): the window first, its tiles after.
        first: list[int] = []
        first_groups = []
        if lane == "fg":
            for g in list(sliced_groups):
                grid, native, idxs = g
                if grid.fs >= native and self._window_first(rec, [chans[i] for i in idxs],
                                                             grid, t0, t1, n):
                    sliced_groups.remove(g)
                    first.extend(idxs)
                    first_groups.append(g)
        if first:
            with self._lock:
                self.stats.window_first_reads += 1
        if direct:
            with self._lock:
                self.stats.direct_reads += 1
        bounds = tg.chunk_bounds(n, per_chunk)
        # Channels read directly for the whole window at once: window-first ones,
        # and off-grid ones when chunk starts would fall between microseconds.
        whole = list(first)
        if direct and (not q or per_chunk % q):
            whole, direct = whole + direct, []
        # (output rows, decoded part) per part: the parts are never joined (a
        # copy of the whole window: 0.13-0.2 s for 84 MB, 64 ch x 10 s at 32 kHz).
        whole_parts = []
        if whole:
            o = 0
            for rows in self._direct_split(rec, [chans[i] for i in whole], t0, t1, lane):
                idx = whole[o:o + len(rows)]
                o += len(rows)
                run = idx == list(range(idx[0], idx[0] + len(idx)))
                whole_parts.append((slice(idx[0], idx[0] + len(idx)) if run else idx, rows))
        for grid, native, idxs in first_groups:       # their tiles, in the background
            self._schedule(rec, [chans[i] for i in idxs], grid, t0, n, 0, n)
        # Chunks whose tiles are decoding ahead of the one being sent (see
        # DECODE_AHEAD_BYTES), never more than a quarter of the cache (as prefetch).
        ahead = max(1, min(self.DECODE_AHEAD_BYTES, self.cache.max_bytes // 4)
                    // max(1, per_chunk * len(chans) * 4))
        scheduled = 1           # chunks [0, scheduled) are decoded or decoding
        for ci, (j0, j1) in enumerate(bounds):
            out = np.empty((len(chans), j1 - j0), dtype=np.float32)
            for grid, native, idxs in sliced_groups:
                self._fill(rec, chans, grid, idxs, t0, n, j0, j1, out, lane)
            for idx, rows in whole_parts:
                out[idx] = rows[:, j0:j1]
            if direct:          # off-grid channels, read chunk by chunk
                a = t0 + int(Fraction(j0 * 10**6) / Fraction(fs))
                b = t1 if j1 == n else t0 + int(Fraction(j1 * 10**6) / Fraction(fs))
                out[direct] = self._direct(rec, [chans[i] for i in direct], a, b, lane)
            if lane == "fg" and sliced_groups:
                # One background job per chunk, in order: each chunk's tiles are
                # published as soon as they are decoded (a job of many chunks
                # would hold the next chunk back until all of them are).
                while scheduled < min(len(bounds), ci + 1 + ahead):
                    nj0, nj1 = bounds[scheduled]
                    for grid, native, idxs in sliced_groups:
                        self._schedule(rec, [chans[i] for i in idxs], grid, t0, n, nj0, nj1)
                    scheduled += 1
            if on_chunk is not None:
                on_chunk(j0, j1)
            yield j0, j1, out

    #: Bytes of a long window's chunks whose tiles decode in the background while
    #: an earlier chunk is sent (:meth:`assemble_chunks`). With only the next
    #: chunk ahead, decoding and sending took turns: a cold 600 s x 64 ch read
    #: (38 chunks) took 1.6x a direct mef3io read (benchmarks/decisions.md).
    DECODE_AHEAD_BYTES = 8 << 20

    #: A cold window is decoded directly (then its tiles in the background) when
    #: its tiles' MEF blocks hold at least this many times the window's blocks.
    WINDOW_FIRST_RATIO = 1.5
    #: ... and when the window is at most this many float32 bytes (held whole).
    WINDOW_FIRST_MAX_BYTES = 256 << 20

    def _window_first(self, rec: Recording, group: Sequence[ChannelInfo], grid: tg.TileGrid,
                      t0: int, t1: int, n: int) -> bool:
        """Whether a read of ``[t0, t1)`` should decode the window itself first.

        Only when none of the group's tiles for it is cached or being decoded
        (a cold read), the window fits :attr:`WINDOW_FIRST_MAX_BYTES`, and the
        tiles span MEF blocks holding at least :attr:`WINDOW_FIRST_RATIO` times
        the samples of the blocks the window touches (a direct read decodes
        whole blocks too): e.g. 10 s at 32 kHz (1 s blocks) straddles two
        10 s tiles, 2x the decode. At 256 Hz (10 s blocks, 10 s tiles) never.
        """
        if n * len(group) * 4 > self.WINDOW_FIRST_MAX_BYTES or self._closed:
            return False
        M, _ = tg.window_offset(grid, t0)
        ks = grid.tiles_for_span(M, M + n)
        if not len(ks):
            return False
        a, b = grid.tile_start(ks[0]), grid.tile_start(ks[-1] + 1)
        ch = group[0]
        tiles_span = _blocks_span(ch, a, b)
        window_span = _blocks_span(ch, t0, t1)
        if window_span <= 0 or tiles_span < self.WINDOW_FIRST_RATIO * window_span:
            return False
        rkey, fs = rec.key, float(grid.fs)
        keys = [(rkey, c.name, fs, int(k)) for k in ks for c in group]
        with self._lock:
            if any(key in self._inflight for key in keys):
                return False
        return not any(key in self.cache for key in keys)

    def _direct_split(self, rec: Recording, chans: Sequence[ChannelInfo], a: int, b: int,
                      lane: str = "fg") -> list[np.ndarray]:
        """Direct read of ``[a, b)``, its channels split over parallel mef3io reads
        (see :meth:`split_channels`): the first part in this thread, the others on
        the lane's workers. One ``(len(part), n)`` float32 array per part, in the
        order of ``chans``."""
        parts = self.split_channels(list(chans))
        futs = []
        for part in parts[1:]:
            try:
                futs.append(self.decoder.submit(rec.source, [c.name for c in part], a, b, lane))
            except Exception as e:  # noqa: BLE001
                raise decode_failure(rec, [c.name for c in part], a, b, e) from e
        rows = [self._direct(rec, parts[0], a, b, lane)]
        for part, fut in zip(parts[1:], futs):
            try:
                rows.append(np.asarray(fut.result(), dtype=np.float32))
            except Exception as e:  # noqa: BLE001
                raise decode_failure(rec, [c.name for c in part], a, b, e) from e
        return rows

    def _exact_for_window(self, rec, ch, grid, phase, M, n) -> bool:
        for k in grid.tiles_for_span(M, M + n):
            a, b = grid.tile_window(k)
            if not tg.slicing_is_exact(grid, phase, k, rec.phases_in_window(ch, grid, a, b)):
                return False
        return True

    def _direct(self, rec, chans, a, b, lane) -> np.ndarray:
        try:
            return self.decoder.decode(rec.source, [c.name for c in chans], a, b, lane)
        except Exception as e:  # noqa: BLE001
            raise decode_failure(rec, [c.name for c in chans], a, b, e) from e

    def _fill(self, rec, chans, grid, idxs, t0, n, j0, j1, out, lane) -> None:
        plan = tg.plan_window(grid, t0, n, j0, j1)
        group = [chans[i] for i in idxs]
        tiles = self.fetch_tiles(rec, group, grid, [p.tile for p in plan.pieces], lane)
        # Rows idxs[0] .. idxs[-1] in order (the usual case): one np.stack per
        # piece straight into the output, instead of one assignment per channel.
        rows = slice(idxs[0], idxs[-1] + 1) if idxs[-1] - idxs[0] + 1 == len(idxs) else None
        for p in plan.pieces:
            o0, o1 = p.out_start - j0, p.out_stop - j0
            a, b, k = p.tile_start, p.tile_stop, p.tile
            if rows is not None and len(group) > 1:
                np.stack([tiles[(ch.name, k)][a:b] for ch in group], out=out[rows, o0:o1])
                continue
            for i, ch in zip(idxs, group):
                out[i, o0:o1] = tiles[(ch.name, k)][a:b]

    # ------------------------------------------------------------ prefetch

    def _schedule(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                  t0: int, n: int, j0: int, j1: int) -> int:
        """Start background decodes of the missing tiles of window samples ``[j0, j1)``."""
        if self._closed or rec.closed or rec.superseded:
            return 0
        M, _ = tg.window_offset(grid, t0)
        started = 0
        jobs: dict[int, list[ChannelInfo]] = defaultdict(list)
        owned: dict[tuple, "_TileFuture"] = {}
        rkey = rec.key
        fs = float(grid.fs)
        ks = [int(k) for k in grid.tiles_for_span(j0 + M, j1 + M)]
        with_data: dict[int, list[ChannelInfo]] = {k: [] for k in ks}
        for ch in chans:
            for k, has in zip(ks, self._has_data_tiles(rec, ch, grid, ks)):
                if has:
                    with_data[k].append(ch)
        for k in ks:
            absent = [(ch, key) for ch, key in ((ch, (rkey, ch.name, fs, k))
                                                for ch in with_data[k])
                      if key not in self.cache]
            if not absent:
                continue
            with self._lock:
                for ch, key in absent:
                    if key in self._inflight:
                        continue
                    owned[key] = self._claim(key, "bg")
                    jobs[k].append(ch)
                    started += 1
        if jobs:
            self._run_jobs(rec, grid, jobs, owned, "bg")
        return started

    def prefetch(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                 t0: int, t1: int, extra_ahead: int = 0) -> int:
        """Warm ``PREFETCH_AHEAD_WINDOWS`` windows after and ``..._BEHIND_...`` before ``[t0, t1)``.

        Windows are of the request's own size, clipped to the recording; tiles
        cached or being decoded are skipped. ``extra_ahead``: more windows ahead
        for a steady reader (see :meth:`prefetch_later`), as many as fit in the
        per-request budget. Returns how many tile decodes started.
        """
        if (self.prefetch_ahead <= 0 and self.prefetch_behind <= 0) or t1 <= t0:
            return 0
        span = t1 - t0
        n = tg.samples_in_window(t0, t1, fs)
        # Never prefetch more than a quarter of the cache budget per request.
        budget = self.cache.max_bytes // 4
        window_bytes = n * len(chans) * 4
        need = window_bytes * (self.prefetch_ahead + self.prefetch_behind)
        if need > budget:
            return 0
        room = (budget - need) // max(1, window_bytes)
        ahead = self.prefetch_ahead + max(0, min(extra_ahead, room))
        started = 0
        offsets = [i for i in range(1, ahead + 1)] + \
                  [-i for i in range(1, self.prefetch_behind + 1)]
        now = time.monotonic()
        for (grid, native), idxs in self.plan_groups(rec, chans, fs).items():
            group = [chans[i] for i in idxs]
            names = tuple(c.name for c in group)
            for off in offsets:
                a = t0 + off * span
                if a >= rec.end_uutc or a + span <= rec.start_uutc:
                    continue
                # A steady reader's next windows were planned by its previous
                # reads: checking their tiles again (every channel x tile) is
                # skipped for PLANNED_FRESH_S. A tile evicted meanwhile is
                # decoded by the read that needs it, as without prefetch.
                pkey = (rec.key, rec.generation, grid, a, n, names)
                if now - self._planned.get(pkey, -1e9) < self.PLANNED_FRESH_S:
                    self.stats.prefetch_windows_skipped += 1
                    continue
                try:
                    started += self._schedule(rec, group, grid, a, n, 0, n)
                except Exception:  # noqa: BLE001 - prefetch is best effort
                    log.debug("prefetch scheduling failed", exc_info=True)
                    continue
                if len(self._planned) > 4096:
                    self._planned.clear()
                self._planned[pkey] = now
                self.stats.prefetch_windows_planned += 1
        return started

    #: Seconds a window's prefetch plan stays fresh (see :meth:`prefetch`).
    PLANNED_FRESH_S = 2.0

    # ------------------------------------------------------------ life cycle

    def forget(self, rec: Recording) -> int:
        """Drop every tile of this version of the recording from the cache."""
        key = rec.key
        n = self.cache.evict_matching(lambda k: k[0] == key)
        with self._lock:
            for k in [k for k in self._prefetched if k[0] == key]:
                del self._prefetched[k]
            # (a snapshot: the planner thread adds plans without the lock)
            for k in [k for k in list(self._planned) if k[0] == key]:
                self._planned.pop(k, None)
        version = (rec.path, rec.generation)
        for k in [k for k in list(self._memo) if k[:2] == version]:
            self._memo.pop(k, None)
        return n

    def close(self) -> None:
        self._closed = True
        self._planner.shutdown(wait=False, cancel_futures=True)
        self._assembler.shutdown(wait=False, cancel_futures=True)

    def prefetch_later(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                       t0: int, t1: int) -> cf.Future:
        """:meth:`prefetch` on the planner thread: the caller (a read about to send
        its last chunk) does not wait for the planning. Returns its future.

        The planning (and a steady reader's next window) starts
        :attr:`prefetch_grace_s` seconds later: the last chunk has then reached
        the client, which still has to take it in; background decodes started
        at once would take the cores from it (benchmarks/decisions.md).
        """
        done: cf.Future = cf.Future()
        done.set_result(0)
        if self._closed:
            return done
        # A reader repeating the same window (a viewer redrawing) needs no new
        # plan each time: the same prefetch is planned at most every 0.5 s.
        key = (rec.key, rec.generation, float(fs), t0, t1, len(chans),
               chans[0].name if chans else "", chans[-1].name if chans else "")
        now = time.monotonic()
        if now - self._recent_plans.get(key, -1.0) < 0.5:
            return done
        if len(self._recent_plans) > 1024:
            self._recent_plans.clear()
        self._recent_plans[key] = now
        # A steady reader (this window starts where a window of the same size and
        # channels ended) gets STEADY_EXTRA_AHEAD more windows ahead, so decode
        # keeps ahead of it on every core (docs/benchmarks.md).
        stream = key[:2] + (float(fs), t1 - t0) + key[5:]
        steady = self._stream_ends.get(stream) == t0 and self.prefetch_ahead > 0
        if len(self._stream_ends) > 1024:
            self._stream_ends.clear()
        self._stream_ends[stream] = t1
        extra = self.STEADY_EXTRA_AHEAD if steady else 0
        due = now + self.prefetch_grace_s
        try:
            planned = self._planner.submit(self._when_due, due, self._prefetch_quietly, rec,
                                           list(chans), fs, t0, t1, extra)
            if steady:
                # Its next window, assembled: the next page is a cache lookup.
                self._assembler.submit(self._when_due, due, self._preassemble, rec, list(chans),
                                       fs, t1, t1 + (t1 - t0))
            return planned
        except RuntimeError:        # shut down under us
            return done

    #: Default :attr:`prefetch_grace_s`. Measured 2026-12-02 (10 s x 64 ch pages,
    #: 100 ms apart): a median page took 0.3-0.8 ms longer with no grace than
    #: with 3 ms; 3 ms and 8 ms did the same.
    PREFETCH_GRACE_S = 0.003

    def _when_due(self, due: float, fn, *args):
        """Run ``fn(*args)`` on this thread once ``time.monotonic()`` reaches ``due``."""
        wait = due - time.monotonic()
        if wait > 0 and not self._closed:
            time.sleep(wait)
        return fn(*args)

    #: Windows prefetched beyond PREFETCH_AHEAD_WINDOWS for a steady reader.
    STEADY_EXTRA_AHEAD = 2

    def _prefetch_quietly(self, rec, chans, fs, t0, t1, extra_ahead=0) -> int:
        try:
            return self.prefetch(rec, chans, fs, t0, t1, extra_ahead)
        except Exception:  # noqa: BLE001 - prefetch is best effort
            log.debug("prefetch failed", exc_info=True)
            return 0


def _blocks_span(ch: ChannelInfo, a: int, b: int) -> int:
    """uUTC covered by the MEF blocks of ``ch`` that overlap ``[a, b)`` (what a read
    of that window decodes), 0 when none does."""
    lo = int(np.searchsorted(ch.block_ends, a, side="right"))
    hi = int(np.searchsorted(ch.block_starts, b, side="left"))
    if hi <= lo:
        return 0
    return int((ch.block_ends[lo:hi] - ch.block_starts[lo:hi]).sum())


def decode_failure(rec: Recording, names: Sequence[str], a: int, b: int,
                   exc: BaseException) -> DecodeFailed:
    """A :class:`DecodeFailed` naming the recording, channels and window ``[a, b)`` uUTC.

    mef3io refuses a damaged block as a whole (e.g. ``CrcError: RED block CRC
    mismatch``), so the client learns where: which channels, which stretch of
    time (uUTC and ISO 8601 UTC), and what mef3io said.
    """
    import datetime as _dt

    def iso(t: int) -> str:
        try:
            return _dt.datetime.fromtimestamp(t / 1e6, _dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        except (OverflowError, OSError, ValueError):
            return "?"

    shown = ", ".join(list(names)[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    reason = str(exc)
    if isinstance(exc, DecodeFailed) and reason.startswith("decoding failed: "):
        reason = reason[len("decoding failed: "):]
    kind = "" if isinstance(exc, DecodeFailed) else f"{type(exc).__name__}: "
    return DecodeFailed(f"decoding channel {shown} of {rec.path} in [{a}, {b}) uUTC "
                        f"({iso(a)} to {iso(b)}) failed: {kind}{reason}")


@functools.lru_cache(maxsize=4096)
def _tile_windows(grid: tg.TileGrid, ks: tuple) -> tuple[list[int], list[int]]:
    """Starts and ends (uUTC) of tiles ``ks`` of ``grid``: asked for every channel of
    a read or a prefetch plan, computed once."""
    win = [grid.tile_window(k) for k in ks]
    return [a for a, _ in win], [b for _, b in win]


class _TileFuture:
    """A tile being decoded: settled once (a tile or an exception), awaited by any
    number of reads.

    The subset of ``concurrent.futures.Future`` the tile store uses, on one
    lock held until it settles. A ``Future`` (a Condition, an RLock, a deque,
    lists) took 5.5 us to make and 11 objects the garbage collector tracks,
    this 0.5 us and 2 (measured 2026-12-02); a 60 s x 64 channel window in
    flight is 384 of them.
    """

    __slots__ = ("_settled", "_value", "_exc", "_done")

    def __init__(self):
        self._settled = threading.Lock()
        self._settled.acquire()          # released once, when settled
        self._value = self._exc = None
        self._done = False

    def set_result(self, value) -> None:
        self._value, self._done = value, True
        self._settled.release()

    def set_exception(self, exc: BaseException) -> None:
        self._exc, self._done = exc, True
        self._settled.release()

    def done(self) -> bool:
        return self._done

    def result(self, timeout: Optional[float] = None):
        """The tile, once settled (raises its exception; ``TimeoutError`` after
        ``timeout`` seconds)."""
        if not self._done:
            if not self._settled.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError("the tile is still being decoded")
            self._settled.release()      # the next waiter goes on at once
        if self._exc is not None:
            raise self._exc
        return self._value


class _JobRun:
    """The tiles one :meth:`TileStore._run_jobs` call owns, decoded and published.

    Holds no reference to the futures it waits on, so when the last decode
    is published nothing refers to it any more and the tiles in ``owned``
    are freed by reference counting (no garbage-collector pass needed).
    """

    __slots__ = ("store", "rec", "grid", "jobs", "owned", "lane")

    def __init__(self, store: TileStore, rec: Recording, grid: tg.TileGrid,
                 jobs: dict[int, list[ChannelInfo]], owned: dict[tuple, "_TileFuture"],
                 lane: str):
        self.store, self.rec, self.grid = store, rec, grid
        self.jobs, self.owned, self.lane = jobs, owned, lane

    def publish(self, k: int, chans: list[ChannelInfo], rows=None, exc=None) -> None:
        """Tile ``k`` of ``chans`` (``rows[i]`` for ``chans[i]``) to the cache and its
        waiters, or ``exc`` to its waiters: one cache call and one lock per tile."""
        store, rec, lane = self.store, self.rec, self.lane
        rkey, fk = rec.key, float(self.grid.fs)
        keys = [(rkey, ch.name, fk, int(k)) for ch in chans]
        tiles = []
        keep = False
        if exc is None:
            for i in range(len(chans)):
                tile = np.ascontiguousarray(rows[i])
                tile.flags.writeable = False
                tiles.append(tile)
            keep = not rec.closed and not rec.superseded
            if keep:
                store.cache.put_many(zip(keys, tiles))
        with store._lock:
            for key in keys:
                store._inflight.pop(key, None)
                store._bg_inflight.discard(key)
            if exc is None:
                store.stats.tiles_decoded += len(chans)
                if lane == "bg":
                    store.stats.prefetch_tiles_decoded += len(chans)
                    if keep:
                        for key in keys:
                            store._prefetched[key] = None
                        while len(store._prefetched) > 100_000:
                            store._prefetched.pop(next(iter(store._prefetched)))
        if exc is None:
            for key, tile in zip(keys, tiles):
                self.owned[key].set_result(tile)
        else:
            for key in keys:
                self.owned[key].set_exception(exc)

    def failure(self, e: BaseException, k: int) -> BaseException:
        a, b = self.grid.tile_window(k)
        return decode_failure(self.rec, [c.name for c in self.jobs[k]], a, b, e)

    def failed(self, ks, chans, e: BaseException, inline: bool) -> None:
        """A run that fails (a damaged block refuses the whole read) is decoded
        again tile by tile: only the damaged tile fails, naming its own window.
        A cancelled run (the decoder shutting down) is not retried: its
        retries could only be submitted to the pool being shut down."""
        if len(ks) > 1 and not isinstance(e, cf.CancelledError) and not self.store._closed:
            for k in ks:
                self.decode([k], chans, inline)
        else:
            for k in ks:
                self.publish(k, chans, exc=self.failure(e, k))

    def decode(self, ks, chans, inline: bool = False) -> None:
        """Decode run ``ks`` in this thread (inline) or on the lane's workers."""
        try:
            got = self.store._decode_tile_rows(self.rec, chans, self.grid, ks, self.lane,
                                               inline=inline)
        except BaseException as e:  # noqa: BLE001
            self.failed(ks, chans, e, inline)
            return
        if inline:
            for k, rows in zip(ks, got):
                self.publish(k, chans, rows)
            return
        got.add_done_callback(functools.partial(self.done, ks, chans))

    def done(self, ks, chans, f: cf.Future) -> None:
        exc = f.exception()
        if exc is None:
            for k, rows in zip(ks, f.result()):
                self.publish(k, chans, rows)
        else:
            self.failed(ks, chans, exc, False)
