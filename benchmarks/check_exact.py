"""Served data == direct mef3io reads, for random windows: the check run after every optimisation.

    python benchmarks/check_exact.py [--n 40] [--env KEY=VALUE ...]

Starts this server (fresh, free port, extra environment from ``--env``), reads
random windows (random channel subsets, lengths from 1 sample to 10 min, some
outside the recording, repeated windows to hit the cache) of the benchmark
recordings, and compares each with ``mef3io.Reader.read(..., dtype="float32")``
using ``np.array_equal(..., equal_nan=True)``. Exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--env", action="append", default=[])
    args = ap.parse_args()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.ensure_recordings()
    env = dict(e.split("=", 1) for e in args.env)
    srv = bench.Server("ours", env=env)
    rng = random.Random(args.seed)
    direct = bench.DirectReader()
    client = bench.ServerReader(srv.address)
    bad = 0
    recent = []
    try:
        for i in range(args.n):
            if recent and rng.random() < 0.3:
                name, chans, t0, t1 = rng.choice(recent)
            else:
                name = rng.choice(list(bench.RECORDINGS))
                nch, secs, fs = bench.RECORDINGS[name]
                chans = sorted(rng.sample(bench.channel_names(nch), rng.randint(1, min(nch, 80))))
                length = rng.choice([1 / fs, 0.37, 1, 10, 60, 600])
                length = min(length, secs)
                start = rng.uniform(-2, secs - length + 2)
                t0 = bench.T0 + int(start * 1e6)
                t1 = t0 + max(1, int(length * 1e6))
                recent.append((name, chans, t0, t1))
            path = str(bench.rec_path(name))
            t = time.perf_counter()
            got = client.read(path, chans, t0, t1)
            dt = time.perf_counter() - t
            ref = direct.read(path, chans, t0, t1)
            ok = got.shape == ref.shape and np.array_equal(got, ref, equal_nan=True)
            if not ok:
                bad += 1
            print(f"{'ok ' if ok else 'BAD'} {name} {len(chans)} ch [{t0 - bench.T0}, "
                  f"{t1 - bench.T0}) {got.shape} {dt * 1e3:.1f} ms")
    finally:
        client.close()
        direct.close()
        srv.stop()
    print(f"{args.n - bad}/{args.n} exact")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
