"""Change signals: the operating system's file notifications on open recordings.

With Linux inotify (through ``inotify_simple``), each watched recording's
folder, every folder inside it (channels, segments; folders created
later are watched as they appear) and its parent folder are watched for
writes, attribute changes, creations, deletions and moves. One reader
thread serves every recording: it blocks on the inotify descriptor and on a
stop pipe, so it costs nothing while no file changes. An event calls
``on_change(session_path)``; what to do about it (a change check, debounced)
is :mod:`.changes`' business.

Edge rules:

* A ``.mefd.tar`` is watched as a file (and its folder, for a replacement).
* Events in the parent folder count only when they name the recording itself
  (it was deleted, moved, or replaced by a rename).
* :meth:`ChangeSignals.watch` returns False -- the caller then polls the
  recording, as without notifications -- when notifications cannot be
  trusted for it: its file system is a network, cluster or FUSE one
  (:func:`notifications_trusted`; writes made on another machine are never
  notified), a folder of it is a symbolic link, inotify is unavailable (not
  Linux, or no instance could be made: ``max_user_instances``), or the watch
  limit (``max_user_watches``, ``ENOSPC``) was hit; watches placed for it
  before the failure are removed.
* A queue overflow (``IN_Q_OVERFLOW``: events were lost) signals every
  watched recording; a watch the kernel removed (its folder was deleted)
  signals its recording.
* Watches are shared between recordings (a parent folder) and counted: a
  folder's watch is removed when the last recording using it is unwatched.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
from typing import Callable, Iterable, Optional

log = logging.getLogger("mef3io_server.engine")

try:                                      # Linux only
    from inotify_simple import INotify, flags as _flags
except Exception:  # noqa: BLE001 - not Linux, or the package is missing: polling
    INotify = None
    _flags = None

#: File system types whose notifications miss writes made elsewhere (network,
#: cluster and FUSE file systems): such recordings are polled. ``fuse.*``
#: subtypes (sshfs, s3fs, ...) are matched by their ``fuse`` prefix.
UNTRUSTED_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph", "cephfs",
    "glusterfs", "lustre", "gpfs", "afs", "ocfs2", "gfs2", "beegfs", "orangefs",
    "davfs", "virtiofs", "vboxsf", "vmhgfs", "pvfs2", "fuse", "fuseblk",
})


def notifications_trusted(fs_type: Optional[str]) -> bool:
    """Whether inotify sees every change on a file system of type ``fs_type``
    (as named in ``/proc/self/mountinfo``). Unknown (None): not trusted."""
    if not fs_type:
        return False
    t = fs_type.lower()
    return t not in UNTRUSTED_FS_TYPES and not t.startswith("fuse")


def _unescape(field: str) -> str:
    """Mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def fs_type_of(path: str, mountinfo: str) -> Optional[str]:
    """The type of the file system holding ``path`` (absolute, symbolic links
    already resolved), from the text of ``/proc/self/mountinfo``: the mount
    whose mount point is the longest prefix of ``path`` (of equal ones the
    last, which hides the earlier). None when no line matches."""
    best, best_len = None, -1
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 7 or "-" not in parts[6:]:
            continue
        mount_point = _unescape(parts[4])
        sep = parts.index("-", 6)
        if sep + 1 >= len(parts):
            continue
        fs_type = parts[sep + 1]
        mp = mount_point.rstrip("/") or "/"
        inside = path == mp or mp == "/" or path.startswith(mp + "/")
        if inside and len(mp) >= best_len:
            best, best_len = fs_type, len(mp)
    return best


def read_mountinfo(source: str = "/proc/self/mountinfo") -> str:
    """The mount table ("" when it cannot be read: every file system untrusted)."""
    try:
        with open(source, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class WatchLimit(OSError):
    """No more watches can be placed (``max_user_watches``)."""


class ChangeSignals:
    """Inotify watches on recordings, read by one thread (see module docstring).

    ``on_change(session_path)`` is called on the reader thread, so it must be
    quick (mark and wake). ``inotify_factory`` and ``mountinfo`` are seams
    for tests: a callable returning an ``INotify``-like object, and a callable
    returning the mount table's text (default: :func:`read_mountinfo`, looked
    up at each watch).
    """

    def __init__(self, on_change: Callable[[str], None], *,
                 inotify_factory: Optional[Callable[[], object]] = None,
                 mountinfo: Optional[Callable[[], str]] = None):
        self._on_change = on_change
        self._mountinfo = mountinfo
        self._lock = threading.Lock()
        self._wd_dir: dict[int, str] = {}                # wd -> folder (or tar file) watched
        self._wd_users: dict[int, dict[str, str]] = {}   # wd -> {recording: "tree" | "parent"}
        self._recording_wds: dict[str, set[int]] = {}      # recording -> its wds
        self._thread: Optional[threading.Thread] = None
        self._stop_r = self._stop_w = -1
        self._closed = False
        self._warned_limit = False
        #: Recordings whose watching failed after :meth:`watch` returned True (a
        #: folder made later could not be watched): the caller polls them from
        #: then on; taken by :meth:`take_lost`.
        self.lost: set[str] = set()
        self.inotify = None
        factory = inotify_factory or INotify
        if factory is None:
            self.unavailable = "inotify is not available on this system"
            return
        try:
            self.inotify = factory()
        except OSError as e:        # EMFILE: max_user_instances reached
            self.unavailable = f"no inotify instance could be made ({e})"
            return
        self.unavailable = ""
        f = _flags
        self._mask = (f.MODIFY | f.ATTRIB | f.CLOSE_WRITE | f.CREATE | f.DELETE
                      | f.MOVED_FROM | f.MOVED_TO | f.DELETE_SELF | f.MOVE_SELF)

    # ------------------------------------------------------------ watching

    @property
    def available(self) -> bool:
        return self.inotify is not None

    def trusted(self, path: str) -> tuple[bool, str]:
        """Whether notifications can be trusted for the recording at ``path``;
        with the reason when not."""
        if not self.available:
            return False, self.unavailable
        table = self._mountinfo() if self._mountinfo is not None else read_mountinfo()
        fs = fs_type_of(os.path.realpath(path), table)
        if not notifications_trusted(fs):
            return False, f"its file system ({fs or 'unknown'}) does not notify every change"
        return True, ""

    def watch(self, path: str) -> bool:
        """Watch the recording at ``path`` (a ``.mefd`` folder or ``.mefd.tar`` file).

        True when it is watched; False when it must be polled (the reason is
        logged at debug level, a watch limit as a warning once). Watching a
        watched recording again (a re-open after a change) adds the folders not
        watched yet: a recording deleted and written anew has new folders.
        """
        ok, why = self.trusted(path)
        if not ok:
            log.debug("change notifications not used for %s: %s; polling it", path, why)
            return False
        with self._lock:
            self._recording_wds.setdefault(path, set())
            try:
                parent = os.path.dirname(path.rstrip("/")) or "/"
                self._add_locked(path, parent, "parent")
                if os.path.isdir(path):
                    if os.path.islink(path):
                        raise _Untrusted("it is a symbolic link")
                    for d in _folders(path):
                        self._add_locked(path, d, "tree")
                else:
                    self._add_locked(path, path, "tree")
            except WatchLimit as e:
                self._unwatch_locked(path)
                if not self._warned_limit:
                    self._warned_limit = True
                    log.warning("inotify watch limit reached (%s; raise "
                                "fs.inotify.max_user_watches): %s and recordings opened "
                                "after it are polled for changes", e, path)
                return False
            except (_Untrusted, OSError) as e:
                self._unwatch_locked(path)
                log.debug("change notifications not used for %s: %s; polling it", path, e)
                return False
        self._ensure_thread()
        return True

    def unwatch(self, path: str) -> None:
        """Stop watching the recording at ``path`` (nothing when not watched)."""
        with self._lock:
            self._unwatch_locked(path)

    def watched(self) -> list[str]:
        """Recordings watched now."""
        with self._lock:
            return list(self._recording_wds)

    def watch_count(self) -> int:
        """Inotify watches held now (folders and files, each counted once)."""
        with self._lock:
            return len(self._wd_dir)

    def _add_locked(self, recording: str, target: str, role: str) -> None:
        try:
            wd = self.inotify.add_watch(target, self._mask)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise WatchLimit(e.errno, "max_user_watches reached") from None
            raise
        self._wd_dir[wd] = target
        users = self._wd_users.setdefault(wd, {})
        # A folder both inside one recording and the parent of another: "tree" wins.
        if users.get(recording) != "tree":
            users[recording] = role
        self._recording_wds[recording].add(wd)

    def _unwatch_locked(self, recording: str) -> None:
        for wd in self._recording_wds.pop(recording, ()):
            users = self._wd_users.get(wd)
            if users is None:
                continue
            users.pop(recording, None)
            if not users:
                self._forget_wd_locked(wd, remove=True)

    def _forget_wd_locked(self, wd: int, remove: bool) -> None:
        self._wd_users.pop(wd, None)
        self._wd_dir.pop(wd, None)
        if remove:
            try:
                self.inotify.rm_watch(wd)
            except OSError:
                pass            # the kernel removed it already (folder deleted)

    # ------------------------------------------------------------ the reader thread

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._stop_r, self._stop_w = os.pipe()
            self._thread = threading.Thread(target=self._run, name="change-signals",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Block until events or stop; dispatch events (never dies on an error)."""
        fd = self.inotify.fileno()
        while True:
            try:
                ready, _, _ = select.select([fd, self._stop_r], [], [])
            except InterruptedError:
                continue
            if self._stop_r in ready:
                return
            try:
                events = self.inotify.read(timeout=0)
                self._dispatch(events)
            except Exception:  # noqa: BLE001 - the reader must never die
                log.exception("reading change notifications failed")

    def _dispatch(self, events: Iterable) -> None:
        f = _flags
        changed: set[str] = set()
        with self._lock:
            for ev in events:
                if ev.mask & f.Q_OVERFLOW:
                    changed.update(self._recording_wds)
                    continue
                users = self._wd_users.get(ev.wd)
                if not users:
                    continue
                if ev.mask & f.IGNORED:              # the kernel dropped the watch
                    changed.update(users)
                    for s in list(users):
                        self._recording_wds.get(s, set()).discard(ev.wd)
                    self._forget_wd_locked(ev.wd, remove=False)
                    continue
                for recording, role in list(users.items()):   # (may unwatch one)
                    if role == "tree":
                        changed.add(recording)
                        if ev.mask & f.ISDIR and ev.mask & (f.CREATE | f.MOVED_TO) and ev.name:
                            self._watch_new_folder_locked(
                                recording, os.path.join(self._wd_dir[ev.wd], ev.name))
                    elif ev.name == os.path.basename(recording.rstrip("/")):
                        changed.add(recording)
        for recording in changed:
            try:
                self._on_change(recording)
            except Exception:  # noqa: BLE001
                log.exception("change signal handler failed for %s", recording)

    def _watch_new_folder_locked(self, recording: str, folder: str) -> None:
        """A folder appeared inside a watched recording: watch it and those in it
        (a new channel or segment; its files written meanwhile are covered by
        the change already signalled)."""
        if recording not in self._recording_wds:
            return
        try:
            if os.path.islink(folder):
                raise _Untrusted(f"{folder} is a symbolic link")
            for d in _folders(folder):
                self._add_locked(recording, d, "tree")
        except (WatchLimit, _Untrusted, OSError) as e:
            # Cannot follow this recording any more: stop watching it; the
            # change signalled now makes the caller check it, and the caller
            # polls it from then on (see :meth:`watch`).
            log.warning("change notifications dropped for %s (%s); polling it", recording, e)
            self._unwatch_locked(recording)
            self.lost.add(recording)

    def take_lost(self) -> set[str]:
        with self._lock:
            out, self.lost = self.lost, set()
            return out

    def close(self) -> None:
        """Stop the reader thread, remove every watch, close the inotify descriptor."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            os.write(self._stop_w, b"x")
            thread.join(timeout=5)
            os.close(self._stop_r)
            os.close(self._stop_w)
        with self._lock:
            for s in list(self._recording_wds):
                self._unwatch_locked(s)
            if self.inotify is not None:
                try:
                    self.inotify.close()
                except OSError:
                    pass



class _Untrusted(Exception):
    """A reason not to trust notifications for one recording (a symbolic link)."""


def _folders(top: str) -> list[str]:
    """``top`` and every folder below it (raises :class:`_Untrusted` on a
    symbolically linked folder: its target's changes would be watched under
    another name, or not at all)."""
    out = [top]
    stack = [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_symlink():
                    if os.path.isdir(e.path):
                        raise _Untrusted(f"{e.path} is a symbolic link to a folder")
                    continue
                if e.is_dir(follow_symlinks=False):
                    out.append(e.path)
                    stack.append(e.path)
    return out
