"""Fingerprints of a recording's files: has it changed, and was the change only an append?

* :func:`recording_signature`: ``(relative path, size, mtime_ns, inode)`` of each
  file -- one ``stat`` per file. Appends change the size of ``.tdat`` and
  ``.tidx`` files and rewrite ``.tmet``; a replaced or truncated recording
  changes sizes or inodes.
* :func:`tail_marks` / :func:`marks_intact`: a CRC-32 of the bytes just before
  the end of each ``.tdat`` and ``.tidx`` at open. An append by
  ``mef3io.Writer`` extends those files and leaves the bytes alone; a rewrite
  with other data (even of the same shape) changes them or the inode.

A recording's channel folders are walked on a few threads (``os.scandir`` and
small reads release the GIL), in contiguous chunks so the result keeps the
folders' sorted order.
"""
from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

#: Threads that walk a recording's folders and read its marks, and the fewest
#: folders (or files) worth splitting between them.
WALK_THREADS = 4
SPLIT_AT = 64

UNIVERSAL_HEADER_BYTES = 1024   # MEF 3.0 files start with this header (rewritten on append)
TAIL_MARK_BYTES = 4096          # bytes before a file's end fingerprinted at open
#: A .tidx entry (one block): the last one may be rewritten when its block
#: grows, so its bytes are left out of the mark.
INDEX_ENTRY_BYTES = 56


def _chunks(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _parallel(fn, items: list) -> list:
    """``[fn(chunk) ...]`` over contiguous chunks of ``items``, on threads when many."""
    if len(items) < SPLIT_AT:
        return [fn(items)]
    with ThreadPoolExecutor(WALK_THREADS, thread_name_prefix="fingerprint") as pool:
        return list(pool.map(fn, _chunks(items, WALK_THREADS)))


def recording_signature(path: str) -> tuple:
    """``((relative path, size, mtime_ns, inode), ...)`` of every file of the
    recording at ``path`` (names sorted, depth first; linked folders not entered),
    or of the ``.mefd.tar`` file itself."""
    if os.path.isfile(path):
        st = os.stat(path)
        return (("", st.st_size, st.st_mtime_ns, st.st_ino),)
    try:
        with os.scandir(path) as it:
            top = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return ()

    def walk(items: list) -> list:
        entries: list = []
        for e in items:
            _add(e, "", entries)
        return entries

    return tuple(e for part in _parallel(walk, top) for e in part)


def _add(e: os.DirEntry, prefix: str, entries: list) -> None:
    try:
        if e.is_dir():
            if not e.is_symlink():
                _walk(e.path, prefix + e.name + "/", entries)
            return
        st = e.stat()
    except FileNotFoundError:
        return
    entries.append((prefix + e.name, st.st_size, st.st_mtime_ns, st.st_ino))


def _walk(directory: str, prefix: str, entries: list) -> None:
    try:
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return
    for e in items:
        _add(e, prefix, entries)


def _marked(rel: str) -> bool:
    return rel.endswith(".tdat") or rel.endswith(".tidx")


def _mark_span(rel: str, size: int) -> tuple[int, int]:
    """Byte range ``[a, b)`` of a file of ``size`` bytes whose CRC is its mark."""
    b = size - INDEX_ENTRY_BYTES if rel.endswith(".tidx") else size
    b = max(UNIVERSAL_HEADER_BYTES, b)
    return max(UNIVERSAL_HEADER_BYTES, b - TAIL_MARK_BYTES), b


def crc_of(full: str, a: int, b: int, fd: Optional[int] = None) -> Optional[int]:
    """CRC-32 of bytes ``[a, b)`` of ``full`` (or of the file open as ``fd``: no
    open and close), None when they cannot all be read."""
    n = max(0, b - a)
    try:
        if fd is not None:
            data = os.pread(fd, n, a)
        else:
            with open(full, "rb") as f:
                f.seek(a)
                data = f.read(n)
    except OSError:
        return None
    return zlib.crc32(data) if len(data) == n else None


def tail_marks(path: str, signature: tuple, fds: Optional[dict] = None) -> dict:
    """``{relative path: (inode, size, crc)}`` of each ``.tdat`` and ``.tidx`` of
    ``signature`` (see module docstring). Empty for a ``.mefd.tar``. ``fds``:
    relative path -> descriptor of files held open (the pinned view's), read
    in place of opening them."""
    if os.path.isfile(path):
        return {}
    fds = fds or {}
    files = [(rel, size, ino) for rel, size, _mtime, ino in signature if _marked(rel)]

    def marks(part: list) -> list:
        return [(rel, (ino, size, crc_of(os.path.join(path, rel), *_mark_span(rel, size),
                                         fd=fds.get(rel))))
                for rel, size, ino in part]

    return dict(m for part in _parallel(marks, files) for m in part)


def marks_intact(path: str, read_path: str, marks: dict, fds: Optional[dict] = None) -> bool:
    """Whether every file of ``marks`` still holds the bytes it held (maybe more):
    same inode, not shorter, marked bytes unchanged. ``path`` is stat'ed (the
    recording as named), ``read_path`` read (where mef3io reads: the pinned view,
    whose descriptors ``fds`` are read directly when given)."""
    if os.path.isfile(path):
        return False
    fds = fds or {}

    def check(part: list) -> bool:
        for rel, (ino, size, crc) in part:
            try:
                st = os.stat(os.path.join(path, rel))
            except OSError:
                return False
            if st.st_ino != ino or st.st_size < size or crc is None \
                    or crc_of(os.path.join(read_path, rel), *_mark_span(rel, size),
                              fd=fds.get(rel)) != crc:
                return False
        return True

    return all(_parallel(check, list(marks.items())))
