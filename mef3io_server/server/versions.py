"""Versions of open recordings: generations, the reader registry, retiring the superseded.

Every :class:`~.recordings.Recording` opened gets a new *generation*; a change
on disk re-opens the recording as a new version (:mod:`.changes`). The registry
maps ``(path, generation)`` to the open version, which is how the thread
decoder finds a recording's shared mef3io reader (:meth:`Versions.reader_for`).
A superseded version stays open while reads that began on it are running
(:class:`TrackedChunks` counts them), and is closed when the last one ends.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterator

from .decode import Source
from .errors import NotOpen
from .recordings import Recording


class Versions:
    """Generations, the registry and retirement (see module docstring).

    ``forget_source``: called with a closed version's :class:`Source` (the
    decoder drops readers it holds for it).
    """

    def __init__(self, forget_source: Callable[[Source], None]):
        self._forget_source = forget_source
        self._lock = threading.RLock()      # re-entrant: TrackedChunks may finalize under it
        self._generation = 0
        # Weak: a recording opened only to check a password, or refused after
        # opening (cache_fs), is closed and dropped without being unregistered.
        self._open: "weakref.WeakValueDictionary[tuple[str, int], Recording]" = \
            weakref.WeakValueDictionary()
        self._retired: list[Recording] = []    # superseded versions still being read

    def next_generation(self) -> int:
        with self._lock:
            self._generation += 1
            return self._generation

    def register(self, rec: Recording) -> None:
        with self._lock:
            self._open[(rec.source.path, rec.generation)] = rec

    def unregister(self, rec: Recording) -> None:
        with self._lock:
            if self._open.get((rec.source.path, rec.generation)) is rec:
                del self._open[(rec.source.path, rec.generation)]

    def registered(self) -> list[Recording]:
        """The versions registered now (open or retiring; a snapshot)."""
        with self._lock:
            return list(self._open.values())

    def reader_for(self, source: Source):
        """The thread decoder's reader lookup: the open recording's shared reader."""
        rec = self._open.get((source.path, source.generation))
        if rec is None or rec.closed:
            raise NotOpen(f"{source.path} was closed while it was being read")
        return rec.reader

    def tracked(self, rec: Recording, it: Iterator) -> "TrackedChunks":
        """``it``, holding ``rec`` open (counted in ``rec.active_reads``) until done."""
        return TrackedChunks(self, rec, it)

    def retire(self, rec: Recording) -> None:
        """Close a superseded version once no read is using it (now, or when the last ends).

        Reads that began on it keep its reader (and its generation in the
        registry) until they finish, so a re-open after an append never fails
        a read in flight.
        """
        with self._lock:
            self._retired.append(rec)
        self.close_retired()

    def close_retired(self) -> None:
        with self._lock:
            retired = self._retired
            idle = [r for r in retired if r.active_reads <= 0]
            self._retired = [r for r in retired if r.active_reads > 0]
            for r in idle:
                if self._open.get((r.source.path, r.generation)) is r:
                    del self._open[(r.source.path, r.generation)]
        for r in idle:
            r.close()
            self._forget_source(r.source)


class TrackedChunks:
    """An iterator over a read's chunks that holds its recording open until done.

    ``rec.active_reads`` is counted from creation (before the first chunk) to
    exhaustion, ``close()`` or garbage collection, whichever comes first, so a
    recording superseded by a re-open closes only after the reads that started
    on it finish (see :meth:`Versions.retire`).
    """

    def __init__(self, versions: Versions, rec: Recording, it: Iterator):
        self._versions = versions
        self._rec = rec
        self._it = it
        self._done = False
        with versions._lock:
            rec.active_reads += 1

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            with self._versions._lock:
                self._rec.active_reads -= 1
            if self._rec.superseded:
                self._versions.close_retired()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
