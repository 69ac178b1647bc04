"""Counters of the tile path, and the ledger that turns prefetched tiles into hits.

Read by metrics and tests; nothing on the data path depends on them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable

from .recent_keys import RecentKeys


@dataclass
class StoreStats:
    """Counts since start (tiles count one per channel and tile)."""

    tiles_decoded: int = 0
    prefetch_tiles_decoded: int = 0
    prefetch_hits: int = 0
    direct_reads: int = 0
    window_first_reads: int = 0
    #: Reads answered straight from mef3io while their block index was read in
    #: the background (:meth:`.assembly.WindowAssembler.chunks`).
    unread_index_reads: int = 0
    windows_preassembled: int = 0
    prefetch_windows_planned: int = 0     # windows whose tiles prefetch checked
    prefetch_windows_skipped: int = 0     # ... skipped: checked moments before
    tiles_cancelled: int = 0              # tiles a cancelled read stopped decoding
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class PrefetchLedger:
    """Tiles prefetch put in the cache that no read has asked for yet.

    A read finding one counts a prefetch hit (:attr:`StoreStats.prefetch_hits`)
    and takes it off the ledger; at most :attr:`LIMIT` are remembered (oldest
    forgotten first).
    """

    LIMIT = 100_000

    def __init__(self, stats: StoreStats):
        self._stats = stats
        self._keys = RecentKeys(self.LIMIT)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def prefetched(self, keys: Iterable[tuple]) -> None:
        self._keys.put_many(keys)

    def read(self, keys: Iterable[tuple]) -> None:
        """Keys a read just got: the prefetched ones count as hits."""
        hits = self._keys.pop_many(keys)
        if hits:
            with self._stats.lock:
                self._stats.prefetch_hits += hits

    def forget(self, recording_key: tuple) -> None:
        """Drop the keys of one version of a recording (``key[0]``)."""
        self._keys.forget_where(lambda k: k[0] == recording_key)

    def keys(self) -> set:
        """A snapshot of the keys (for tests and diagnostics)."""
        return self._keys.keys()
