"""The server process's C allocator: two glibc malloc arenas instead of ``8 x cores``,
and large blocks always given back to the system.

glibc gives threads of a process up to ``8 x cores`` malloc arenas, and
memory freed in an arena stays with the process (it is reused by the same
arena, rarely returned to the system). The server's threads (16 gRPC
workers, the decode lanes, a process pool's manager threads) allocate and
free samples in many of them. Measured on 2 cores (docs/reliability.md):
with ``USE_PROCESS_POOL=true`` and decode workers killed every 3 s, 130-150 MB
sat free in arenas of a server whose live allocations were 10-50 MB; with
thread decoding, 32 soak clients on a 128 MB cache, the server's memory was
334-373 MB with 16 arenas and 254-292 MB with 1-4, at the same throughput.
No effect, and no error, on a C library other than glibc.

glibc serves a large block (at first 128 KB and more) with its own ``mmap``,
returned to the system when freed, but then raises that threshold to the
size freed (up to 32 MB): the next blocks of that size come from the arenas
and stay with the process when freed. A read's source chunks and decoded
runs (4-64 MB of samples) then sit in the arenas after the read.
:func:`fix_mmap_threshold` pins the threshold at :data:`MMAP_THRESHOLD_BYTES`.
Measured (benchmarks/decisions.md): an ``n_points`` read of 8 channels x 1 h
left the process 78 MB larger with glibc's moving threshold, 42 MB with it
pinned at 4 MB (28 MB of it the tiles it cached).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mef3io_server.memory")

M_ARENA_MAX = -8          # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
#: Arenas the server limits glibc to (when ``MALLOC_ARENA_MAX`` is not set in
#: the environment): measured on 2 cores.
ARENAS = 2
#: Blocks of this many bytes or more always get their own mmap (see module docstring).
MMAP_THRESHOLD_BYTES = 4 << 20


def _glibc_mallopt():
    """glibc's ``mallopt``, or None on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt too)
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on (a count).

    Leaves the allocator alone when ``MALLOC_ARENA_MAX`` is set (glibc has
    read it already: the operator's choice wins) or the C library is not
    glibc. Returns whether the cap was set. Call it before the server starts
    its threads: a thread keeps the arena it first allocated in.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    ok = mallopt(M_ARENA_MAX, max(1, int(arenas))) == 1
    if ok:
        log.debug("glibc malloc arenas capped at %d", arenas)
    return ok



def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at ``nbytes`` (see module docstring).

    Leaves it alone when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator's
    choice) or the C library is not glibc. Returns whether it was set.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    mallopt = _glibc_mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
