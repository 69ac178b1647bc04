"""Pinned recordings: mef3io opens exactly the files that were checked inside the roots.

mef3io opens a recording's files by path, and not once: the ``.tmet`` files
when a reader opens, the ``.tidx`` files when it first needs a block index,
and every ``.tdat`` it reads from *again at each read* (measured with
``strace``: open, read, close per read). A path checked once is therefore no
guarantee: a channel (``.timd``) or segment (``.segd``) folder, or a file,
replaced by a symlink to a recording outside ``DATA_ROOTS`` after the check
would be followed at the next read.

So with ``DATA_ROOTS`` set, a recording is opened through a *pinned view*
(:class:`PinnedRecording`):

* every folder and file of the recording is opened once, relative to its
  already checked parent folder; what is not a symlink (opened with
  ``O_NOFOLLOW``) is where that folder is, and a symlink is followed and the
  real location of what was opened (``/proc/self/fd/N``) checked to be inside
  a root: a symlink leading out of the roots refuses the whole recording,
  whatever it points to;
* the descriptors stay open for as long as the recording is, and mef3io is
  given a private tree (mode 0700, under the server's temporary directory)
  of the same names whose files are links to ``/proc/<server pid>/fd/N``:
  whatever mef3io opens, whenever it opens it, is the very file that was
  checked (the kernel follows the descriptor, not a name anyone can change).
  Decode worker processes follow the same links.

Changes on disk are still seen (a recording's change check stats the real
files, see :mod:`.recordings`): a new or replaced file re-opens the
recording, which pins it again, and refuses it if it now leads out.

Costs: one descriptor per file of each open recording (the server raises its
soft ``RLIMIT_NOFILE`` to the hard limit at start-up, and refuses to pin past
all but a reserve of it), and about four system calls per file when a
recording opens. The views are made in memory (``/dev/shm``) where it can be
written, else in the temporary directory (:func:`views_parent`): a folder and
a link per file cost ~15 us there and ~300 us on a busy disk's file system
(1024 channels: 30 ms against 1.5 s). Hard links cannot be told from the file they link to: the
kernel's ``fs.protected_hardlinks`` (on by default) keeps users from linking
files they cannot already write.
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import stat
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from .errors import PathRefused, RecordingNotFound, ResourceLimit

log = logging.getLogger("mef3io_server.pinning")

#: Folder levels below a recording a pinned view follows (.mefd/.timd/.segd/files).
MAX_DEPTH = 4
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


#: Threads that pin a recording's channel folders, from this many folders on.
PIN_THREADS = 4
PARALLEL_FOLDERS = 64

#: Where views are made first, when it is a folder the server may write.
MEMORY_FOLDER = "/dev/shm"


def views_parent() -> str:
    """The folder the views' folder is made in: :data:`MEMORY_FOLDER` when the
    server can write there, else Python's temporary directory."""
    if os.path.isdir(MEMORY_FOLDER) and os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
        return MEMORY_FOLDER
    return tempfile.gettempdir()


def fd_path(fd: int) -> str:
    """Where the file open as ``fd`` is, as the kernel sees it now."""
    return os.readlink(f"/proc/self/fd/{fd}")


class Pinner:
    """Makes :class:`PinnedRecording` views, within ``within(realpath)``, sharing one
    budget of descriptors (see module docstring)."""

    def __init__(self, within: Callable[[str], bool], reserve: int = 1024):
        self.within = within
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        soft = 1 << 20 if soft == resource.RLIM_INFINITY else soft
        self.max_fds = max(0, soft - max(reserve, soft // 4))
        self.held = 0
        self._lock = threading.Lock()
        self._root: Optional[str] = None
        self._views = 0

    def _view_dir(self) -> str:
        with self._lock:
            if self._root is None:
                self._root = tempfile.mkdtemp(prefix=f"mef3io-server-pins-{os.getpid()}-",
                                              dir=views_parent())
            self._views += 1
            return os.path.join(self._root, str(self._views))

    def _take(self, n: int, path: str) -> None:
        with self._lock:
            if self.held + n > self.max_fds:
                raise ResourceLimit(
                    f"the server already holds {self.held} files of open recordings open, "
                    f"and {path} would take it past {self.max_fds} (its RLIMIT_NOFILE, less "
                    "a reserve); close some recordings or raise the limit")
            self.held += n

    def _give(self, n: int) -> None:
        with self._lock:
            self.held -= n

    def pin(self, path: str, shown_as: Optional[str] = None) -> "PinnedRecording":
        """A pinned view of the recording at ``path`` (a resolved local path).

        Raises :class:`PathRefused` when anything in it lies outside the roots,
        :class:`RecordingNotFound` when it cannot be opened.
        """
        return PinnedRecording(self, path, shown_as or path)

    def close(self) -> None:
        """Remove the views' folder (after every pinned recording closed)."""
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


class PinnedRecording:
    """The recording at ``path``, every file held open, seen by mef3io at :attr:`view`."""

    def __init__(self, pinner: Pinner, path: str, shown_as: str):
        self._pinner = pinner
        self._fds: list[int] = []
        #: The recording's regular files held open: path relative to it -> descriptor.
        self.files_by_path: dict[str, int] = {}
        self._taken = 0
        self._count_lock = threading.Lock()     # _taken, from the pinning threads
        self.path = path
        self.shown_as = shown_as
        self._view_root = pinner._view_dir()
        name = os.path.basename(path.rstrip("/"))
        self.view = os.path.join(self._view_root, name)
        pid = os.getpid()
        self._link = lambda fd: f"/proc/{pid}/fd/{fd}"
        try:
            os.makedirs(self._view_root, mode=0o700)
            top = self._open(None, path)
            if stat.S_ISDIR(os.fstat(top).st_mode):
                os.mkdir(self.view, 0o700)
                self._pin_folder(top, self.view, 1, "")
            else:
                os.symlink(self._link(top), self.view)
        except BaseException:
            self.close()
            raise

    def _open(self, parent: Optional[int], name: str) -> int:
        """Open ``name`` (in folder ``parent``), check where it really is, keep it."""
        self._pinner._take(1, self.shown_as)
        with self._count_lock:
            self._taken += 1
        if parent is not None:
            # Not a link, in a folder already checked: it is where its folder is.
            try:
                fd = os.open(name, _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise RecordingNotFound(f"{self.shown_as} cannot be opened: "
                                            f"{e.strerror or type(e).__name__}") from None
            else:
                self._fds.append(fd)
                return fd
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=parent)
        except OSError as e:
            raise RecordingNotFound(f"{self.shown_as} cannot be opened: "
                                    f"{e.strerror or type(e).__name__}") from None
        self._fds.append(fd)
        try:
            real = fd_path(fd)
        except OSError:
            real = ""
        if not real.startswith("/") or not self._pinner.within(real):
            raise PathRefused(f"{self.shown_as} is outside the served roots: a folder or file "
                              "of it leads out of them")
        return fd

    def _pin_folder(self, fd: int, view: str, depth: int, rel: str) -> None:
        if depth > MAX_DEPTH:
            raise PathRefused(f"{self.shown_as} nests folders deeper than a MEF session does")
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        if depth == 1 and len(names) >= PARALLEL_FOLDERS:
            # A recording of many channels: its channel folders on a few threads
            # (open, readlink, mkdir and symlink release the GIL).
            size = -(-len(names) // PIN_THREADS)
            parts = [names[i:i + size] for i in range(0, len(names), size)]
            with ThreadPoolExecutor(PIN_THREADS, thread_name_prefix="pin") as pool:
                list(pool.map(lambda part: self._pin_names(fd, view, depth, rel, part), parts))
            return
        self._pin_names(fd, view, depth, rel, names)

    def _pin_names(self, fd: int, view: str, depth: int, rel: str, names: list) -> None:
        for name in names:
            child = self._open(fd, name)
            mode = os.fstat(child).st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(os.path.join(view, name), 0o700)
                self._pin_folder(child, os.path.join(view, name), depth + 1, rel + name + "/")
            elif stat.S_ISREG(mode):
                os.symlink(self._link(child), os.path.join(view, name))
                self.files_by_path[rel + name] = child
            else:                          # a fifo, socket or device: never for mef3io
                self._fds.remove(child)
                os.close(child)
                self._pinner._give(1)
                with self._count_lock:
                    self._taken -= 1

    @property
    def files(self) -> int:
        """Descriptors held."""
        return len(self._fds)

    def close(self) -> None:
        """Close the descriptors and remove the view."""
        fds, self._fds = self._fds, []
        self.files_by_path = {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        taken, self._taken = self._taken, 0
        self._pinner._give(taken)
        shutil.rmtree(self._view_root, ignore_errors=True)
