"""The server process's C allocator: fewer glibc malloc arenas with the process pool.

glibc gives threads of a process up to ``8 x cores`` malloc arenas, and
memory freed in an arena stays with the process (it is reused by the same
arena, rarely returned to the system). With ``USE_PROCESS_POOL=true`` the
server's threads (gRPC workers, each decode pool's manager thread -- a new
one at every pool rebuild) allocate and free decoded samples in many of
them: in the soak with decode workers killed every 3 s, 130-150 MB sat free
in arenas of a server whose live allocations were 10-50 MB; with two arenas
the server's memory stayed under 130 MB (docs/reliability.md, "Decode workers
killed"). No effect, and no error, on a C library other than glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mef3io_server.memory")

M_ARENA_MAX = -8          # glibc's mallopt parameter number (malloc.h)
#: Arenas the server limits glibc to with the process pool (when
#: ``MALLOC_ARENA_MAX`` is not set in the environment): measured on 2 cores.
PROCESS_POOL_ARENAS = 2


def limit_malloc_arenas(arenas: int = PROCESS_POOL_ARENAS) -> bool:
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

