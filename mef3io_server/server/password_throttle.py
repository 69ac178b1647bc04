"""Online password guessing, slowed: repeated wrong passwords per caller and file.

An encrypted recording's password is checked by opening it with mef3io (a
few milliseconds), so without a limit a client can try hundreds of
passwords a second. :class:`PasswordThrottle` counts the wrong passwords
given for one file by one *guesser* -- the caller's identity (the token's
name) with tokens, its network address without them (client ids are free
to change) -- and after :attr:`FREE_FAILURES` of them in a row refuses that
guesser's next attempts on that file, without checking them, for a delay
that doubles with each further failure (:attr:`FIRST_DELAY_S` up to
:attr:`MAX_DELAY_S`): about one guess a minute once it is reached. A right
password clears the count; so do :attr:`FORGET_AFTER_S` seconds without a
failure. Every wrong password is logged as a WARNING (never the password).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from .callers import Caller
from .errors import PasswordRequired

log = logging.getLogger("mef3io_server.passwords")


def guesser(caller: Caller) -> tuple[str, str]:
    """Whose failures count together: the identity, or without one the address."""
    return ("identity", caller.identity) if caller.identity else ("origin", caller.origin)


class PasswordThrottle:
    """Wrong-password counts per (guesser, file) and the delays they impose."""

    FREE_FAILURES = 5
    FIRST_DELAY_S = 1.0
    MAX_DELAY_S = 60.0
    FORGET_AFTER_S = 900.0
    MAX_ENTRIES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        # (guesser, path) -> [failures in a row, time of the last, not before]
        self._entries: "OrderedDict[tuple, list]" = OrderedDict()

    def _entry(self, key: tuple, now: float):
        e = self._entries.get(key)
        if e is not None and now - e[1] > self.FORGET_AFTER_S:
            del self._entries[key]
            e = None
        return e

    def check(self, caller: Caller, path: str, client_path: str) -> None:
        """Raise :class:`PasswordRequired` while ``caller`` must wait before trying
        another password on ``path``."""
        now = self._clock()
        with self._lock:
            e = self._entry((guesser(caller), path), now)
            if e is None or now >= e[2]:
                return
            failures, wait = e[0], e[2] - now
        raise PasswordRequired(
            f"{client_path} is encrypted and {failures} wrong passwords were given for it "
            f"in a row: try again in {max(1, round(wait))} s")

    def failed(self, caller: Caller, path: str, client_path: str) -> None:
        """Count a wrong password (and log it)."""
        now = self._clock()
        key = (guesser(caller), path)
        with self._lock:
            e = self._entry(key, now) or [0, now, now]
            e[0] += 1
            e[1] = now
            over = e[0] - self.FREE_FAILURES
            delay = 0.0 if over <= 0 else min(self.MAX_DELAY_S,
                                               self.FIRST_DELAY_S * 2 ** (over - 1))
            e[2] = now + delay
            self._entries[key] = e
            self._entries.move_to_end(key)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)
            failures = e[0]
        log.warning("wrong password for %s from %s (origin %s): %d in a row%s", client_path,
                    caller.describe(), caller.origin or "-", failures,
                    f"; the next attempt waits {delay:g} s" if delay else "")

    def succeeded(self, caller: Caller, path: str) -> None:
        with self._lock:
            self._entries.pop((guesser(caller), path), None)
