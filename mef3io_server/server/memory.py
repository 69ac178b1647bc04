"""The server process's C allocator: two glibc malloc arenas instead of ``8 x cores``.

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
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mef3io_server.memory")

M_ARENA_MAX = -8          # glibc's mallopt parameter number (malloc.h)
#: Arenas the server limits glibc to (when ``MALLOC_ARENA_MAX`` is not set in
#: the environment): measured on 2 cores.
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on (a count).

    Leaves the allocator alone when ``MALLOC_ARENA_MAX`` is set (glibc has
    read it already: the operator's choice wins) or the C library is not
    glibc. Returns whether the cap was set. Call it before the server starts
    its threads: a thread keeps the arena it first allocated in.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt too)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, max(1, int(arenas))) == 1
    if ok:
        log.debug("glibc malloc arenas capped at %d", arenas)
    return ok

