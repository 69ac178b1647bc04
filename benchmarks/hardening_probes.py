"""Probes behind the hardening decisions (benchmarks/decisions.md, "Hardening against hostile
clients"): the memory of an ``n_points`` reduction, and the CPU of a cold sweep by run size.

Run from the repository root (a recording of 16 channels x 1 h is written to a temporary
folder first)::

    python benchmarks/hardening_probes.py points-memory [--mmap-threshold BYTES]
    python benchmarks/hardening_probes.py run-size [--rounds 3]

``points-memory``: an engine in this process reads ``n_points=2000`` of 8 channels over a
window starting 5 years before the data, three times; prints the peak of Python
allocations (``tracemalloc``) and how much the process grew. ``--mmap-threshold`` pins
glibc's mmap threshold first (as the server does, ``memory.fix_mmap_threshold``).

``run-size``: the same read, cold, alternating the tile store's ``tuning.run_max_bytes`` of 64 MB and
4 MB; prints the CPU and wall time of each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mef3io_server.server.config import Settings  # noqa: E402
from mef3io_server.server.engine import Engine  # noqa: E402

T0 = 1_600_000_000_000_000
HOUR_US = 3600 * 10**6
NAMES = [f"c{i:02d}" for i in range(8)]


def write_recording(folder: Path) -> str:
    import mef3io

    path = folder / "probe.mefd"
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for i in range(16):
                x = np.cumsum(rng.standard_normal(3600 * 256)) * 3.0
                w.write(f"c{i:02d}", x, T0, fs=256.0, precision=2)
    return str(path)


def sweep(engine: Engine, path: str, shift: int = 0) -> None:
    years = T0 - 5 * 365 * 86400 * 10**6
    read = engine.read_signal("probe", path, NAMES, years + shift, T0 + HOUR_US, n_points=2000)
    for _ in read.chunks:
        pass


def points_memory(path: str, mmap_threshold: int) -> None:
    if mmap_threshold:
        from mef3io_server.server.memory import fix_mmap_threshold

        print("mmap threshold pinned:", fix_mmap_threshold(mmap_threshold))
    engine = Engine(Settings(tile_cache_bytes=128 << 20))
    engine.open_file("probe", path)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    for k in range(3):
        tracemalloc.reset_peak()
        sweep(engine, path, k)
        _, peak = tracemalloc.get_traced_memory()
        print(f"read {k}: Python allocations peak {peak / 2**20:.0f} MB, process grew "
              f"{(proc.memory_info().rss - rss0) / 2**20:.0f} MB, cached tiles "
              f"{engine.cache.stats().bytes / 2**20:.0f} MB")
    engine.close()


def run_size(path: str, rounds: int) -> None:
    for _ in range(rounds):
        for mb in (64, 4):
            engine = Engine(Settings(prefetch_ahead_windows=0, prefetch_behind_windows=0))
            engine.store.tuning.run_max_bytes = mb << 20
            engine.open_file("probe", path)
            cpu, wall = time.process_time(), time.perf_counter()
            sweep(engine, path)
            print(f"runs of {mb:2d} MB: CPU {time.process_time() - cpu:.3f} s, "
                  f"wall {time.perf_counter() - wall:.3f} s")
            engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["points-memory", "run-size"])
    parser.add_argument("--mmap-threshold", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_recording(Path(tmp))
        if args.probe == "points-memory":
            points_memory(path, args.mmap_threshold)
        else:
            run_size(path, args.rounds)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
