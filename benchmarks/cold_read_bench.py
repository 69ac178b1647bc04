"""Cold-read cost in process: wall time, process CPU and mef3io reads of one read.

    .venv/bin/python benchmarks/cold_read_bench.py [--repeat 3] [--env KEY=VALUE ...]

Each repetition builds a fresh :class:`Engine` (empty tile cache), opens the
benchmark recording (``benchmarks/bench.py`` writes them) and times one read:

* ``overview_1h_64ch``: 1 h of 64 channels at 256 Hz, ``n_points=2000``
  (source: the original rate; no ``cache_fs``).
* ``window_60s_64ch``:  60 s of 64 channels at 256 Hz.
* ``window_10s_16ch_32k``: 10 s of 16 channels at 32768 Hz.

Prefetch of neighbouring windows is off (PREFETCH_*_WINDOWS=0) so the CPU
figure is the read's own; the read's own next-chunk decodes (background lane)
are waited for. CPU = ``time.process_time()`` (all threads of this process).
Prints the median of ``--repeat`` runs per scenario, in ms.

Measured 2026-11-22 (2 cores shared with other jobs, load 2.8-4.8: noisy),
per-tile decoding (before) vs runs of consecutive tiles in one mef3io read
(after), alternating, medians of 2-3 runs each, threads decoder:

=====================  ==========================  ==========================
scenario               before: wall / CPU / reads  after: wall / CPU / reads
=====================  ==========================  ==========================
overview_1h_64ch       8.5-11.0 s / 13.0-15.4 s /   6.0-9.0 s / 10.2-11.0 s /
                       720                          16
window_60s_64ch        156-194 ms / 224-261 ms / 14  113-186 ms / 194-260 ms / 4
window_10s_16ch_32k    858-1456 ms / 1.53-1.69 s / 4  799-1094 ms / 1.54-1.72 s / 4
=====================  ==========================  ==========================

The 32 kHz read is unchanged by design: each 2.5 MB chunk touches one 10 s
tile, so no read ever misses two consecutive tiles at once there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

from mef3io_server.server.config import Settings  # noqa: E402
from mef3io_server.server.engine import Engine  # noqa: E402

S = bench.S
SCENARIOS = {
    # name: (recording, channels, seconds, n_points)
    "overview_1h_64ch": ("main_64ch_1h_256Hz", 64, 3600, 2000),
    "window_60s_64ch": ("main_64ch_1h_256Hz", 64, 60, None),
    "window_10s_16ch_32k": ("rate_64ch_20s_32kHz", 16, 10, None),
}


def one(name: str, env: dict) -> dict:
    rec, nch, secs, n_points = SCENARIOS[name]
    path = str(bench.rec_path(rec))
    kw = dict(prefetch_ahead_windows=0, prefetch_behind_windows=0)
    kw.update(env)
    e = Engine(Settings(**kw))
    try:
        e.open_file("", path)
        chans = bench.channel_names(nch)
        t0 = bench.T0 + (5 * S if secs < 3600 else 0)
        t1 = t0 + secs * S
        d0 = e.decoder.stats().get("decodes", 0)
        s0 = e.decoder.stats().get("decode_seconds", 0.0)
        c0, w0 = time.process_time(), time.perf_counter()
        r = e.read_signal("", path, chans, t0, t1, n_points=n_points)
        samples = sum(rows.shape[1] for _, _, _, rows in r.chunks)
        wall = time.perf_counter() - w0
        while e.store.busy():
            time.sleep(0.002)
        cpu = time.process_time() - c0
        return {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3,
                "reads": e.decoder.stats().get("decodes", 0) - d0,
                "decode_ms": (e.decoder.stats().get("decode_seconds", 0.0) - s0) * 1e3,
                "tiles": e.store.stats.tiles_decoded, "samples": samples}
    finally:
        e.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--env", action="append", default=[], help="Settings field=value (int)")
    args = ap.parse_args()
    env = {k: int(v) for k, v in (x.split("=", 1) for x in args.env)}
    bench.ensure_recordings()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    for name in SCENARIOS:
        if args.only and args.only not in name:
            continue
        runs = [one(name, env) for _ in range(args.repeat)]
        walls = ", ".join(f"{r['wall_ms']:.0f}" for r in runs)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name:22s} wall {med['wall_ms']:8.1f} ms  cpu {med['cpu_ms']:8.1f} ms  "
              f"mef3io reads {med['reads']:5.0f} ({med['decode_ms']:.0f} ms in them)  tiles {med['tiles']:5.0f}  "
              f"(walls {walls})")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
