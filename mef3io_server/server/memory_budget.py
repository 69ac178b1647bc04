"""A byte budget that work holding memory outside the tile cache shares.

An ``n_points`` reduction holds state for every point it answers and the
source chunk it is reducing (:mod:`.reduction`), outside ``TILE_CACHE_MB``.
:class:`MemoryBudget` bounds what all of them hold at once: each reserves its
bytes before it starts (:meth:`MemoryBudget.reserve`, a context manager),
waiting while others hold the budget; one that could never fit is refused at
once, naming the setting.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import ResourceLimit


class MemoryBudget:
    """``max_bytes`` shared by reservations (see module docstring)."""

    def __init__(self, max_bytes: int, setting: str, wait_s: float = 30.0):
        self.max_bytes = max_bytes
        self.setting = setting
        self.wait_s = wait_s
        self.held = 0
        self._cond = threading.Condition()

    def check(self, nbytes: int, what: str) -> None:
        """Raise :class:`ResourceLimit` when ``nbytes`` could never fit."""
        if nbytes > self.max_bytes:
            raise ResourceLimit(
                f"{what} needs {nbytes / 2**20:.0f} MB of memory, over the server's limit of "
                f"{self.max_bytes / 2**20:.0f} MB ({self.setting}); ask for less")

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block (waiting up to
        ``wait_s`` seconds for others to give theirs back)."""
        self.check(nbytes, what)
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.held + nbytes > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResourceLimit(
                        f"{what} waited {self.wait_s:g} s for {nbytes / 2**20:.0f} MB of "
                        f"the server's {self.setting}, held by other reads; try again")
                self._cond.wait(left)
            self.held += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.held -= nbytes
                self._cond.notify_all()
