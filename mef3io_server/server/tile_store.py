"""The tile store: windows of open recordings, from cached tiles, decoding only what is missing.

A thin facade that wires the parts of the tile path and offers the calls the
engine makes. One read, top-down (each module's docstring says more):

* :mod:`.window_share` -- a window shared by concurrent readers, kept when
  asked for twice; else
* :mod:`.assembly` -- the window chunk by chunk: which channels are sliced
  from tiles, which read directly; decode-ahead; the ``MAX_READ_MB`` limit;
* :mod:`.tile_fetch` -- tiles from the cache (:mod:`.tile_cache`), or claimed
  in the compute-once registry (:mod:`.inflight`), cut into mef3io reads by
  :mod:`.decode_plan`, decoded by the :class:`~.decode.Decoder`, published;
* :mod:`.prefetch` -- the windows around a read, decoded in the background.

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
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .assembly import WindowAssembler
from .decode import Decoder
from .inflight import Inflight, Lane
from .prefetch import Prefetcher
from .recordings import ChannelInfo, Recording
from .store_stats import PrefetchLedger, StoreStats
from .store_tuning import StoreTuning
from .tile_cache import TileCache
from .tile_fetch import TileFetcher
from .window_share import WindowShare

__all__ = ["TileStore", "StoreStats", "StoreTuning", "Lane"]


class TileStore:
    """Cached, deduplicated, prefetching access to windows of open recordings."""

    def __init__(self, cache: TileCache, decoder: Decoder, *, min_parallel_tiles: int = 2,
                 prefetch_ahead: int = 1, prefetch_behind: int = 1,
                 max_read_bytes: int = 1 << 34):
        self.cache = cache
        self.decoder = decoder
        self.tuning = StoreTuning(min_parallel_tiles=min_parallel_tiles,
                                  prefetch_ahead=prefetch_ahead,
                                  prefetch_behind=prefetch_behind,
                                  max_read_bytes=max_read_bytes)
        self.stats = StoreStats()
        self.inflight = Inflight()
        self.prefetched = PrefetchLedger(self.stats)
        self.fetcher = TileFetcher(cache, decoder, self.inflight, self.stats, self.prefetched,
                                   self.tuning)
        self.assembler = WindowAssembler(self.fetcher)
        self.share = WindowShare(self.assembler)
        self.prefetcher = Prefetcher(self.share)

    @property
    def split_ways(self) -> int:
        """Parallel mef3io reads one read is split into (see :class:`.StoreTuning`)."""
        return self.tuning.split_ways

    # ------------------------------------------------------------ reads

    def read_chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, t0: int,
                    t1: int, per_chunk: int, lane: Lane = Lane.FOREGROUND,
                    on_chunk: Optional[Callable[[int, int], None]] = None,
                    limit_bytes: bool = True, cancel=None
                    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(j0, j1, rows)`` covering ``[t0, t1)`` at ``fs`` Hz, ``per_chunk`` samples
        each (the last may be shorter).

        ``rows`` is a C-contiguous float32 array ``(len(chans), j1 - j0)``, a
        read-only slice of a shared window when :meth:`shares` says so.
        ``limit_bytes=False`` skips ``MAX_READ_MB`` (see
        :meth:`.assembly.WindowAssembler.chunks`). ``cancel``: the read's cancel
        token (:func:`.decode.cancel_token`): once it fires, the read's own
        decodes stop and it raises :class:`.errors.Cancelled`.
        """
        return self.share.chunks(rec, chans, fs, t0, t1, per_chunk, Lane(lane), on_chunk,
                                 limit_bytes, cancel)

    def shares(self, n_samples: int, n_channels: int) -> bool:
        """Whether a foreground read of this size gets slices of a shared window."""
        return self.share.shares(n_samples, n_channels)

    def assemble_chunks(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                        t0: int, t1: int, per_chunk: int, lane: Lane = Lane.FOREGROUND,
                        on_chunk: Optional[Callable[[int, int], None]] = None,
                        limit_bytes: bool = True, cancel=None
                        ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(j0, j1, rows)`` of fresh arrays, never shared (see :mod:`.assembly`)."""
        return self.assembler.chunks(rec, chans, fs, t0, t1, per_chunk, Lane(lane), on_chunk,
                                     limit_bytes, cancel)

    def fetch_tiles(self, rec: Recording, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                    tiles: Sequence[int], lane: Lane = Lane.FOREGROUND, cancel=None
                    ) -> dict[tuple[str, int], np.ndarray]:
        """``{(channel, k): tile}`` for tiles ``tiles`` of ``chans`` (see :mod:`.tile_fetch`)."""
        return self.fetcher.fetch(rec, chans, grid, tiles, Lane(lane), cancel)

    def split_channels(self, chans: list[ChannelInfo]) -> list[list[ChannelInfo]]:
        return self.fetcher.split_channels(chans)

    def plan_groups(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float):
        return self.assembler.plan_groups(rec, chans, fs)

    # ------------------------------------------------------------ prefetch

    def prefetch(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                 t0: int, t1: int, extra_ahead: int = 0) -> int:
        """Start background decodes around ``[t0, t1)`` now (see :mod:`.prefetch`)."""
        return self.prefetcher.now(rec, chans, fs, t0, t1, extra_ahead)

    def prefetch_later(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
                       t0: int, t1: int) -> cf.Future:
        """Plan the prefetch around ``[t0, t1)`` off this thread (see :mod:`.prefetch`)."""
        return self.prefetcher.later(rec, chans, fs, t0, t1)

    def busy(self, lane: Optional[Lane] = None) -> int:
        """Tiles and windows being computed now (on ``lane``, or on any)."""
        return self.inflight.count(lane)

    # ------------------------------------------------------------ life cycle

    def forget(self, rec: Recording) -> int:
        """Drop every tile, window and answer of this version of the recording from
        the cache (and the plans about it); returns how many entries went."""
        key = rec.key
        n = self.cache.evict_matching(lambda k: k[0] == key)
        self.prefetched.forget(key)
        self.prefetcher.forget(rec)
        return n

    def close(self) -> None:
        self.fetcher.close()
        self.prefetcher.close()
