"""Whole windows shared by concurrent readers, and kept when asked for twice.

A foreground window of at most ``window_share_bytes`` is assembled once for
everyone asking at the same time (the others wait for it, as for a tile being
decoded: the same compute-once registry, :mod:`.inflight`), and kept in the
cache (same budget and eviction as tiles, the recording's key first) once it
has been asked for twice: a viewer redrawing, or several tools on the same
window, cost a lookup. A window read once (paging, a single pass) is never
kept, so it never takes the place of tiles. A steady reader's next window is
assembled ahead (:meth:`WindowShare.preassemble`) and kept.

Shared windows are read-only; :meth:`WindowShare.shares` says up front whether a
read's chunks will be slices of one.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .assembly import WindowAssembler
from .cache_keys import window_key
from .errors import Cancelled
from .inflight import Lane
from .recent_keys import RecentKeys
from .recordings import ChannelInfo, Recording

log = logging.getLogger("mef3io_server.tiles")


class WindowShare:
    """Share windows between readers (see module docstring)."""

    #: Window keys remembered to tell a repeated window from a new one.
    RECENT_WINDOWS = 256

    def __init__(self, assembler: WindowAssembler):
        self.assembler = assembler
        self.fetcher = assembler.fetcher
        self.tuning = assembler.tuning
        self.stats = assembler.stats
        self._recent = RecentKeys(self.RECENT_WINDOWS)

    def shares(self, n: int, n_channels: int, lane: Lane = Lane.FOREGROUND) -> bool:
        """Whether a read of ``n`` samples x ``n_channels`` on ``lane`` is served as
        slices of a shared, read-only window (else as fresh arrays)."""
        return lane is Lane.FOREGROUND and 0 < n and \
            n * n_channels * 4 <= self.tuning.window_share_bytes

    def chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
               t1: int, per_chunk: int, lane: Lane = Lane.FOREGROUND,
               on_chunk: Optional[Callable[[int, int], None]] = None,
               limit_bytes: bool = True, cancel=None) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(j0, j1, rows)`` of ``per_chunk`` samples covering ``[t0, t1)`` at ``fs`` Hz:
        slices of a shared window when it fits (:meth:`shares`), else assembled
        chunk by chunk."""
        n = tg.samples_in_window(t0, t1, fs)
        if not self.shares(n, len(chans), lane):
            yield from self.assembler.chunks(rec, chans, fs, t0, t1, per_chunk, lane,
                                             on_chunk, limit_bytes, cancel)
            return
        rows = self.window(rec, chans, fs, t0, t1, n, lane, limit_bytes, cancel=cancel)
        for j0, j1 in tg.chunk_bounds(n, per_chunk):
            if on_chunk is not None:
                on_chunk(j0, j1)
            yield j0, j1, (rows if j1 - j0 == n else rows[:, j0:j1])

    def window(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
               t1: int, n: int, lane: Lane, limit_bytes: bool = True,
               keep: bool = False, cancel=None) -> np.ndarray:
        """The whole window ``(len(chans), n)``, read-only: from the cache, from
        whoever is assembling it right now, or assembled here. ``keep``: cache
        it even if not asked for before. A window whose assembler was cancelled
        is assembled again by a reader still waiting for it."""
        wkey = window_key(rec.key, [c.name for c in chans], fs, t0, t1)
        cache = self.fetcher.cache
        rows = cache.get(wkey)
        if rows is not None:
            return rows
        ikey = wkey + (rec.generation,)    # never share across versions of the files
        inflight = self.fetcher.inflight
        # Kept if asked for before, or by another reader meanwhile (see claim_window).
        fut, owner = inflight.claim_window(ikey, lane, keep or wkey in self._recent)
        if not owner:
            # Assembled ahead: a foreground wait raises its priority (as for tiles).
            urgent = lane is Lane.FOREGROUND and fut.lane is Lane.BACKGROUND
            try:
                with self.fetcher.decoder.urgent() if urgent else _nothing():
                    return fut.result()
            except Cancelled:
                if cancel is not None and cancel.cancelled:
                    raise
                return self.window(rec, chans, fs, t0, t1, n, lane, limit_bytes, keep, cancel)
        if not keep:
            self._recent.put(wkey)
        try:
            _, _, rows = next(self.assembler.chunks(rec, chans, fs, t0, t1, n, lane, None,
                                                    limit_bytes, cancel))
            rows.flags.writeable = False
            keep = inflight.release_one(ikey).keep
            if keep and not rec.closed and not rec.superseded:
                cache.put(wkey, rows)
            fut.set_result(rows)
            return rows
        except BaseException as e:
            inflight.release([ikey])
            fut.set_exception(e)
            raise

    def preassemble(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                    t0: int, t1: int) -> bool:
        """Assemble the window ``[t0, t1)`` into the cache from its tiles (decoded on
        the background lane if missing): the next page of a steady reader is then
        one cache lookup, like a warm read. Best effort; never raises. True when
        it assembled the window."""
        try:
            if self.fetcher.closed or rec.closed or rec.superseded or t1 > rec.end_uutc:
                return False    # (a window past the end would change when the files grow)
            n = tg.samples_in_window(t0, t1, fs)
            if n <= 0 or n * len(chans) * 4 > self.tuning.preassemble_max_bytes:
                return False
            wkey = window_key(rec.key, [c.name for c in chans], fs, t0, t1)
            # Asked for already (a reader faster than this thread): never twice.
            if wkey in self._recent or wkey + (rec.generation,) in self.fetcher.inflight:
                return False
            if wkey in self.fetcher.cache:
                return False
            self.window(rec, chans, fs, t0, t1, n, Lane.BACKGROUND, keep=True)
            with self.stats.lock:
                self.stats.windows_preassembled += 1
            return True
        except Exception:  # noqa: BLE001 - best effort, like prefetch
            log.debug("pre-assembling a window failed", exc_info=True)
            return False


class _nothing:
    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
