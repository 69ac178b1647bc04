"""Tiles of one grid: from the cache, or decoded once and published.

One fetch, top-down: tiles with no data are NaN tiles; the others are looked
up in the cache in one call; the missing are joined (someone decodes them
already) or claimed in the compute-once registry (:mod:`.inflight`); the
claimed are cut into mef3io reads by :mod:`.decode_plan`, decoded by the
:class:`~.decode.Decoder` (in this thread or on the lane's workers), cut back
into tiles (reduced with :func:`.reduction.minmax_ordered` at rates below the
native one) and published: to the cache in one call, then to their waiters.

Tiles are float32 arrays of ``grid.tile_samples``, read-only. A tile's cache
key is :func:`.cache_keys.tile_key`.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
from typing import Sequence

import logging

import numpy as np

from . import decode_plan
from . import tile_grid as tg
from .cache_keys import tile_key
from .decode import Decoder
from .errors import Cancelled, DecodeFailed, decode_failure
from .inflight import Inflight, Lane, Pending
from .recordings import ChannelInfo, Recording
from .reduction import minmax_ordered
from .store_stats import PrefetchLedger, StoreStats
from .store_tuning import StoreTuning
from .tile_cache import TileCache

log = logging.getLogger("mef3io_server.tiles")


class TileFetcher:
    """Fetch tiles (see module docstring); shares its cache, decoder, registry,
    counters and tunables with the rest of the tile store."""

    def __init__(self, cache: TileCache, decoder: Decoder, inflight: Inflight,
                 stats: StoreStats, ledger: PrefetchLedger, tuning: StoreTuning):
        self.cache = cache
        self.decoder = decoder
        self.inflight = inflight
        self.stats = stats
        self.ledger = ledger
        self.tuning = tuning
        self.closed = False
        self._nan_tiles: dict[int, np.ndarray] = {}
        # Starts background decodes off the request thread (start_background_soon).
        self._soon = cf.ThreadPoolExecutor(1, thread_name_prefix="tiles-soon")

    def nan_tile(self, n: int) -> np.ndarray:
        """A read-only all-NaN tile of ``n`` samples (shared)."""
        t = self._nan_tiles.get(n)
        if t is None:
            t = np.full(n, np.nan, dtype=np.float32)
            t.flags.writeable = False
            if len(self._nan_tiles) < 64:
                self._nan_tiles[n] = t
        return t

    def split_channels(self, chans: list) -> list[list]:
        """:func:`.decode_plan.split_channels` with this store's ``split_ways``."""
        return decode_plan.split_channels(chans, self.tuning.split_ways)

    # ------------------------------------------------------------ foreground

    def fetch(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
              tiles: Sequence[int], lane: Lane = Lane.FOREGROUND, cancel=None
              ) -> dict[tuple[str, int], np.ndarray]:
        """Tiles ``tiles`` of every channel in ``chans`` (all on ``grid``), decoding the
        missing. Returns ``{(channel, k): float32 array of grid.tile_samples}``.

        ``cancel``: the read's cancel token (foreground only): the decodes this
        call owns stop when it fires (:class:`.errors.Cancelled`); tiles another
        read was decoding when that read was cancelled are decoded here again.
        """
        fs = float(grid.fs)
        L = grid.tile_samples
        rkey = rec.key
        result: dict[tuple[str, int], np.ndarray] = {}
        probe: list[tuple[ChannelInfo, int, tuple]] = []
        ks = [int(k) for k in tiles]
        for ch, flags in zip(chans, rec.has_data_tiles(chans, grid, ks)):
            for k, has in zip(ks, flags):
                if not has:
                    result[(ch.name, k)] = self.nan_tile(L)
                    continue
                probe.append((ch, k, tile_key(rkey, ch.name, fs, k)))
        if not probe:
            return result
        arrs = self.cache.get_many([p[2] for p in probe])
        missing = []
        hit_keys = []
        for (ch, k, key), arr in zip(probe, arrs):
            if arr is not None:
                result[(ch.name, k)] = arr
                hit_keys.append(key)
            else:
                missing.append((ch, k, key))
        ledger = self.ledger
        if hit_keys and ledger:
            ledger.read(hit_keys)
        if not missing:
            return result
        futs, owns = self.inflight.join_or_claim([m[2] for m in missing], lane)
        jobs: dict[int, list[ChannelInfo]] = {}
        owned: dict[tuple, Pending] = {}
        waited: list[tuple] = []         # keys decoded by others (in flight)
        urgent = False
        for (ch, k, key), fut, own in zip(missing, futs, owns):
            if own:
                owned[key] = fut
                jobs.setdefault(k, []).append(ch)
            else:
                waited.append(key)
                urgent = urgent or fut.lane is Lane.BACKGROUND
        if jobs:
            self.run_jobs(rec, grid, jobs, owned, lane, cancel)
        # Waiting for the background lane: it must not wait for other reads' decodes.
        urgent = urgent and lane is Lane.FOREGROUND
        again: dict[str, ChannelInfo] = {}
        again_ks: set[int] = set()
        with self.decoder.urgent() if urgent else contextlib.nullcontext():
            for (ch, k, _), fut in zip(missing, futs):
                try:
                    result[(ch.name, k)] = fut.result()
                except Cancelled:
                    if cancel is not None and cancel.cancelled:
                        raise
                    again[ch.name] = ch         # another read's, cancelled: decode it here
                    again_ks.add(k)
        if again:
            got = self.fetch(rec, list(again.values()), grid, sorted(again_ks), lane, cancel)
            for (ch, k, _) in missing:
                if (ch.name, k) not in result:
                    result[(ch.name, k)] = got[(ch.name, k)]
        if waited and ledger:
            # Tiles prefetch was still decoding when asked for: read now, as hits are.
            ledger.read(waited)
        return result

    # ------------------------------------------------------------ background

    def start_background(self, rec: Recording, chans: Sequence[ChannelInfo],
                         grid: tg.TileGrid, t0: int, j0: int, j1: int) -> int:
        """Start background decodes of the missing tiles holding samples ``[j0, j1)``
        of the window starting at ``t0``; returns how many tile decodes started."""
        if self.closed or rec.closed or rec.superseded:
            return 0
        M, _ = tg.window_offset(grid, t0)
        jobs: dict[int, list[ChannelInfo]] = {}
        owned: dict[tuple, Pending] = {}
        rkey = rec.key
        fs = float(grid.fs)
        ks = [int(k) for k in grid.tiles_for_span(j0 + M, j1 + M)]
        with_data: dict[int, list[ChannelInfo]] = {k: [] for k in ks}
        for ch, flags in zip(chans, rec.has_data_tiles(chans, grid, ks)):
            for k, has in zip(ks, flags):
                if has:
                    with_data[k].append(ch)
        cache = self.cache
        for k in ks:
            absent = {tile_key(rkey, ch.name, fs, k): ch for ch in with_data[k]}
            absent = {key: ch for key, ch in absent.items() if key not in cache}
            if not absent:
                continue
            claimed = self.inflight.claim_free(absent, Lane.BACKGROUND)
            for key, fut in claimed.items():
                owned[key] = fut
                jobs.setdefault(k, []).append(absent[key])
        if jobs:
            self.run_jobs(rec, grid, jobs, owned, Lane.BACKGROUND)
        return len(owned)

    def start_background_soon(self, rec: Recording, chans: Sequence[ChannelInfo],
                              grid: tg.TileGrid, t0: int, j0: int, j1: int) -> cf.Future:
        """:meth:`start_background` on a thread of its own: the block index it needs
        is read there, not in the request's thread. Best effort (a recording
        closed meanwhile starts nothing)."""
        def run() -> int:
            try:
                return self.start_background(rec, chans, grid, t0, j0, j1)
            except Exception:  # noqa: BLE001 - decoding ahead is best effort
                if not (self.closed or rec.closed):
                    log.debug("background decodes of %s could not start", rec.path,
                              exc_info=True)
                return 0
        try:
            return self._soon.submit(run)
        except RuntimeError:        # closed
            done: cf.Future = cf.Future()
            done.set_result(0)
            return done

    def close(self) -> None:
        """Start nothing more; let the thread starting background decodes end."""
        self.closed = True
        self._soon.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ decoding

    def run_jobs(self, rec: Recording, grid: tg.TileGrid, jobs: dict[int, list[ChannelInfo]],
                 owned: dict[tuple, Pending], lane: Lane, cancel=None) -> None:
        """Decode the tiles this call owns (tile -> channels); publish them to the
        cache and to their waiters.

        The work is a :class:`_JobRun` (an object, not closures that refer to
        one another: such a cycle kept every decoded tile of the call alive
        until the garbage collector's next pass, docs/reliability.md).
        """
        run = _JobRun(self, rec, grid, jobs, owned, lane,
                      cancel if lane is Lane.FOREGROUND else None)
        t = self.tuning
        runs = decode_plan.tile_runs(grid, jobs, t.split_ways, run_max_bytes=t.run_max_bytes,
                                     run_min_tiles=t.run_min_tiles)
        fg = lane is Lane.FOREGROUND
        if fg and self.decoder.foreground_decodes() >= t.split_ways:
            # Every core already decodes for other reads: parts on the lane's
            # workers would only queue behind theirs. This thread decodes its
            # runs whole, and the OS shares the cores between the reads.
            for ks, chans in runs:
                run.decode(ks, chans, True)
            return
        items = [(ks, part) for ks, chans in runs for part in self.split_channels(chans)]
        if fg and len(items) < t.min_parallel_tiles:
            for ks, part in items:
                run.decode(ks, part, True)
            return
        if fg:
            # All but the first go to the lane's workers; the first is decoded
            # in this (already waiting) thread, which saves a hand-off.
            for ks, part in items[1:]:
                run.decode(ks, part)
            run.decode(*items[0], True)
            return
        for ks, part in items:
            run.decode(ks, part)

    def decode_rows(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                    ks: Sequence[int], lane: Lane, inline: bool, cancel=None):
        """Decode the consecutive tiles ``ks`` of ``chans`` (same native rate and grid)
        with ONE mef3io read of ``[tile_start(ks[0]), tile_start(ks[-1] + 1))`` uUTC.

        Returns the list of per-tile rows ``(len(chans), grid.tile_samples)``
        float32, one per tile of ``ks`` (inline), or a future of that list.
        ``ks`` must be a run of :func:`.decode_plan.tile_runs`, so the read's
        samples split exactly into the per-tile reads; a reduced tile is the
        reduction of its own native span, as when decoded alone. Raises (or
        fails the future) on a decode error or when the read's length is not
        the sum of the tiles' (never mis-sliced).
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
            spans = decode_plan.run_spans(grid, native, ks)
            if rows.shape[1] != sum(spans):
                raise DecodeFailed(f"a read of tiles {ks[0]}..{ks[-1]} returned "
                                   f"{rows.shape[1]} samples, not {sum(spans)}")
            out, o = [], 0
            for n in spans:
                out.append(finish_tile(rows[:, o:o + n], True))
                o += n
            return out

        if inline:
            return finish(self.decoder.decode(rec.source, names, a, b, lane, cancel=cancel))
        fut = self.decoder.submit(rec.source, names, a, b, lane, cancel=cancel)
        out: cf.Future = cf.Future()

        def done(f):
            try:
                out.set_result(finish(f.result()))
            except BaseException as e:  # noqa: BLE001
                out.set_exception(e)
        fut.add_done_callback(done)
        return out

    def publish(self, rec: Recording, grid: tg.TileGrid, k: int, chans: list[ChannelInfo],
                owned: dict[tuple, Pending], lane: Lane, rows=None, exc=None) -> None:
        """Tile ``k`` of ``chans`` (``rows[i]`` for ``chans[i]``) to the cache and its
        waiters, or ``exc`` to its waiters: one cache call and one registry lock."""
        rkey, fk = rec.key, float(grid.fs)
        keys = [tile_key(rkey, ch.name, fk, int(k)) for ch in chans]
        tiles = []
        keep = False
        if exc is None:
            for i in range(len(chans)):
                tile = np.ascontiguousarray(rows[i])
                tile.flags.writeable = False
                tiles.append(tile)
            keep = not rec.closed and not rec.superseded
            if keep:
                self.cache.put_many(zip(keys, tiles))
        self.inflight.release(keys)
        if exc is None:
            stats = self.stats
            with stats.lock:
                stats.tiles_decoded += len(chans)
                if lane is Lane.BACKGROUND:
                    stats.prefetch_tiles_decoded += len(chans)
            if keep and lane is Lane.BACKGROUND:
                self.ledger.prefetched(keys)
            for key, tile in zip(keys, tiles):
                owned[key].set_result(tile)
        else:
            for key in keys:
                owned[key].set_exception(exc)


class _JobRun:
    """The tiles one :meth:`TileFetcher.run_jobs` call owns, decoded and published.

    Holds no reference to the futures it waits on, so when the last decode
    is published nothing refers to it any more and the tiles in ``owned``
    are freed by reference counting (no garbage-collector pass needed).
    """

    __slots__ = ("fetcher", "rec", "grid", "jobs", "owned", "lane", "cancel")

    def __init__(self, fetcher: TileFetcher, rec: Recording, grid: tg.TileGrid,
                 jobs: dict[int, list[ChannelInfo]], owned: dict[tuple, Pending], lane: Lane,
                 cancel=None):
        self.fetcher, self.rec, self.grid = fetcher, rec, grid
        self.jobs, self.owned, self.lane, self.cancel = jobs, owned, lane, cancel

    def publish(self, k: int, chans: list[ChannelInfo], rows=None, exc=None) -> None:
        self.fetcher.publish(self.rec, self.grid, k, chans, self.owned, self.lane, rows, exc)

    def failure(self, e: BaseException, k: int) -> BaseException:
        if isinstance(e, Cancelled):
            return e
        a, b = self.grid.tile_window(k)
        return decode_failure(self.rec.path, [c.name for c in self.jobs[k]], a, b, e)

    def failed(self, ks, chans, e: BaseException, inline: bool) -> None:
        """A run that fails (a damaged block refuses the whole read) is decoded
        again tile by tile: only the damaged tile fails, naming its own window.
        A cancelled run is not retried: the decoder shutting down (its retries
        could only be submitted to the pool being shut down), or the read that
        owns it cancelled (its waiters decode what they still need)."""
        if isinstance(e, Cancelled):            # the read went away: no retry
            stats = self.fetcher.stats
            with stats.lock:
                stats.tiles_cancelled += len(ks) * len(chans)
        if len(ks) > 1 and not isinstance(e, (cf.CancelledError, Cancelled)) \
                and not self.fetcher.closed:
            for k in ks:
                self.decode([k], chans, inline)
        else:
            for k in ks:
                self.publish(k, chans, exc=self.failure(e, k))

    def decode(self, ks, chans, inline: bool = False) -> None:
        """Decode run ``ks`` in this thread (inline) or on the lane's workers."""
        try:
            got = self.fetcher.decode_rows(self.rec, chans, self.grid, ks, self.lane,
                                           inline=inline, cancel=self.cancel)
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
