"""Sessions: one per (client id, file), and the recordings they keep open.

PROTOCOL.md's rules, in one place:

* A client names itself in the ``x-mef3io-client-id`` metadata; calls without
  it share one default session (client id ``""``) that never expires.
* ``OpenFile`` creates or refreshes the caller's session on the file (and
  replaces its ``cache_fs`` / ``allow_mixed_rates``); ``CloseFile`` ends only
  the caller's session.
* A recording stays open while any session holds it; when its last session
  goes (closed, expired after ``SESSION_TTL_S`` idle, or pushed out by
  ``MAX_SESSIONS``, least recently used first), its reader closes and its
  tiles leave the cache.
* A read needs the file open by some client. For an encrypted recording, the
  reader's own session must have presented a valid password: no client reads
  encrypted data through another client's open reader.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from .decode import open_reader
from .errors import BadRequest, NotOpen, PasswordRequired
from .recordings import Recording

log = logging.getLogger("mef3io_server.sessions")

DEFAULT_CLIENT = ""


@dataclass
class Session:
    """One client's view of one open file."""

    client_id: str
    path: str                      # resolved path (the recording's key)
    client_path: str               # the path as this client named it
    cache_fs: Optional[float] = None
    allow_mixed_rates: bool = False
    authorized: bool = True        # presented a valid password (or none was needed)
    access_level: str = ""         # "level1"/"level2" of the password this client gave
    last_used: float = field(default_factory=time.monotonic)
    access_level: str = "none"     # what this client's own password opens (or "level1"/"level2")
    password: str = field(default="", repr=False)   # this client's own, in memory only


@dataclass
class OpenFile:
    recording: Recording
    client_path: str               # as first named; what ListOpenFiles shows
    sessions: set = field(default_factory=set)


class SessionRegistry:
    """Sessions and open recordings, guarded by one lock.

    ``open_recording(path, password)`` opens a :class:`Recording`;
    ``on_recording_closed(recording)`` is called (outside the lock) after the
    last session of a recording goes, to purge its tiles.
    """

    def __init__(self, open_recording: Callable[[str, str], Recording],
                 on_recording_closed: Callable[[Recording], None], *,
                 session_ttl_s: Optional[float] = 1800.0, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        self._open_recording = open_recording
        self._on_closed = on_recording_closed
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.RLock()
        self._open_locks: dict[str, threading.Lock] = {}
        self._sessions: "OrderedDict[tuple[str, str], Session]" = OrderedDict()
        self._files: dict[str, OpenFile] = {}

    # ---------------------------------------------------------------- opening

    def open(self, client_id: str, path: str, client_path: str, *, password: str = "",
             cache_fs: Optional[float] = None, allow_mixed_rates: bool = False,
             validate: Optional[Callable[[Recording], None]] = None) -> tuple[Session, Recording]:
        """Open (or refresh) ``client_id``'s session on ``path``; open the file if needed.

        ``validate(recording)`` runs before the session is recorded (the
        ``cache_fs`` rate check); if it raises, nothing changes.
        """
        while True:
            with self._lock:
                lock = self._open_locks.setdefault(path, threading.Lock())
            closed: list[Recording] = []
            discard: Optional[Recording] = None
            with lock:   # one open of one file at a time; other files proceed
                with self._lock:
                    entry = self._files.get(path)
                fresh = None
                authorized = True
                if entry is None:
                    fresh = self._open_recording(path, password)   # slow part, outside the lock
                    rec = fresh
                    access = rec.access_level
                else:
                    rec = entry.recording
                    access = rec.access_level
                    if rec.encrypted:
                        authorized, access = self._check_password(rec, password)
                try:
                    if rec.encrypted and client_id == DEFAULT_CLIENT:
                        raise BadRequest(
                            f"{client_path} is encrypted: open it with a client id "
                            "(x-mef3io-client-id metadata), so that only you read it")
                    if validate is not None:
                        validate(rec)
                except Exception:
                    if fresh is not None:
                        self._on_closed(fresh)
                    raise
                with self._lock:
                    current = self._files.get(path)
                    if fresh is not None and current is None:
                        entry = OpenFile(fresh, client_path)
                        self._files[path] = entry
                    elif fresh is not None:
                        # Another open of this path won: the file's last session
                        # closed meanwhile and took the per-path lock with it.
                        # Join the winner's recording (fresh proved the password).
                        discard, entry, rec = fresh, current, current.recording
                    elif current is not entry:
                        # The file's last session closed while we waited: what we
                        # hold is a closed recording. Open the file again.
                        entry = None
                    if entry is not None:
                        key = (client_id, path)
                        s = self._sessions.get(key)
                        if s is None:
                            s = Session(client_id, path, client_path)
                            self._sessions[key] = s
                            entry.sessions.add(key)
                        s.client_path = client_path
                        s.cache_fs = cache_fs
                        s.allow_mixed_rates = allow_mixed_rates
                        s.authorized = authorized
                        s.access_level = access
                        s.password = password if rec.encrypted else ""
                        s.last_used = self._clock()
                        self._sessions.move_to_end(key)
                        closed = self._enforce_max_locked(keep=key)
            if discard is not None:
                self._on_closed(discard)
            if entry is not None:
                break
        for r in closed:
            self._on_closed(r)
        return s, rec

    def _check_password(self, rec: Recording, password: str) -> tuple[bool, str]:
        """A second client on an encrypted recording must present a password that opens it.

        The password of the open reader is compared in constant time; another
        one (the other level) is checked by opening a bare mef3io reader on
        the files and closing it at once: nothing is registered, nothing of
        it is kept.
        """
        if not password:
            raise PasswordRequired(
                f"{rec.path} is encrypted: a password is needed (its level-1 or level-2 "
                "password)")
        if hmac.compare_digest(password.encode("utf-8"), rec.password.encode("utf-8")):
            return True, rec.access_level
        try:
            probe = open_reader(rec.path, password)
        except Exception as e:  # noqa: BLE001 - mef3io's PasswordError and others
            if type(e).__name__ == "PasswordError":
                raise PasswordRequired(
                    f"{rec.path} is encrypted and the password given is wrong") from None
            raise PasswordRequired(f"{rec.path} is encrypted and could not be opened with the "
                                   "password given") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = probe.info(probe.channels[0])
            level = "level2" if info.get("section3_available") else "level1"
        finally:
            probe.close()
        return True, level

    # ---------------------------------------------------------------- lookups

    def session(self, client_id: str, path: str) -> Optional[Session]:
        with self._lock:
            s = self._sessions.get((client_id, path))
            if s is not None:
                s.last_used = self._clock()
                self._sessions.move_to_end((client_id, path))
            return s

    def recording_for_read(self, client_id: str, path: str, client_path: str
                           ) -> tuple[Recording, Optional[Session]]:
        """The open recording at ``path`` and the caller's session on it (if any).

        Raises :class:`NotOpen` when no client has the file open, and
        :class:`PasswordRequired` when it is encrypted and the caller has no
        session that presented a valid password.
        """
        with self._lock:
            entry = self._files.get(path)
            if entry is None:
                raise NotOpen(f"{client_path} is not open: call OpenFile first")
            s = self._sessions.get((client_id, path))
            if s is not None:
                s.last_used = self._clock()
                self._sessions.move_to_end((client_id, path))
            rec = entry.recording
        if rec.encrypted and (s is None or not s.authorized):
            raise PasswordRequired(
                f"{client_path} is encrypted: open it yourself with its password before reading")
        return rec, s

    def recording(self, path: str) -> Optional[Recording]:
        with self._lock:
            entry = self._files.get(path)
            return entry.recording if entry else None

    def open_paths(self) -> list[str]:
        """Client-visible paths of every open file, in opening order."""
        with self._lock:
            return [e.client_path for e in self._files.values()]

    def open_recordings(self) -> list[Recording]:
        with self._lock:
            return [e.recording for e in self._files.values()]

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ---------------------------------------------------------------- closing

    def close(self, client_id: str, path: str) -> bool:
        """End ``client_id``'s session on ``path``. True if the file is still open."""
        closed = []
        with self._lock:
            s = self._sessions.pop((client_id, path), None)
            if s is not None:
                closed = self._detach_locked((client_id, path))
            still_open = path in self._files
        for r in closed:
            self._on_closed(r)
        return still_open

    def _detach_locked(self, key) -> list[Recording]:
        entry = self._files.get(key[1])
        if entry is None:
            return []
        entry.sessions.discard(key)
        if entry.sessions:
            return []
        del self._files[key[1]]
        self._open_locks.pop(key[1], None)
        return [entry.recording]

    def _enforce_max_locked(self, keep) -> list[Recording]:
        closed = []
        while len(self._sessions) > self.max_sessions:
            victim = next((k for k in self._sessions if k != keep), None)
            if victim is None:
                break
            self._sessions.pop(victim)
            log.info("MAX_SESSIONS reached: closed the least recently used session")
            closed.extend(self._detach_locked(victim))
        return closed

    def expire(self, now: Optional[float] = None) -> int:
        """Close sessions idle longer than ``SESSION_TTL_S`` (never the default session)."""
        if not self.session_ttl_s:
            return 0
        now = self._clock() if now is None else now
        closed = []
        n = 0
        with self._lock:
            for key, s in list(self._sessions.items()):
                if s.client_id == DEFAULT_CLIENT:
                    continue
                if now - s.last_used > self.session_ttl_s:
                    del self._sessions[key]
                    closed.extend(self._detach_locked(key))
                    n += 1
        for r in closed:
            self._on_closed(r)
        return n

    def replace_recording(self, old: Recording, new: Recording) -> bool:
        """Swap in a re-opened recording (its files changed on disk). False if ``old`` is gone."""
        with self._lock:
            entry = self._files.get(old.path)
            if entry is None or entry.recording is not old:
                return False
            entry.recording = new
            return True

    def drop_file(self, path: str) -> Optional[Recording]:
        """Forget a file and all its sessions (it vanished); returns its recording."""
        with self._lock:
            entry = self._files.pop(path, None)
            if entry is None:
                return None
            for key in entry.sessions:
                self._sessions.pop(key, None)
            return entry.recording

    def close_all(self) -> None:
        with self._lock:
            recs = [e.recording for e in self._files.values()]
            self._files.clear()
            self._sessions.clear()
        for r in recs:
            self._on_closed(r)
