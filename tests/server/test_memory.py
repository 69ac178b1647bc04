"""The server's malloc arenas (mef3io_server/server/memory.py), seen from outside.

glibc maps each malloc arena beyond the main one as a 64 MiB-aligned heap of
64 MiB of address space (a read-write part, the rest reserved ``---p``), so
the arenas of a running server can be counted in ``/proc/<pid>/maps``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

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


TRIM_PROBE = '''
import ctypes, ctypes.util, resource, sys
sys.path.insert(0, sys.argv[1])
from mef3io_server.server import memory

if sys.argv[2] == "server":     # what the server sets at start-up
    pinned = memory.configure_allocator()["trim_threshold"]
else:
    pinned = memory.fix_mmap_threshold()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 3 << 20                    # under the 4 MB mmap threshold: from the heap
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)     # touch every page
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(int(pinned), sum(faults[5:]))
'''


def run_trim_probe(tmp_path, mode: str, env: dict) -> tuple[int, int]:
    script = tmp_path / "trim_probe.py"
    script.write_text(TRIM_PROBE)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(script), str(root), mode], check=True,
                         capture_output=True, text=True,
                         env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
    pinned, faults = out.stdout.split()
    return int(pinned), int(faults)


def test_a_block_under_the_mmap_threshold_stays_with_the_process_once_freed(tmp_path):
    """memory.fix_trim_threshold: with only the mmap threshold pinned, glibc's trim
    threshold stays at 128 KB and a 3 MB block freed at the top of the heap is given
    back and faulted in again (768 pages) by each next one; with what the server sets
    at start-up (memory.configure_allocator) it stays, and is reused without faults.
    MALLOC_TRIM_THRESHOLD_ set by the operator is left to glibc."""
    unset = {"MALLOC_TRIM_THRESHOLD_": None, "MALLOC_MMAP_THRESHOLD_": None}
    pinned, faults = run_trim_probe(tmp_path, "mmap-only", unset)
    assert pinned == 1 and faults >= 15 * 700       # 15 blocks, each faulted in again
    pinned, faults = run_trim_probe(tmp_path, "server", unset)
    assert pinned == 1 and faults < 15 * 10
    pinned, faults = run_trim_probe(tmp_path, "server", {**unset,
                                                       "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert pinned == 0 and faults >= 15 * 700
