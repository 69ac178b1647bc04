"""The built-in demo recording, written with ``mef3io.Writer``.

16 channels (``Ch1`` .. ``Ch16``), 1 hour at 256 Hz, EEG-like (a 10 Hz alpha
rhythm waxing and waning, 1/f background, a few sharp spikes), in microvolts,
with a 30-second gap 20 minutes in. Deterministic (seeded), written once and
reused: a finished recording is marked by a ``.complete`` file beside it.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

DEMO_START_UUTC = 1_704_067_200_000_000   # 2024-01-01T00:00:00Z
DEMO_FS = 256.0
DEMO_CHANNELS = 16
DEMO_SECONDS = 3600
DEMO_GAP = (1200, 1230)   # seconds from the start


def default_demo_dir() -> Path:
    env = os.environ.get("DEMO_DIR", "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mef3io-server"


def demo_path() -> Path:
    """Where the demo recording is (or will be) written: ``$DEMO_DIR/demo.mefd``
    (default ``~/.cache/mef3io-server/demo.mefd``). The examples in the docs read it."""
    return default_demo_dir() / "demo.mefd"


def demo_ready(path: Optional[os.PathLike] = None) -> bool:
    """True when the demo recording at ``path`` (default :func:`demo_path`) is written."""
    path = Path(path) if path is not None else demo_path()
    return path.exists() and path.with_name(path.name + ".complete").exists()


def _signal(rng: np.random.Generator, n: int, fs: float, ch: int) -> np.ndarray:
    t = np.arange(n) / fs
    # 1/f-ish background: integrated noise, high-passed by a leak.
    white = rng.standard_normal(n)
    pink = np.empty(n)
    acc = 0.0
    alpha = 0.995
    # vectorised leaky integration via lfilter-free cumulative trick per block
    step = 65536
    for i in range(0, n, step):
        seg = white[i:i + step]
        k = np.arange(seg.size)
        w = alpha ** k
        c = np.cumsum(seg / np.maximum(w, 1e-300)) * w
        c += acc * alpha ** (k + 1)
        pink[i:i + step] = c
        acc = c[-1]
    pink *= 4.0
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * t / (47 + 3 * ch))
    alpha_wave = 25.0 * envelope * np.sin(2 * np.pi * (9.5 + 0.1 * ch) * t + ch)
    x = pink + alpha_wave
    # Sharp spikes: a few per minute, bigger on some channels.
    n_spikes = int(n / fs / 20)
    for pos in rng.integers(0, n - 32, size=n_spikes):
        x[pos:pos + 8] += (150.0 + 20 * (ch % 4)) * np.hanning(8)
    return x


def write_demo(path: Optional[os.PathLike] = None, *, channels: int = DEMO_CHANNELS,
               seconds: int = DEMO_SECONDS, fs: float = DEMO_FS, overwrite: bool = False) -> Path:
    """Write (or reuse) the demo recording; returns its ``.mefd`` path."""
    import mef3io

    path = Path(path) if path is not None else demo_path()
    done = path.with_name(path.name + ".complete")
    if demo_ready(path) and not overwrite:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.rmtree(path)
    if done.exists():
        done.unlink()
    n = int(seconds * fs)
    g0, g1 = (int(s * fs) for s in DEMO_GAP)
    rng = np.random.default_rng(20240101)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for c in range(channels):
                x = _signal(rng, n, fs, c)
                if g1 <= n:
                    x[g0:g1] = np.nan
                w.write(f"Ch{c + 1}", x, DEMO_START_UUTC, fs=fs, precision=2)
    done.write_text("ok\n")
    return path
