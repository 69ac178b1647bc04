"""A channel's units conversion factor, recovered from what the server serves.

A MEF channel stores int32 counts and a factor (``units_conversion_factor``,
float64) that turns them into its units: ``value = count * factor``. The
protocol serves values (float32, ``float32(count * factor)`` exactly as
mef3io computes them) and counts (``dtype="int32"``), but not the factor
itself. MNE's ``cal`` and mef_tools' ``ufact`` are that factor, so the
adapters recover it from one window read both ways:

* every pair ``(count, value)`` with a count other than 0 bounds the factor
  to the few float64 numbers whose product rounds to that float32 value;
* the factor is the shortest decimal (fewest significant digits), near the
  middle of those bounds, for which ``float32(count * factor) == value``
  holds for every pair of the window.

Writers store factors such as ``0.001`` or ``1e-2`` (``10**-precision``),
which this recovers exactly. A factor that is no short decimal comes back
within float32 precision of the stored one (relative error below 2**-23).
No pair with a count other than 0 (a flat or empty window): unknown (None).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .server.decode import RAW_GAP


def infer_factor(counts: np.ndarray, values: np.ndarray) -> Optional[float]:
    """The units conversion factor of a channel from one window read as int32
    ``counts`` and as float32 ``values`` (same shape), or None when the window
    holds no count other than 0. See the module docstring."""
    counts = np.asarray(counts).ravel()
    values = np.asarray(values, dtype=np.float32).ravel()
    keep = (counts != RAW_GAP) & (counts != 0) & np.isfinite(values)
    if not keep.any():
        return None
    c = counts[keep].astype(np.float64)
    v = values[keep]
    # Each pair bounds the factor: count * factor lies within half a float32 step of value.
    half = np.spacing(np.abs(v)).astype(np.float64) / 2
    a = (v.astype(np.float64) - half) / c
    b = (v.astype(np.float64) + half) / c
    lo = float(np.max(np.minimum(a, b)))
    hi = float(np.min(np.maximum(a, b)))
    mid = (lo + hi) / 2 if lo <= hi else float(v[np.argmax(np.abs(c))]) / c[np.argmax(np.abs(c))]
    for digits in range(1, 18):
        candidate = float(f"{mid:.{digits}g}")
        if np.array_equal((c * candidate).astype(np.float32), v):
            return candidate
    return mid
