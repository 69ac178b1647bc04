"""The viewer benchmark's recording: 64 channels x 24 h at 256 Hz, EEG-like, one gap.

Written once with mef3io.Writer (several minutes, ~2 GB) into
``$MEF3IO_BENCH_DIR`` (default ``benchmarks/.data``), reused while its
``.complete`` marker is there.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

START_UUTC = 1_704_067_200_000_000      # 2024-01-01T00:00:00Z
FS = 256.0
HOURS = 24
CHANNELS = 64


def bench_dir() -> Path:
    return Path(os.environ.get("MEF3IO_BENCH_DIR")
                or Path(__file__).resolve().parent / ".data")


def day_recording(channels: int = CHANNELS, hours: int = HOURS) -> Path:
    import mef3io

    path = bench_dir() / f"day_{channels}ch_{hours}h.mefd"
    done = path.with_name(path.name + ".complete")
    if done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(hours * 3600 * FS)
    rng = np.random.default_rng(1)
    # One hour of 1/f-ish background and alpha, reused per channel at shifted offsets
    # (cheap to make; the decoder does not care).
    hour = int(3600 * FS)
    t = np.arange(hour) / FS
    base = np.cumsum(rng.standard_normal(hour))
    base -= np.convolve(base, np.ones(512) / 512, mode="same")
    base = base * 6 + 20 * np.sin(2 * np.pi * 10 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * t / 50))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for c in range(channels):
                x = np.resize(np.roll(base, 977 * c), n) * (0.7 + 0.01 * c)
                g = int(12 * 3600 * FS)
                x[g:g + int(60 * FS)] = np.nan          # one minute of gap at noon
                w.write(f"Ch{c + 1}", x, START_UUTC, fs=FS, precision=2)
    done.write_text("ok\n")
    return path


if __name__ == "__main__":
    print(day_recording())
