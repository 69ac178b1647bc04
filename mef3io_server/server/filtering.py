"""Zero-phase filters that join without seams, designed and run by SciPy's ``signal``.

Kinds (cut-offs in Hz):

* ``highpass`` / ``lowpass`` (one cut-off), ``bandpass`` / ``bandstop`` (low, high):
  Butterworth (``scipy.signal.butter``) of ``order`` (default 2), as
  second-order sections;
* ``notch`` (one centre frequency): ``scipy.signal.iirnotch`` with quality
  ``q`` (default 30: a 50 Hz notch is 1.7 Hz wide at -3 dB).

Several filters make one cascade, run forwards and backwards
(``scipy.signal.sosfiltfilt``): zero phase, the magnitude response squared.

**What a served window is.** Each contiguous run of samples (between gaps, a
gap being a NaN) is filtered as a whole, as ``sosfiltfilt(sos, run)`` with
SciPy's defaults would filter it (odd extension at the run's ends): a gap
restarts the filter, no ringing crosses it. A window shows its part of that.
The server does not read whole runs: it reads :func:`padding_samples` more
samples on each side of the window, where the cascade's impulse response has
decayed below :data:`TAIL_FRACTION` of its total, and filters that. Where the
padded span reaches a run's true end, the result is exactly the whole-run
filter's; elsewhere it differs from it by at most :data:`TOLERANCE` of the
signal's largest magnitude in the padded span (tested: tests/server/
test_filtering.py and end to end). So consecutive pages join without a step,
and an overview reduced from filtered chunks has the shape of the pages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import BadRequest


def _scipy_signal():
    """``scipy.signal``, imported when the first filter is designed or run, or
    before by :func:`preload` (benchmarks/decisions.md)."""
    from scipy import signal
    return signal


def preload() -> None:
    """Import ``scipy.signal`` now (1.2 s of CPU here), when the server starts
    (``PRELOAD_FILTERS``), so the first filtered read of a fresh server does not
    wait for it. (On a thread beside the first reads it took their CPU: a plain
    cold page 82 -> 280 ms; niced, the first filtered read waited for it:
    benchmarks/decisions.md.)"""
    _scipy_signal()


KINDS = ("highpass", "lowpass", "bandpass", "bandstop", "notch")
DEFAULT_ORDER = 2
DEFAULT_Q = 30.0
MAX_ORDER = 8
MAX_FILTERS = 8
#: The padding leaves out at most this fraction of the cascade's impulse response (l1).
TAIL_FRACTION = 1e-4
#: A served window differs from the same filter over the whole run by at most this
#: fraction of the largest |sample| of its padded span.
TOLERANCE = 1e-3
#: Longest padding (seconds per side) a read may need: lower cut-offs are refused.
MAX_PADDING_S = 300.0


@dataclass(frozen=True)
class FilterSpec:
    """One filter: ``kind`` (see :data:`KINDS`), cut-offs ``hz``, Butterworth ``order``,
    notch quality ``q``."""

    kind: str
    hz: tuple[float, ...]
    order: int = DEFAULT_ORDER
    q: float = DEFAULT_Q

    def describe(self) -> str:
        hz = "-".join(f"{h:g}" for h in self.hz)
        return f"{self.kind} {hz} Hz"


def parse_filters(items: Iterable[tuple[str, Sequence[float], Optional[int], Optional[float]]]
                  ) -> tuple[FilterSpec, ...]:
    """Validated :class:`FilterSpec` from ``(kind, hz, order or None, q or None)``.

    Checks what does not depend on the rate (kinds, number of cut-offs, their
    order, ``order`` and ``q`` ranges); :func:`design` checks the cut-offs
    against each channel's Nyquist rate. Raises :class:`BadRequest`.
    """
    out = []
    for kind, hz, order, q in items:
        kind = str(kind).lower()
        label = f"filter #{len(out) + 1} ({kind or 'no kind'})"
        if kind not in KINDS:
            raise BadRequest(f"{label}: the kind must be one of {', '.join(KINDS)}")
        hz = tuple(float(h) for h in hz)
        want = 2 if kind in ("bandpass", "bandstop") else 1
        if len(hz) != want:
            raise BadRequest(f"{label} takes {want} frequenc{'ies' if want > 1 else 'y'} in Hz, "
                             f"not {len(hz)}")
        if not all(math.isfinite(h) and h > 0 for h in hz):
            raise BadRequest(f"{label}: frequencies must be positive and finite, not {hz}")
        if want == 2 and not hz[0] < hz[1]:
            raise BadRequest(f"{label}: the low edge {hz[0]:g} Hz must be below the high edge "
                             f"{hz[1]:g} Hz")
        order = DEFAULT_ORDER if order is None else int(order)
        if not 1 <= order <= MAX_ORDER:
            raise BadRequest(f"{label}: order must be 1 to {MAX_ORDER}, not {order}")
        q = DEFAULT_Q if q is None else float(q)
        if not (math.isfinite(q) and q > 0):
            raise BadRequest(f"{label}: q must be positive and finite, not {q}")
        out.append(FilterSpec(kind, hz, order if kind != "notch" else 0,
                              q if kind == "notch" else 0.0))
    if len(out) > MAX_FILTERS:
        raise BadRequest(f"{len(out)} filters in one read; at most {MAX_FILTERS}")
    return tuple(out)


@lru_cache(maxsize=256)
def design(specs: tuple[FilterSpec, ...], fs: float) -> np.ndarray:
    """The cascade of ``specs`` at ``fs`` Hz as second-order sections ``(n, 6)`` float64.

    Raises :class:`BadRequest` for a frequency at or above Nyquist (``fs / 2``).
    """
    nyq = fs / 2.0
    parts = []
    for s in specs:
        if max(s.hz) >= nyq:
            raise BadRequest(f"the {s.describe()} filter needs frequencies below the Nyquist "
                             f"rate ({nyq:g} Hz at {fs:g} Hz)")
        if s.kind == "notch":
            b, a = _scipy_signal().iirnotch(s.hz[0], s.q, fs=fs)
            parts.append(_scipy_signal().tf2sos(b, a))
        else:
            wn = s.hz[0] if len(s.hz) == 1 else list(s.hz)
            parts.append(_scipy_signal().butter(s.order, wn, btype=s.kind, output="sos", fs=fs))
    sos = np.concatenate(parts, axis=0) if parts else np.zeros((0, 6))
    return sos


@lru_cache(maxsize=256)
def padding_samples(specs: tuple[FilterSpec, ...], fs: float) -> int:
    """Samples to read on each side of a window so that it matches the whole-run filter
    (see the module docstring): where the cascade's impulse response has left
    only :data:`TAIL_FRACTION` of its l1 norm. Raises :class:`BadRequest` when that
    is over :data:`MAX_PADDING_S` (a cut-off too low for the rate)."""
    if not specs:
        return 0
    sos = design(specs, fs)
    limit = int(math.ceil(MAX_PADDING_S * fs))
    n = min(limit, max(1024, int(fs * 4)))
    while True:
        imp = np.zeros(n)
        imp[0] = 1.0
        h = np.abs(_scipy_signal().sosfilt(sos, imp))
        tail = np.cumsum(h[::-1])[::-1]            # tail[k] = sum(h[k:])
        total = tail[0]
        below = np.nonzero(tail <= TAIL_FRACTION * total)[0]
        # Certain only when the response has died out within n (its last part ~0).
        if below.size and h[-n // 8:].max() <= TAIL_FRACTION * total * 1e-3:
            return int(below[0])
        if n >= limit:
            names = ", ".join(s.describe() for s in specs)
            raise BadRequest(f"the filters {names} ring for more than {MAX_PADDING_S:g} s at "
                             f"{fs:g} Hz; use a higher cut-off or a lower order")
        n = min(limit, n * 4)


def filter_runs(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` (rows, n) filtered zero-phase, each contiguous run of finite samples of each
    row on its own (``sosfiltfilt`` with SciPy's default padding, shortened for runs
    too short for it); NaN stays NaN. Float64 out. Rows sharing the same gaps are
    filtered together."""
    x = np.asarray(x, dtype=np.float64)
    if sos.shape[0] == 0:
        return x.copy()
    finite = np.isfinite(x)
    if finite.all():
        return _scipy_signal().sosfiltfilt(sos, x, axis=-1, padlen=_padlen(sos, x.shape[1]))
    out = np.full(x.shape, np.nan)
    groups: dict[bytes, list[int]] = {}
    for r in range(x.shape[0]):
        groups.setdefault(np.packbits(finite[r]).tobytes(), []).append(r)
    for rows in groups.values():
        for a, b in runs_of(finite[rows[0]]):
            out[rows, a:b] = _scipy_signal().sosfiltfilt(sos, x[rows, a:b], axis=-1,
                                                padlen=_padlen(sos, b - a))
    return out


def _padlen(sos: np.ndarray, n: int) -> int:
    """SciPy's default ``padlen`` for ``sos``, or ``n - 1`` for shorter runs."""
    default = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    return max(0, min(default, n - 1))


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` of each run of True in a 1-D boolean ``mask``."""
    m = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def signature(specs: tuple[FilterSpec, ...]) -> tuple:
    """A hashable value saying exactly what the cascade computes (for cache keys)."""
    return tuple((s.kind, s.hz, s.order, s.q) for s in specs)
