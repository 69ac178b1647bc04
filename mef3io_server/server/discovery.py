"""Discovery: the recordings under a served directory, from metadata only.

:func:`find_recordings` walks a directory for ``.mefd`` folders (never entering
them) and ``.mefd.tar`` archives, in sorted order, skipping anything whose
real path leaves the served roots (a symlink pointing out) or cannot be
resolved (``/proc`` holds links that cannot be read), optionally staying on
one filesystem, and stopping as soon as its caller no longer wants the
answer (the client gave up: a walk that finds nothing still notices). A
:class:`SummaryCache` summarises each recording with mef3io without a
password (metadata files only, no ``.tdat`` and no record read) and keeps the
summary until the recording's files change (its
:func:`~.fingerprints.recording_signature`: size, mtime and inode of each file).

An encrypted recording is listed without opening it: ``encrypted`` is True and
whatever its unencrypted metadata holds is given (channel count and span);
values that are locked (the sampling rates) are 0.0. A recording that cannot be
read at all is listed with an ``error`` and zeros.

Units: times uUTC, rates Hz, sizes bytes (every file of the recording, or the
archive).
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from .errors import ServerError
from .pinning import Pinner
from .fingerprints import recording_signature

#: Recording summaries kept (least recently used dropped first).
INDEX_ENTRIES = 4096


@dataclass(frozen=True)
class RecordingSummary:
    """What a listing says about one recording (see module docstring)."""

    path: str
    number_of_channels: int = 0
    start_uutc: int = 0
    end_uutc: int = 0
    min_sampling_rate: float = 0.0
    max_sampling_rate: float = 0.0
    size_bytes: int = 0
    encrypted: bool = False
    error: Optional[str] = None


def is_recording_name(name: str) -> bool:
    return name.endswith(".mefd") or name.endswith(".mefd.tar")


class WalkCancelled(Exception):
    """The caller of a walk stopped wanting it (see :func:`find_recordings`)."""


def find_recordings(directory: str, recursive: bool = True,
                  allowed: Callable[[str], bool] = lambda p: True,
                  wanted: Callable[[], bool] = lambda: True,
                  device: Optional[int] = None) -> Iterator[str]:
    """Paths (under ``directory``, as walked) of the recordings in it, sorted per folder.

    ``allowed(realpath)`` filters out links whose real path is refused
    (``directory`` itself must be allowed: nothing else below it can lead
    out); unreadable folders and links that cannot be resolved are skipped.
    ``wanted()`` is asked before each folder and every 256 entries: False
    ends the walk (:class:`WalkCancelled`). ``device``: do not enter folders
    on another filesystem (``st_dev``).
    """
    if not wanted():
        raise WalkCancelled()
    time.sleep(0)       # let waiting threads have the GIL: a walk is pure Python for long
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    subdirs = []
    for i, e in enumerate(entries):
        if i % 256 == 255 and not wanted():
            raise WalkCancelled()
        try:
            is_dir = e.is_dir()
            # Below an allowed folder only a link can lead elsewhere: resolve only those.
            if e.is_symlink() and not allowed(os.path.realpath(e.path)):
                continue
        except OSError:
            continue
        if e.name.endswith(".mefd") and is_dir:
            yield e.path
        elif e.name.endswith(".mefd.tar") and not is_dir:
            yield e.path
        elif is_dir and recursive and not e.is_symlink():
            try:
                if device is not None and e.stat(follow_symlinks=False).st_dev != device:
                    continue
            except OSError:
                continue
            subdirs.append(e.path)
    for d in subdirs:
        yield from find_recordings(d, recursive, allowed, wanted, device)


def summarize(path: str) -> RecordingSummary:
    """Summary of the recording at ``path`` from its metadata, without a password.

    Opens it with mef3io (its ``.tmet`` files and block indices, no data);
    an encrypted recording, which does not open without a password, is
    summarised by ``mef3io.time_range`` (channel count and span only).
    """
    import mef3io

    def failed(e: Exception) -> RecordingSummary:
        return RecordingSummary(path, error=f"not a readable MEF 3.0 session: "
                                          f"{type(e).__name__}: {e}"[:500])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reader = mef3io.Reader(path)
        except mef3io.PasswordError:
            try:
                tr = mef3io.time_range(path)
            except Exception as e:  # noqa: BLE001 - reported in the entry
                return failed(e)
            return RecordingSummary(path, number_of_channels=int(tr.channels),
                                  start_uutc=int(tr.start_uutc), end_uutc=int(tr.end_uutc),
                                  encrypted=True)
        except Exception as e:  # noqa: BLE001
            return failed(e)
        try:
            infos = [reader.info(ch) for ch in reader.channels]
            impl = getattr(reader, "_impl", None)
            encrypted = bool(impl.password_protected()) if impl is not None else False
        except Exception as e:  # noqa: BLE001
            return failed(e)
        finally:
            reader.close()
    if not infos:
        return RecordingSummary(path, error="not a readable MEF 3.0 session: it holds no channels")
    rates = [float(i["sampling_frequency"]) for i in infos if i.get("sampling_frequency")]
    return RecordingSummary(
        path=path, number_of_channels=len(infos),
        start_uutc=min(int(i["start_time"]) for i in infos),
        end_uutc=max(int(i["end_time"]) for i in infos),
        min_sampling_rate=min(rates, default=0.0), max_sampling_rate=max(rates, default=0.0),
        encrypted=encrypted)


class SummaryCache:
    """Cached :func:`summarize` results, valid until a recording's files change.

    Thread-safe. Checking validity costs one ``stat`` per file of the recording
    (its signature), far less than re-reading its metadata.
    """

    def __init__(self, max_entries: int = INDEX_ENTRIES, pinner: Optional[Pinner] = None):
        self.max_entries = max_entries
        self.pinner = pinner
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[tuple, RecordingSummary]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _summarize(self, path: str) -> RecordingSummary:
        """:func:`summarize` through a pinned view (with ``DATA_ROOTS``, see .pinning):
        a recording with a folder or file leading out of the roots is listed with
        that error, and nothing of it read."""
        if self.pinner is None:
            return summarize(path)
        try:
            pinned = self.pinner.pin(path, shown_as=os.path.basename(path))
        except ServerError as e:
            return RecordingSummary(path, error=str(e))
        try:
            s = summarize(pinned.view)
            return replace(s, path=path, error=s.error and s.error.replace(pinned.view, path))
        finally:
            pinned.close()

    def summary(self, path: str) -> RecordingSummary:
        """The summary of the recording at ``path`` (a local path), cached."""
        try:
            sig = recording_signature(path)
        except OSError as e:
            return RecordingSummary(path, error=f"cannot read {os.path.basename(path)}: {e}")
        with self._lock:
            hit = self._entries.get(path)
            if hit is not None and hit[0] == sig:
                self._entries.move_to_end(path)
                self.hits += 1
                return hit[1]
            self.misses += 1
        summary = replace(self._summarize(path), size_bytes=sum(e[1] for e in sig))
        with self._lock:
            self._entries[path] = (sig, summary)
            self._entries.move_to_end(path)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return summary
