"""The server process's C allocator: two glibc malloc arenas instead of ``8 x cores``,
large blocks always given back to the system, and a few MB of free heap kept.

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

Pinning the mmap threshold also stops glibc moving its trim threshold (free
memory at the top of a heap beyond which it is given back to the system),
which stays at its 128 KB default instead of following the mmap threshold
at twice its value. Work done in blocks just under the mmap threshold (a
montage's rows, a filter's runs, a reduction's buckets) then gives its heap
back after each block and faults it in again for the next.
:func:`fix_trim_threshold` pins it at :data:`TRIM_THRESHOLD_BYTES`, glibc's
own ratio to the pinned mmap threshold: at most that much free heap stays
with each arena. Measured (benchmarks/decisions.md, issue 16): a 64-channel
bipolar montage with a band-pass and a notch over an hour's overview took
about 1.5 s of CPU with the trim threshold pinned, 2.5-3.2 s without.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mef3io_server.memory")

M_ARENA_MAX = -8          # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
#: Arenas the server limits glibc to (when ``MALLOC_ARENA_MAX`` is not set in
#: the environment): measured on 2 cores.
ARENAS = 2
#: Blocks of this many bytes or more always get their own mmap (see module docstring).
MMAP_THRESHOLD_BYTES = 4 << 20
#: Free heap (bytes) kept before glibc gives the top of a heap back: twice the
#: mmap threshold, the ratio glibc keeps while it moves them itself.
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


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


def _pin(param: int, env_name: str, nbytes: int) -> bool:
    """``mallopt(param, nbytes)`` unless ``env_name`` is set (glibc read it already: the
    operator's choice wins) or the C library is not glibc. Returns whether it was set."""
    if os.environ.get(env_name):
        return False
    mallopt = _glibc_mallopt()
    return mallopt is not None and mallopt(param, int(nbytes)) == 1


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold at ``nbytes`` (see module docstring).

    Leaves it alone when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator's
    choice) or the C library is not glibc. Returns whether it was set.
    """
    return _pin(M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", nbytes)


def fix_trim_threshold(nbytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Pin glibc's trim threshold at ``nbytes`` (see module docstring).

    Leaves it alone when ``MALLOC_TRIM_THRESHOLD_`` is set (the operator's
    choice) or the C library is not glibc. Returns whether it was set.
    """
    return _pin(M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", nbytes)


def configure_allocator() -> dict[str, bool]:
    """What the server sets at start-up, before any of its threads exists (a thread
    keeps the arena it first allocated in): :func:`limit_malloc_arenas`,
    :func:`fix_mmap_threshold` and :func:`fix_trim_threshold`, each at its default.
    Returns which of them were set (``arenas``, ``mmap_threshold``, ``trim_threshold``).
    """
    return {"arenas": limit_malloc_arenas(), "mmap_threshold": fix_mmap_threshold(),
            "trim_threshold": fix_trim_threshold()}
