"""Recent keys: a bounded, thread-safe memory of what was seen lately.

Several parts of the server remember recent things only to skip repeating
work: the prefetch plans made in the last seconds and where each steady
reader's last window ended (:mod:`.prefetch`), the windows read lately
(:mod:`.window_share`), the derived windows computed ahead
(:mod:`.derived_reads`), the answers offered once (:mod:`.service`), the
tiles prefetch put in the cache (:mod:`.store_stats`). Forgetting is always
safe for them (the work is done again), so each is a :class:`RecentKeys`
with a limit on how many keys it holds: past it, the key put longest ago
goes first. The block-index memos, bounded by bytes for all recordings
together, are :mod:`.block_index`'s own.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, Iterable

_MISSING = object()


class RecentKeys:
    """At most ``limit`` keys, each with a value (``None`` when only the key
    matters); putting a key again makes it the newest. Every method takes one
    lock, so a batch (:meth:`put_many`, :meth:`pop_many`) costs one lock."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"a limit of {limit} keys")
        self.limit = limit
        self._items: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, default: Any = None) -> Any:
        return self._items.get(key, default)

    def put(self, key: Hashable, value: Any = None) -> None:
        with self._lock:
            self._put_locked(key, value)

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; True when it was not remembered already (then the
        caller does the work once)."""
        with self._lock:
            if key in self._items:
                return False
            self._put_locked(key, None)
            return True

    def put_many(self, keys: Iterable[Hashable], value: Any = None) -> None:
        with self._lock:
            for key in keys:
                self._put_locked(key, value)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._items.pop(key, default)

    def pop_many(self, keys: Iterable[Hashable]) -> int:
        """Forget ``keys``; how many of them were remembered."""
        found = 0
        with self._lock:
            items = self._items
            for key in keys:
                if items.pop(key, _MISSING) is not _MISSING:
                    found += 1
        return found

    def forget_where(self, drop: Callable[[Any], bool]) -> int:
        """Forget every key for which ``drop(key)`` is true; how many went."""
        with self._lock:
            gone = [k for k in self._items if drop(k)]
            for k in gone:
                del self._items[k]
        return len(gone)

    def keys(self) -> set:
        """A snapshot of the keys remembered now."""
        with self._lock:
            return set(self._items)

    def _put_locked(self, key: Hashable, value: Any) -> None:
        items = self._items
        if key in items:
            del items[key]              # newest again
        items[key] = value
        if len(items) > self.limit:
            del items[next(iter(items))]

