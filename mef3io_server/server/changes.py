"""Changes on disk: noticing them, and re-opening a recording as its next version.

A recording's files are re-checked (one stat per file, :meth:`.recordings.Recording.changed_on_disk`)
at most every ``REFRESH_INTERVAL_S`` -- by a background refresher thread, and by
a request that finds the last check too old. A changed recording is re-opened
as a new version (:mod:`.versions`) and replaces the old one in every client
session. An *append* (the old files' bytes intact, every channel's block index
a prefix of the new one) keeps the cached tiles except those at each
channel's old end; any other change drops every tile of the file. A recording
that vanished or became unreadable is dropped.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Optional

from .cache_keys import is_tile_key
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

    def __init__(self, interval_s: float, sessions: SessionRegistry, store: TileStore,
                 versions: Versions, open_recording: Callable[..., Recording],
                 recording_closed: Callable[[Recording], None], clock: Callable[[], float]):
        self.interval_s = interval_s
        self.sessions = sessions
        self.store = store
        self.versions = versions
        self._open_recording = open_recording
        self._recording_closed = recording_closed
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}    # path -> its one re-check
        self._thread: Optional[threading.Thread] = None

    def check_interval(self, rec: Recording) -> float:
        """Seconds between change checks of ``rec``: ``REFRESH_INTERVAL_S``, or longer
        for sessions of so many files that a check (one stat per file) costs more
        than 1/20 of the interval (e.g. ~0.2 s for 7 000 files -> every ~4 s)."""
        base = self.interval_s
        return base if base <= 0 else max(base, self.REFRESH_COST_FACTOR * rec.check_cost_s)

    def refreshed(self, rec: Recording, force: bool = False,
                  background: bool = False) -> Recording:
        """``rec``, or its re-opened successor when the files changed on disk."""
        now = self._clock()
        if not force and now - rec.last_checked < self.check_interval(rec):
            return rec
        lock = self._locks.setdefault(rec.path, threading.Lock())
        with lock:
            current = self.sessions.recording(rec.path)
            if current is not None and current is not rec:
                return current
            rec.last_checked = now
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
                new.close()
                return self.sessions.recording(rec.path) or rec
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
        """Start the refresher thread (when ``REFRESH_INTERVAL_S`` > 0); it ends with ``stop``."""
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, args=(stop,), name="refresher",
                                            daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self, stop: threading.Event) -> None:
        """Re-check open recordings in the background, so no request pays for the stats.

        Requests still re-check a recording whose last check is older than its
        interval (this thread may lag), so correctness never depends on it.
        This thread wakes every quarter interval and re-checks what was last
        checked half an interval ago or more, so a check is never older than
        about 3/4 of the interval: requests find it fresh and never pay for
        the stats themselves.
        """
        base = self.interval_s
        while not stop.wait(base / 4):
            for rec in self.sessions.open_recordings():
                if stop.is_set():
                    return
                try:
                    if self._clock() - rec.last_checked >= self.check_interval(rec) / 2:
                        self.refreshed(rec, force=True, background=True)
                except ServerError:
                    pass            # vanished or unreadable: refreshed dropped it already
                except Exception:  # noqa: BLE001 - the refresher must never die
                    log.exception("background change check of %s failed", rec.path)

