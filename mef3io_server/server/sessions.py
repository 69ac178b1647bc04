"""Sessions: one per (caller, file), and the recordings they keep open.

A session here is a client's open of a recording, never the MEF session on
disk (that is a *recording*, :mod:`.recordings`).

docs/protocol.md's rules, in one place:

* A client names itself in the ``x-mef3io-client-id`` metadata; calls without
  it share one default session (client id ``""``) that never expires.
* A session belongs to a :class:`~.callers.Caller`: the authenticated identity
  (the token's name, ``""`` without tokens) *and* the client id. A client id
  is a name tag, not a secret: with tokens, the holder of another token who
  sends the same client id has sessions of its own, and never reaches these
  (their passwords, their ``CloseFile``).
* ``OpenFile`` creates or refreshes the caller's session on the file (and
  replaces its ``cache_fs`` / ``allow_mixed_rates``); ``CloseFile`` ends only
  the caller's session.
* A recording stays open while any session holds it; when its last session
  goes (closed, expired after ``SESSION_TTL_S`` idle, or pushed out by
  ``MAX_SESSIONS``), its reader closes and its tiles leave the cache.
* ``MAX_SESSIONS`` is shared fairly: past it, the session pushed out is the
  least recently used one of whoever holds the most sessions (an identity;
  without tokens, a client id), so a caller opening sessions by the thousand
  pushes out its own, never the few of others. Sessions the server opened
  itself (the recording preloaded at start-up) are never pushed out. When
  nothing can go, the open is refused.
* A read needs the file open by some client. For an encrypted recording, the
  reader's own session must have presented a valid password: no client reads
  encrypted data through another client's open reader.
* ``ListOpenFiles`` shows a caller the files its identity has open, and those
  the server opened itself; without tokens (one identity), every open file.
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

from .callers import Caller, as_caller
from .decode import open_reader
from .errors import BadRequest, NotOpen, PasswordRequired, ResourceLimit
from .recordings import Recording

log = logging.getLogger("mef3io_server.sessions")

DEFAULT_CLIENT = ""


@dataclass
class Session:
    """One caller's view of one open file."""

    caller: Caller
    path: str                      # resolved path (the recording's key)
    client_path: str               # the path as this client named it
    cache_fs: Optional[float] = None
    allow_mixed_rates: bool = False
    authorized: bool = True        # presented a valid password (or none was needed)
    last_used: float = field(default_factory=time.monotonic)
    access_level: str = "none"     # what this client's own password opens (or "level1"/"level2")
    password: str = field(default="", repr=False)   # this client's own, in memory only
    protected: bool = False        # opened by the server itself: never pushed out

    @property
    def client_id(self) -> str:
        return self.caller.client_id


def holder(caller: Caller) -> tuple[str, str]:
    """Who a session counts against for ``MAX_SESSIONS``: its identity; without one
    (no tokens), its client id."""
    return ("identity", caller.identity) if caller.identity else ("client", caller.client_id)


@dataclass
class OpenFile:
    recording: Recording
    client_path: str               # as first named; what ListOpenFiles shows
    sessions: set = field(default_factory=set)


class SessionRegistry:
    """Sessions and open recordings, guarded by one lock.

    ``open_recording(path, password)`` opens a :class:`Recording`;
    ``on_recording_closed(recording)`` is called (outside the lock) after the
    last session of a recording goes, to purge its tiles;
    ``on_recording_listed(recording)`` (outside the lock) once a recording
    opened for a session, or re-opened in place of an older version
    (:meth:`replace_recording`), is listed by :meth:`open_recordings`.
    """

    def __init__(self, open_recording: Callable[[str, str], Recording],
                 on_recording_closed: Callable[[Recording], None], *,
                 on_recording_listed: Optional[Callable[[Recording], None]] = None,
                 session_ttl_s: Optional[float] = 1800.0, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        self._open_recording = open_recording
        self._on_closed = on_recording_closed
        self._on_listed = on_recording_listed or (lambda rec: None)
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.RLock()
        self._open_locks: dict[str, threading.Lock] = {}
        self._sessions: "OrderedDict[tuple[Caller, str], Session]" = OrderedDict()
        self._files: dict[str, OpenFile] = {}
        self._pushed_out: list[tuple[str, int]] = []    # (who, sessions held): to log

    # ---------------------------------------------------------------- opening

    def open(self, caller, path: str, client_path: str, *, password: str = "",
             cache_fs: Optional[float] = None, allow_mixed_rates: bool = False,
             validate: Optional[Callable[[Recording], None]] = None,
             protected: bool = False) -> tuple[Session, Recording]:
        """Open (or refresh) ``caller``'s session on ``path``; open the file if needed.

        ``caller``: a :class:`Caller` (or a bare client id). ``validate(recording)``
        runs before the session is recorded (the ``cache_fs`` rate check); if it
        raises, nothing changes. ``protected``: never pushed out by MAX_SESSIONS.
        """
        caller = as_caller(caller)
        while True:
            with self._lock:
                lock = self._open_locks.setdefault(path, threading.Lock())
            closed: list[Recording] = []
            discard: Optional[Recording] = None
            listed: Optional[Recording] = None
            refusal: Optional[ResourceLimit] = None
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
                    if rec.encrypted and caller.client_id == DEFAULT_CLIENT:
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
                        listed = fresh
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
                        key = (caller, path)
                        s = self._sessions.get(key)
                        if s is None:
                            closed, full = self._make_room_locked(caller, path)
                            if full:
                                refusal = ResourceLimit(
                                    f"the server holds MAX_SESSIONS={self.max_sessions} "
                                    "sessions and none can be closed for this one; close "
                                    "some of yours, or try again later")
                                if not entry.sessions:      # opened for this session alone
                                    del self._files[path]
                                    self._open_locks.pop(path, None)
                                    closed.append(entry.recording)
                                    listed = None
                            else:
                                s = Session(caller, path, client_path)
                                self._sessions[key] = s
                                entry.sessions.add(key)
                        if s is not None:
                            s.protected = s.protected or protected
                            s.client_path = client_path
                            s.cache_fs = cache_fs
                            s.allow_mixed_rates = allow_mixed_rates
                            s.authorized = authorized
                            s.access_level = access
                            s.password = password if rec.encrypted else ""
                            s.last_used = self._clock()
                            self._sessions.move_to_end(key)
            if discard is not None:
                self._on_closed(discard)
            if listed is not None:
                self._on_listed(listed)
            if entry is not None:
                break
        for r in closed:
            self._on_closed(r)
        if self._pushed_out:
            self._log_pushed_out()
        if refusal is not None:
            raise refusal
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
            probe = open_reader(rec.open_path, password)
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

    def session(self, caller, path: str) -> Optional[Session]:
        """``caller``'s session on ``path`` (a :class:`Caller` or a bare client id)."""
        key = (as_caller(caller), path)
        with self._lock:
            s = self._sessions.get(key)
            if s is not None:
                s.last_used = self._clock()
                self._sessions.move_to_end(key)
            return s

    def recording_for_read(self, caller, path: str, client_path: str
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
            key = (as_caller(caller), path)
            s = self._sessions.get(key)
            if s is not None:
                s.last_used = self._clock()
                self._sessions.move_to_end(key)
            rec = entry.recording
        if rec.encrypted and (s is None or not s.authorized):
            raise PasswordRequired(
                f"{client_path} is encrypted: open it yourself with its password before reading")
        return rec, s

    def recording(self, path: str) -> Optional[Recording]:
        with self._lock:
            entry = self._files.get(path)
            return entry.recording if entry else None

    def open_paths(self, identity: Optional[str] = None) -> list[str]:
        """Client-visible paths of the open files, in opening order.

        ``identity`` None or ``""`` (no tokens): every open file, named as its
        first opener named it. Else the files ``identity`` has a session on,
        named as it last named them, and those the server opened itself.
        """
        with self._lock:
            if not identity:
                return [e.client_path for e in self._files.values()]
            out = []
            for e in self._files.values():
                own = [self._sessions[k] for k in e.sessions if k[0].identity == identity]
                if own:
                    out.append(max(own, key=lambda x: x.last_used).client_path)
                elif any(self._sessions[k].protected for k in e.sessions):
                    out.append(e.client_path)
            return out

    def open_recordings(self) -> list[Recording]:
        with self._lock:
            return [e.recording for e in self._files.values()]

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ---------------------------------------------------------------- closing

    def close(self, caller, path: str) -> bool:
        """End ``caller``'s session on ``path``. True if the file is still open."""
        closed = []
        key = (as_caller(caller), path)
        with self._lock:
            s = self._sessions.pop(key, None)
            if s is not None:
                closed = self._detach_locked(key)
            still_open = path in self._files
        for r in closed:
            self._on_closed(r)
        return still_open

    def _detach_locked(self, key, keep: Optional[str] = None) -> list[Recording]:
        """Remove session ``key`` from its file; the file closes (returned) with its
        last session, unless it is ``keep`` (a file being opened, about to be joined)."""
        entry = self._files.get(key[1])
        if entry is None:
            return []
        entry.sessions.discard(key)
        if entry.sessions or key[1] == keep:
            return []
        del self._files[key[1]]
        self._open_locks.pop(key[1], None)
        return [entry.recording]

    def _make_room_locked(self, opener: Caller, path: str) -> tuple[list[Recording], bool]:
        """Push out sessions until one more fits under ``MAX_SESSIONS``.

        ``path``: the file ``opener`` is opening; pushing out its last other
        session leaves it open for the opener.

        Each time, the least recently used session of whoever holds the most
        (see :func:`holder`; ``opener`` counts the one it is opening), never a
        protected one. Returns the recordings closed by it, and True when no
        room could be made.
        """
        closed: list[Recording] = []
        while len(self._sessions) >= self.max_sessions:
            counts: dict[tuple[str, str], int] = {}
            for (caller, _), sess in self._sessions.items():
                if not sess.protected:
                    h = holder(caller)
                    counts[h] = counts.get(h, 0) + 1
            if not counts:
                return closed, True
            mine = holder(opener)
            counts[mine] = counts.get(mine, 0) + 1
            most = max(counts.values())
            victim = next(((k, sess) for k, sess in self._sessions.items()
                           if not sess.protected and counts[holder(k[0])] == most), None)
            if victim is None:                  # the opener holds the most, and nothing yet
                victim = next(((k, sess) for k, sess in self._sessions.items()
                               if not sess.protected), None)
            key, sess = victim
            self._sessions.pop(key)
            self._pushed_out.append((sess.caller.describe(), most))
            closed.extend(self._detach_locked(key, keep=path))
        return closed, False

    def _log_pushed_out(self) -> None:
        """Log the sessions :meth:`_make_room_locked` closed (outside the lock)."""
        with self._lock:
            pushed, self._pushed_out = self._pushed_out, []
        for who, most in pushed:
            log.info("MAX_SESSIONS reached: closed the least recently used session of %s "
                     "(%d sessions)", who, most)

    def expire(self, now: Optional[float] = None) -> int:
        """Close sessions idle longer than ``SESSION_TTL_S`` (never the default session)."""
        if not self.session_ttl_s:
            return 0
        now = self._clock() if now is None else now
        closed = []
        n = 0
        with self._lock:
            for key, s in list(self._sessions.items()):
                if s.client_id == DEFAULT_CLIENT or s.protected:
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
        self._on_listed(new)
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
