"""Changes on disk: noticing them, and re-opening a recording as its next version.

A recording's files are re-checked (one stat per file, :meth:`.recordings.Recording.changed_on_disk`)
by a background refresher thread, and by a request that finds the last check
too old. When it is checked depends on ``CHANGE_NOTIFICATIONS``:

* **polled** (``off``, or notifications not trusted for the recording, see
  :mod:`.change_signals`): at most every ``REFRESH_INTERVAL_S``, as the
  refresher re-checks every open recording (it wakes every quarter interval).
* **notified** (``auto``, the default, where trusted): only after the
  operating system reports a change in its files (the recording is then
  *dirty*). The refresher checks a dirty recording
  :attr:`ChangeWatcher.SETTLE_S` after the first event, and a request on a dirty
  recording checks before it reads; either at most every
  ``min(REFRESH_INTERVAL_S, SIGNAL_GAP_S)`` while writes keep coming. As a
  safety net every notified recording is still checked every
  ``SAFETY_NET_FACTOR x REFRESH_INTERVAL_S`` (60 s by default), or every
  ``SAFETY_NET_COST_FACTOR`` times what its check costs if longer (big
  sessions): while nothing changes the refresher sleeps that long.

``REFRESH_INTERVAL_S=0`` (every request checks, no refresher) uses no
notifications. A changed recording is re-opened
as a new version (:mod:`.versions`) and replaces the old one in every client
session. An *append* (the old files' bytes intact, every channel's block index
a prefix of the new one) keeps the cached tiles except those at each
channel's old end; any other change drops every tile of the file. A recording
that vanished or became unreadable is dropped.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import threading
from typing import Callable, Optional

from .cache_keys import is_tile_key
from .change_signals import ChangeSignals
from .errors import RecordingNotFound, ServerError
from .recordings import Recording
from .sessions import SessionRegistry
from .tile_store import TileStore
from .versions import Versions

log = logging.getLogger("mef3io_server.engine")


class ChangeWatcher:
    """Re-check open recordings and re-open changed ones (see module docstring).

    ``open_recording(path, password, cache_epoch=None)`` opens a new version;
    ``recording_closed(rec)`` drops one whose files are gone.
    """

    #: Re-check a recording at most every this many times what its check costs.
    REFRESH_COST_FACTOR = 20
    #: Notified recordings: seconds from the first event to the refresher's
    #: check (one append writes many files: one check for most of them).
    SETTLE_S = 0.1
    #: Notified recordings: shortest seconds between two checks of a recording
    #: that keeps changing (also capped by ``REFRESH_INTERVAL_S``).
    SIGNAL_GAP_S = 1.0
    #: Notified recordings are checked anyway every this many ``REFRESH_INTERVAL_S``,
    SAFETY_NET_FACTOR = 30
    #: ... or every this many times what their check costs, if longer (a recording
    #: of ~3 000 files, ~0.1 s a check, every ~2 minutes: ~0.1 % of a core).
    SAFETY_NET_COST_FACTOR = 1000

    def __init__(self, interval_s: float, sessions: SessionRegistry, store: TileStore,
                 versions: Versions, open_recording: Callable[..., Recording],
                 recording_closed: Callable[[Recording], None], clock: Callable[[], float],
                 notifications: str = "off",
                 signals_factory: Callable[..., ChangeSignals] = ChangeSignals):
        self.interval_s = interval_s
        self.sessions = sessions
        self.store = store
        self.versions = versions
        self._open_recording = open_recording
        self._recording_closed = recording_closed
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}    # path -> its one re-check
        self._thread: Optional[threading.Thread] = None
        # Notifications (see module docstring): the open versions of each path,
        # the paths notified (not polled), and when each dirty one was signalled.
        self._state = threading.Lock()
        self._versions_of: dict[str, set[int]] = {}
        self._notified: set[str] = set()
        self._dirty: dict[str, float] = {}
        self._wake = threading.Event()
        # Places watches off the request thread (see watch_soon).
        self._watcher = cf.ThreadPoolExecutor(1, thread_name_prefix="change-watch")
        self._next_safety_net = math.inf
        self.signals: Optional[ChangeSignals] = None
        if notifications == "auto" and interval_s > 0:
            self.signals = signals_factory(self._signalled)
            if not self.signals.available:
                log.info("change notifications unavailable (%s): open recordings are polled "
                         "every %g s", self.signals.unavailable, interval_s)

    # ------------------------------------------------------------ notifications

    def watch_soon(self, rec: Recording) -> None:
        """:meth:`watch` on a thread of its own: an open does not wait for the
        watches of its folders (2 000 folders: ~85 ms). A write before the
        watches are placed is caught by the check :meth:`watch` asks for."""
        if self.signals is None:
            self._wake.set()
            return
        try:
            self._watcher.submit(self._watch_quietly, rec)
        except RuntimeError:        # shut down
            pass

    def _watch_quietly(self, rec: Recording) -> None:
        try:
            self.watch(rec)
        except Exception:  # noqa: BLE001 - the recording is then polled
            log.exception("watching %s for changes failed; polling it", rec.path)
            self._wake.set()

    def settled(self) -> None:
        """Wait until the watches asked for so far are placed (for tests)."""
        try:
            self._watcher.submit(lambda: None).result()
        except RuntimeError:
            pass

    def watch(self, rec: Recording) -> None:
        """``rec`` is listed by the sessions (opened for a first session, or a
        re-open of its path in place of the older version): watch its files
        when notifications are on and trusted for it, else poll it. Called by
        :class:`.sessions.SessionRegistry` once it lists ``rec``, so the
        refresher, woken here, finds it."""
        if self.signals is None:
            self._wake.set()
            return
        with self._state:
            held = self._versions_of.setdefault(rec.path, set())
            first = not held
            held.add(id(rec))
        if self.sessions.recording(rec.path) is not rec:
            # Closed (or replaced) between its listing and now: its forget()
            # may have run before the line above.
            self.forget(rec)
            return
        if not first:
            # A re-open: its folders may be new (a recording written anew).
            with self._state:
                notified = rec.path in self._notified
            if notified and not self.signals.watch(rec.path):
                with self._state:
                    self._notified.discard(rec.path)
                self._wake.set()
            return
        notified = self.signals.watch(rec.path)
        with self._state:
            if id(rec) not in self._versions_of.get(rec.path, ()):   # closed meanwhile
                notified = False
            if notified:
                self._notified.add(rec.path)
                # A write between the open and the watch went unnoticed: check once.
                self._dirty.setdefault(rec.path, self._clock())
        if not notified:
            with self._state:
                still_open = rec.path in self._versions_of
            if not still_open:
                self.signals.unwatch(rec.path)
        self._wake.set()            # polled, or dirty: the refresher looks soon

    def forget(self, rec: Recording) -> None:
        """``rec`` was closed or superseded: its path's watches go with its last version."""
        if self.signals is None:
            return
        with self._state:
            held = self._versions_of.get(rec.path)
            if held is None or id(rec) not in held:
                return
            held.discard(id(rec))
            if held:
                return
            del self._versions_of[rec.path]
            self._notified.discard(rec.path)
            self._dirty.pop(rec.path, None)
        self.signals.unwatch(rec.path)

    def notified(self, path: str) -> bool:
        """Whether ``path`` is followed by notifications (False: polled)."""
        with self._state:
            return path in self._notified

    def _signalled(self, path: str) -> None:
        """The notifications' handler (their thread): mark ``path`` dirty, wake the refresher."""
        with self._state:
            if path in self._versions_of:
                self._dirty.setdefault(path, self._clock())
        self._wake.set()

    def _take_lost(self) -> None:
        """Poll from now on the paths whose watching failed after it began."""
        if self.signals is None:
            return
        for path in self.signals.take_lost():
            with self._state:
                self._notified.discard(path)

    def _signal_gap(self, rec: Recording) -> float:
        return min(self.check_interval(rec), self.SIGNAL_GAP_S)

    def safety_interval(self, rec: Recording) -> float:
        """Seconds between safety-net checks of a notified recording nothing changed."""
        return max(self.interval_s * self.SAFETY_NET_FACTOR,
                   self.SAFETY_NET_COST_FACTOR * rec.check_cost_s)

    def _due(self, rec: Recording, now: float) -> bool:
        """Whether a request on ``rec`` checks its files first (see module docstring)."""
        interval = self.check_interval(rec)
        age = now - rec.last_checked
        with self._state:
            if rec.path not in self._notified:
                return age >= interval
            dirty = rec.path in self._dirty
        if dirty:
            return age >= self._signal_gap(rec)
        return age >= self.safety_interval(rec)

    def check_interval(self, rec: Recording) -> float:
        """Seconds between change checks of ``rec``: ``REFRESH_INTERVAL_S``, or longer
        for recordings of so many files that a check (one stat per file) costs more
        than 1/20 of the interval (e.g. ~0.2 s for 7 000 files -> every ~4 s)."""
        base = self.interval_s
        return base if base <= 0 else max(base, self.REFRESH_COST_FACTOR * rec.check_cost_s)

    def refreshed(self, rec: Recording, force: bool = False,
                  background: bool = False) -> Recording:
        """``rec``, or its re-opened successor when the files changed on disk."""
        now = self._clock()
        if not force and not self._due(rec, now):
            return rec
        lock = self._locks.setdefault(rec.path, threading.Lock())
        with lock:
            current = self.sessions.recording(rec.path)
            if current is not None and current is not rec:
                return current
            rec.last_checked = now
            with self._state:
                # Events from here on mark it again (the check below may miss them).
                self._dirty.pop(rec.path, None)
            if not rec.changed_on_disk():
                return rec
            if not os.path.exists(rec.path):
                self._drop(rec.path)
                raise RecordingNotFound(
                    f"the recording at {rec.path} vanished from disk; open it again when it is back")
            try:
                new = self._open_recording(rec.path, rec.password, cache_epoch=None)
            except ServerError as e:
                if background:
                    # Maybe caught mid-rewrite: leave the sessions, and make the
                    # next request check for itself (it fails and drops them if
                    # the files are still unreadable; it never reads the old data).
                    rec.last_checked = float("-inf")
                    raise
                self._drop(rec.path)
                raise type(e)(f"the recording at {rec.path} changed on disk and can no longer "
                              f"be read: {e}") from None
            appended = rec.extended_by(new)
            if appended:
                new.cache_epoch = rec.cache_epoch
            if not self.sessions.replace_recording(rec, new):
                self.forget(new)
                new.close()
                return self.sessions.recording(rec.path) or rec
            self.forget(rec)
            rec.superseded = True     # from now on its tiles stay out of the cache
            if appended:
                self._evict_tails(rec)
            else:
                self.store.forget(rec)
            self.versions.retire(rec)
            log.info("recording %s changed on disk (%s); re-opened", rec.path,
                     "appended" if appended else "replaced")
            return new

    def _drop(self, path: str) -> None:
        gone = self.sessions.drop_file(path)
        if gone is not None:
            self._recording_closed(gone)

    def _evict_tails(self, old: Recording) -> None:
        """Drop tiles that reach past a channel's old end (they may now hold new
        data), and every window and answer of the file."""
        key = old.key
        ends = {c.name: c.end_uutc for c in old.channels}

        def stale(k) -> bool:
            if k[0] != key:
                return False
            if not is_tile_key(k):
                return True
            ch = old.by_name.get(k[1])
            if ch is None:
                return True
            grid = old.grid(ch, k[2])
            _, b = grid.tile_window(k[3])
            return b > ends[k[1]] - int(1e6 / ch.fs) - 1

        self.store.cache.evict_matching(stale)

    # ------------------------------------------------------------ the refresher thread

    def start(self, stop: threading.Event) -> None:
        """Start the refresher thread (when ``REFRESH_INTERVAL_S`` > 0); it ends with
        ``stop`` (set ``stop``, then call :meth:`join`, which wakes it)."""
        if self.interval_s > 0:
            self._next_safety_net = self._clock() + self.interval_s * self.SAFETY_NET_FACTOR
            self._thread = threading.Thread(target=self._loop, args=(stop,), name="refresher",
                                            daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wake the refresher (its ``stop`` is set), wait for it, stop the notifications."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._watcher.shutdown(wait=True, cancel_futures=True)
        if self.signals is not None:
            self.signals.close()

    def _loop(self, stop: threading.Event) -> None:
        """Re-check open recordings in the background, so no request pays for the stats.

        Requests still re-check a recording that is due (this thread may lag),
        so correctness never depends on it. Polled recordings: this thread
        wakes every quarter interval and re-checks what was last checked half
        an interval ago or more, so a check is never older than about 3/4 of
        the interval. Notified recordings: it checks dirty ones once due
        (see module docstring), and all of them at each safety net. With
        nothing dirty and nothing polled it sleeps until an event or the next
        safety net: no wakeups while idle.
        """
        while not stop.is_set():
            self._wake.clear()
            self._take_lost()
            timeout = self._pass(stop)
            if stop.is_set():
                return
            self._wake.wait(timeout)

    def _pass(self, stop: threading.Event) -> Optional[float]:
        """Check what is due now; returns the seconds until something may be due
        (None: nothing until an event)."""
        base = self.interval_s
        now = self._clock()
        safety = now >= self._next_safety_net
        if safety:
            self._next_safety_net = now + base * self.SAFETY_NET_FACTOR
        next_at = self._next_safety_net if self.signals is not None else math.inf
        polled = False
        for rec in self.sessions.open_recordings():
            if stop.is_set():
                return None
            now = self._clock()
            with self._state:
                notified = rec.path in self._notified
                dirty_at = self._dirty.get(rec.path)
            if not notified:
                polled = True
                due = now - rec.last_checked >= self.check_interval(rec) / 2
            elif dirty_at is not None:
                at = max(dirty_at + self.SETTLE_S, rec.last_checked + self._signal_gap(rec))
                due = now >= at
                if not due:
                    next_at = min(next_at, at)
            else:
                # At each pass, those whose own safety interval ends before the next one.
                due = safety and now - rec.last_checked >= \
                    self.safety_interval(rec) - base * self.SAFETY_NET_FACTOR / 2
            if not due:
                continue
            try:
                self.refreshed(rec, force=True, background=True)
            except ServerError:
                pass            # vanished or unreadable: refreshed dropped it already
            except Exception:  # noqa: BLE001 - the refresher must never die
                log.exception("background change check of %s failed", rec.path)
            with self._state:
                if rec.last_checked == float("-inf") and rec.path in self._notified:
                    # Unreadable mid-rewrite: look again after the gap, event or not
                    # (a dirty mark dated then; a request checks at once).
                    self._dirty.setdefault(rec.path, self._clock() + self._signal_gap(rec))
        now = self._clock()
        if polled:
            next_at = min(next_at, now + base / 4)
        if next_at == math.inf:
            return None
        return max(0.0, next_at - now)
