"""Prefetch yields to demand: background decodes start only when no read waits.

On a machine with few cores every core is busy while clients wait for
decodes (several tools on one recording, a detector sweeping it). A
background decode (prefetch, a steady reader's next window, the tiles of a
window read first) started then competes with the decodes the clients are
waiting for, and prefetch past the end of what the clients read next is
pure loss. :class:`DemandGate` makes background decodes wait their turn:

* a foreground decode (a read a client waits for) holds the gate open for
  demand while it runs (:meth:`DemandGate.demand`);
* a background decode starts only when no foreground decode runs
  (:meth:`DemandGate.wait_turn`), so prefetch fills the idle moments: the
  client's own work, the time its answer is on the wire, a pause;
* a foreground read that waits for a tile a background decode owns makes
  background decodes *urgent* while it waits (:meth:`DemandGate.urgent`):
  they start at once, so waiting on prefetch is never slower than without
  the gate;
* none waits longer than ``max_wait_s``: under endless demand prefetch
  still progresses, slowly.

The gate only delays the start of a decode; a decode once started runs to
its end. Measured effect: ``benchmarks/decisions.md``.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


class DemandGate:
    """Counts running foreground decodes and urgent waiters; background decodes wait."""

    def __init__(self, max_wait_s: float = 1.0):
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._demand = 0
        self._urgent = 0
        self._closed = False
        self.waits = 0              # background decodes that had to wait
        self.waited_s = 0.0         # ... and for how long in all (seconds)

    @contextmanager
    def demand(self) -> Iterator[None]:
        """Around a foreground decode."""
        with self._cond:
            self._demand += 1
        try:
            yield
        finally:
            with self._cond:
                self._demand -= 1
                if self._demand == 0:
                    self._cond.notify_all()

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Around a foreground wait for work a background decode owns."""
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._urgent -= 1

    @property
    def demand_count(self) -> int:
        """Foreground decodes running now."""
        return self._demand

    def _open(self) -> bool:
        return self._demand == 0 or self._urgent > 0 or self._closed

    def wait_turn(self) -> None:
        """Block a background decode until no foreground decode runs (or an urgent
        waiter, or ``max_wait_s``, or :meth:`close`)."""
        with self._cond:
            if self._open():
                return
            start = time.monotonic()
            self._cond.wait_for(self._open, timeout=self.max_wait_s)
            self.waits += 1
            self.waited_s += time.monotonic() - start

    def close(self) -> None:
        """Let every waiting background decode go (shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
