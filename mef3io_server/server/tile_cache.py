"""Signal tile cache with a global byte budget.

The caching substrate of the timestamp-based access path. A recording is
addressed as a sparse grid of tiles (see :mod:`mef3io_server.server.tile_grid`):
each tile holds the samples of ONE channel over a fixed stretch of its sampling
grid. MEF 3.0 stores each channel independently, so tiling per channel avoids
read amplification when only a few of many channels are requested.

The cache is keyed by any hashable. The server keys content, never the
client (see :mod:`mef3io_server.server.cache_keys`): tiles
``(recording_key, channel, served_rate_hz, tile_index)``, and under the same
budget and eviction whole windows shared by readers and ``n_points`` answers,
each key's first element the recording version's key. So one instance is
shared by every open file and every client under one global budget
(``TILE_CACHE_MB``).

Properties:

* Values are ``float32`` arrays (half the memory of ``float64``); an array is
  copied only when a cast is needed, and what :meth:`TileCache.get` returns is
  a read-only view, so no caller can alter a cached tile.
* Presence vs. gaps: a key being present means the tile is loaded; genuine MEF
  discontinuities inside a loaded tile are NaN values. "Not loaded" (``get``
  returns ``None``) and "loaded but contains a gap" are therefore distinct.
* Byte-budgeted LRU: eviction is driven by the total bytes held, not an item
  count, since tiles differ in size across channels and rates. A tile larger
  than the whole budget is never retained.
* Idle TTL: a tile not accessed for ``ttl_seconds`` is discarded by
  :meth:`TileCache.evict_expired` (the server calls it from a background
  sweeper), so a finished session does not pin memory.
* Thread-safe: every operation runs under one lock.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Optional

import numpy as np

CACHE_DTYPE = np.float32


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache's counters (bytes are array bytes)."""

    hits: int
    misses: int
    puts: int
    evictions: int      # tiles dropped to honour the byte budget
    expirations: int    # tiles dropped by the idle TTL
    purged: int         # tiles dropped by evict_matching (a file closed or changed)
    rejected: int       # tiles larger than the whole budget, never retained
    items: int
    bytes: int
    max_bytes: int


class TileCache:
    """A thread-safe, byte-budgeted LRU cache of signal tiles.

    Parameters
    ----------
    max_bytes : int
        Maximum total size of cached tiles, in bytes. Must be positive.
        Individual tiles larger than this are never retained.
    ttl_seconds : float or None
        Discard a tile after this many seconds without an access (``get`` or
        ``put``). ``None`` or ``0`` disables the idle TTL.
    clock : callable, optional
        Monotonic time source in seconds (tests inject a fake one).
    """

    def __init__(self, max_bytes: int, ttl_seconds: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) \
                or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if ttl_seconds is not None and not ttl_seconds >= 0:
            raise ValueError(f"ttl_seconds must be None or >= 0, got {ttl_seconds!r}")
        self.max_bytes = int(max_bytes)
        self.ttl_seconds = float(ttl_seconds) if ttl_seconds else None
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (array, last_access); order = LRU first
        self._items: "OrderedDict[Hashable, tuple[np.ndarray, float]]" = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._puts = 0
        self._evictions = self._expirations = self._purged = self._rejected = 0

    # ---- core API ----

    def get(self, key: Hashable) -> Optional[np.ndarray]:
        """The tile stored under ``key`` (a read-only float32 array), or ``None``.

        A hit refreshes the tile's LRU position and its idle time.
        """
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self._misses += 1
                return None
            arr = entry[0]
            self._items[key] = (arr, self._clock())
            self._items.move_to_end(key)
            self._hits += 1
            return arr

    def put(self, key: Hashable, array) -> None:
        """Insert or replace a tile, evicting LRU tiles to honour the budget.

        The array is stored as float32 (copied only if a cast is needed).
        Tiles larger than the whole budget are dropped rather than cached (and
        an older tile under the same key is removed, so it cannot go stale).
        """
        self.put_many(((key, array),))

    def put_many(self, items: Iterable[tuple[Hashable, np.ndarray]]) -> None:
        """:meth:`put` of several tiles under one lock acquisition (evicting once,
        after all are in: the same tiles remain as with one :meth:`put` each)."""
        staged = []
        for key, array in items:
            arr = np.asarray(array)
            if arr.dtype != CACHE_DTYPE:
                arr = arr.astype(CACHE_DTYPE)
            view = arr.view()
            view.flags.writeable = False
            staged.append((key, view, int(view.nbytes)))
        with self._lock:
            now = self._clock()
            for key, view, size in staged:
                old = self._items.pop(key, None)
                if old is not None:
                    self._bytes -= old[0].nbytes
                if size > self.max_bytes:
                    self._rejected += 1
                    continue
                self._items[key] = (view, now)
                self._bytes += size
                self._puts += 1
            while self._bytes > self.max_bytes:
                _, (victim, _) = self._items.popitem(last=False)
                self._bytes -= victim.nbytes
                self._evictions += 1

    def evict_expired(self, now: Optional[float] = None) -> int:
        """Drop tiles not accessed within ``ttl_seconds``.

        A no-op when the TTL is disabled. Called periodically by the server's
        background sweeper so idle sessions release memory without traffic.
        ``now`` is a time from the cache's clock (default: the clock's now).

        Returns the number of tiles evicted.
        """
        if self.ttl_seconds is None:
            return 0
        with self._lock:
            now = self._clock() if now is None else now
            cutoff = now - self.ttl_seconds
            n = 0
            # LRU order is access order, so expired tiles are at the front.
            while self._items:
                key, (arr, last) = next(iter(self._items.items()))
                if last > cutoff:
                    break
                del self._items[key]
                self._bytes -= arr.nbytes
                n += 1
            self._expirations += n
            return n

    def evict_matching(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every tile whose key satisfies ``predicate(key)``.

        Used to purge a file's tiles when it is closed or has changed on disk.
        Returns the number of tiles evicted.
        """
        with self._lock:
            doomed = [k for k in self._items if predicate(k)]
            for k in doomed:
                arr, _ = self._items.pop(k)
                self._bytes -= arr.nbytes
            self._purged += len(doomed)
            return len(doomed)

    # ---- conveniences ----

    def get_many(self, keys: Iterable[Hashable]) -> list[Optional[np.ndarray]]:
        """``get`` of several keys under one lock acquisition, in order."""
        out: list[Optional[np.ndarray]] = []
        with self._lock:
            now = self._clock()
            for key in keys:
                entry = self._items.get(key)
                if entry is None:
                    self._misses += 1
                    out.append(None)
                    continue
                self._items[key] = (entry[0], now)
                self._items.move_to_end(key)
                self._hits += 1
                out.append(entry[0])
        return out

    def __contains__(self, key: Hashable) -> bool:
        """Presence test that neither counts as an access nor as a hit/miss."""
        with self._lock:
            return key in self._items

    def contains(self, key: Hashable) -> bool:
        """``key in cache``, as a method (the published 3.1.0 API): no access, no hit/miss."""
        return key in self

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list:
        """The keys held now, least recently used first (a snapshot; no access)."""
        with self._lock:
            return list(self._items)

    @property
    def current_bytes(self) -> int:
        """Bytes of tile data held now."""
        with self._lock:
            return self._bytes

    def held_bytes(self) -> tuple[int, int]:
        """``(accounted, held)``, read atomically: the bytes the budget counts
        (:attr:`current_bytes`) and the sum of the ``nbytes`` of the arrays held
        now. Equal unless the accounting is wrong (a check for tests and
        diagnostics; costs one pass over the items)."""
        with self._lock:
            return self._bytes, sum(entry[0].nbytes for entry in self._items.values())

    def clear(self) -> None:
        """Drop every tile (counted as purged)."""
        with self._lock:
            self._purged += len(self._items)
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """The counters, read atomically."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._puts, self._evictions,
                              self._expirations, self._purged, self._rejected,
                              len(self._items), self._bytes, self.max_bytes)
