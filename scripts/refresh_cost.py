#!/usr/bin/env python3
"""Cost of the change check (fingerprints.recording_signature) on sessions of many files.

Writes sessions of CHANNELS x SEGMENTS (tiny data: the cost is one stat per
file, not data size) and times ``recording_signature`` (warm dentry cache, the
usual case on a server that re-checks every REFRESH_INTERVAL_S) and the
``tail_marks`` fingerprint taken at open. Prints a JSON line per session.

    python scripts/refresh_cost.py 64x1 256x1 256x10 1024x2
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mef3io_server.server.fingerprints import recording_signature, tail_marks

T0 = 1_600_000_000_000_000


def write(path: Path, channels: int, segments: int) -> None:
    import mef3io

    x = np.arange(256 * 20, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for c in range(channels):
                for s in range(segments):
                    w.write(f"c{c:04d}", x, T0 + s * 60_000_000, fs=256.0, precision=0,
                            new_segment=s > 0)


def timed(fn, repeat=5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv) -> int:
    specs = argv or ["64x1", "256x1", "256x10", "1024x2"]
    with tempfile.TemporaryDirectory(prefix="refresh-") as tmp:
        for spec in specs:
            ch, seg = map(int, spec.split("x"))
            path = Path(tmp) / f"s{ch}x{seg}.mefd"
            write(path, ch, seg)
            sig = recording_signature(str(path))
            t_sig = timed(lambda: recording_signature(str(path)))
            t_marks = timed(lambda: tail_marks(str(path), sig))
            print(json.dumps({"channels": ch, "segments": seg, "files": len(sig),
                              "signature_ms": round(t_sig * 1e3, 2),
                              "tail_marks_ms": round(t_marks * 1e3, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
