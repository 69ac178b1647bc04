"""The server's malloc arenas (mef3io_server/server/memory.py), seen from outside.

glibc maps each malloc arena beyond the main one as a 64 MiB-aligned heap of
64 MiB of address space (a read-write part, the rest reserved ``---p``), so
the arenas of a running server can be counted in ``/proc/<pid>/maps``.
"""
from __future__ import annotations

import sys
import threading

import pytest

from conftest import T0, random_walk

HEAP = 64 << 20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc arenas are read from /proc")


def arena_heaps(pid: int) -> int:
    """How many glibc arena heaps the process ``pid`` has mapped."""
    rows = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            a, b = (int(x, 16) for x in parts[0].split("-"))
            rows.append((a, b, parts[1], len(parts) > 5))
    n = 0
    for (a, b, perms, named), nxt in zip(rows, rows[1:] + [None]):
        if named or perms != "rw-p" or a % HEAP:
            continue
        end = nxt[1] if nxt and nxt[0] == b and nxt[2] == "---p" and not nxt[3] else b
        n += end - a == HEAP
    return n


def load(server, path, client_factory) -> None:
    """Eight clients reading at once: eight gRPC worker threads allocate samples."""
    errors = []

    def work(i):
        try:
            c = client_factory(server.address)
            c.open_file(str(path))
            for k in range(3):
                t0 = T0 + (i * 30 + k * 10) * 1_000_000
                r = c.get_signal_range(str(path), None, t0, t0 + 10_000_000)
                assert r["error_message"] == "" and r["array"] is not None
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_the_server_keeps_to_two_malloc_arenas(write_recording, start_server,
                                               client_factory, monkeypatch):
    """Thread decoding too: 16 gRPC workers and the decode lanes share glibc's main
    arena and one more (memory.ARENAS), instead of up to 8 x cores arenas that
    each keep what is freed in them; an operator's MALLOC_ARENA_MAX still wins."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    path = write_recording("arenas", {f"c{i}": random_walk(256 * 300, i) for i in range(16)})
    capped = start_server(PREFETCH_AHEAD_WINDOWS="0", PREFETCH_BEHIND_WINDOWS="0")
    load(capped, path, client_factory)
    assert arena_heaps(capped.proc.pid) <= 1
    # The operator's value is left to glibc: the same load then spreads over many arenas.
    free = start_server(MALLOC_ARENA_MAX="16", PREFETCH_AHEAD_WINDOWS="0",
                        PREFETCH_BEHIND_WINDOWS="0")
    load(free, path, client_factory)
    assert arena_heaps(free.proc.pid) >= 3
