"""Compute-once: one registry of the tiles and windows being computed right now.

A tile (or a shared window) is computed by the first read that asks for it;
every other read that asks meanwhile waits for that one result instead of
computing it again. The registry maps a cache key (:mod:`.cache_keys`) to a
:class:`Pending` result, all under ONE lock; the result is settled once (a
value or an exception) by whoever claimed it, and then leaves the registry
(:meth:`Inflight.release`). Storage is elsewhere (:mod:`.tile_cache`): this
module only says who computes what.

Each claim records its :class:`Lane`: a foreground read waiting for a
background (prefetch) computation raises that computation's priority (see
:mod:`.decode.demand_gate`).
"""
from __future__ import annotations

import threading
from enum import Enum
from typing import Iterable, Optional


class Lane(str, Enum):
    """Who a decode is for: a client waiting now, or prefetch (best effort).

    Equal to (and hashing as) the strings ``"fg"`` and ``"bg"`` the decoders
    key their worker pools by.
    """

    FOREGROUND = "fg"
    BACKGROUND = "bg"

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class Pending:
    """A result being computed: settled once (a value or an exception), awaited by
    any number of readers.

    The subset of ``concurrent.futures.Future`` the tile path uses, on one lock
    held until it settles: several times cheaper to make than a ``Future``
    (benchmarks/decisions.md), and a long window in flight is hundreds of them.
    ``lane``: who claimed it; ``keep``: for a shared window, whether it is to be
    kept in the cache once computed (asked for again meanwhile).
    """

    __slots__ = ("_settled", "_value", "_exc", "_done", "lane", "keep")

    def __init__(self, lane: Lane = Lane.FOREGROUND, keep: bool = False):
        self._settled = threading.Lock()
        self._settled.acquire()          # released once, when settled
        self._value = self._exc = None
        self._done = False
        self.lane = lane
        self.keep = keep

    def set_result(self, value) -> None:
        self._value, self._done = value, True
        self._settled.release()

    def set_exception(self, exc: BaseException) -> None:
        self._exc, self._done = exc, True
        self._settled.release()

    def done(self) -> bool:
        return self._done

    def result(self, timeout: Optional[float] = None):
        """The value, once settled (raises its exception; ``TimeoutError`` after
        ``timeout`` seconds)."""
        if not self._done:
            if not self._settled.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError("the result is still being computed")
            self._settled.release()      # the next waiter goes on at once
        if self._exc is not None:
            raise self._exc
        return self._value


class Inflight:
    """The registry: key -> :class:`Pending`, under one lock (see module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[tuple, Pending] = {}

    def join_or_claim(self, keys: Iterable[tuple], lane: Lane
                      ) -> tuple[list[Pending], list[bool]]:
        """For each key, the :class:`Pending` to wait on and whether the caller now
        owns it (claimed here: the caller must settle and :meth:`release` it)."""
        futs: list[Pending] = []
        owned: list[bool] = []
        pending = self._pending
        with self._lock:
            for key in keys:
                fut = pending.get(key)
                if fut is None:
                    fut = pending[key] = Pending(lane)
                    owned.append(True)
                else:
                    owned.append(False)
                futs.append(fut)
        return futs, owned

    def claim_free(self, keys: Iterable[tuple], lane: Lane) -> dict[tuple, Pending]:
        """Claim the keys nobody computes yet; returns those claimed."""
        out: dict[tuple, Pending] = {}
        pending = self._pending
        with self._lock:
            for key in keys:
                if key not in pending:
                    out[key] = pending[key] = Pending(lane)
        return out

    def claim_window(self, key: tuple, lane: Lane, keep: bool) -> tuple[Pending, bool]:
        """A shared window: ``(pending, owner)``. A reader joining a window already
        being assembled marks it ``keep`` (it was asked for twice)."""
        with self._lock:
            fut = self._pending.get(key)
            if fut is None:
                fut = self._pending[key] = Pending(lane, keep)
                return fut, True
            fut.keep = True
            return fut, False

    def release(self, keys: Iterable[tuple]) -> None:
        """Remove settled (or about to be settled) keys from the registry."""
        pending = self._pending
        with self._lock:
            for key in keys:
                pending.pop(key, None)

    def release_one(self, key: tuple) -> Pending:
        """Remove ``key`` and return its :class:`Pending` (read under the lock)."""
        with self._lock:
            return self._pending.pop(key)

    def any_pending(self, keys: Iterable[tuple]) -> bool:
        pending = self._pending
        with self._lock:
            return any(key in pending for key in keys)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._pending

    def count(self, lane: Optional[Lane] = None) -> int:
        """Keys being computed now (on ``lane``, or on any)."""
        with self._lock:
            if lane is None:
                return len(self._pending)
            return sum(1 for f in self._pending.values() if f.lane is lane)

    def unsettled(self) -> list[Pending]:
        """The pending results not settled yet (a snapshot)."""
        with self._lock:
            return [f for f in self._pending.values() if not f.done()]
