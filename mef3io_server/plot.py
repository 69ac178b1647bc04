"""A PNG of a recording's window (``mef3io-server plot``): stacked channels on a time axis.

Each channel is drawn in its own row (centred on its median, scaled to its
own 1st..99th percentile range), on a time axis in local time (or UTC) with a
second axis on top in uUTC. Gaps (from ``GetSegments``) are shaded grey in the
row of their channel; annotations (from ``GetRecords``) are vertical lines
with their text, across every row for session records or in their channel's
row. Needs the ``plot`` extra (matplotlib); drawn with the Agg backend.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

_US_PER_DAY = 86_400_000_000
#: At most this many annotation labels are written (lines are always drawn).
MAX_LABELS = 40


@dataclass
class Trace:
    """One channel's points: ``times_uutc`` (float64 uUTC) and ``values`` (its units)."""

    name: str
    times_uutc: np.ndarray
    values: np.ndarray
    units: str = ""
    gaps: list = field(default_factory=list)   # [(start_uutc, end_uutc), ...]


def _days(uutc):
    """matplotlib date numbers (days since 1970-01-01 UTC) of uUTC times."""
    return np.asarray(uutc, dtype=np.float64) / _US_PER_DAY


def _normalise(v: np.ndarray) -> np.ndarray:
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.full_like(v, np.nan, dtype=np.float64)
    lo, mid, hi = np.percentile(finite, [1, 50, 99])
    span = hi - lo
    if span <= 0:
        span = (finite.max() - finite.min()) or 1.0
    return (v.astype(np.float64) - mid) / span * 0.9


def plot_traces(out, traces: Sequence[Trace], start_uutc: int, end_uutc: int,
                records: Sequence[dict] = (), title: str = "", local: bool = True,
                width_in: float = 14.0) -> Path:
    """Draw ``traces`` (top to bottom) over ``[start_uutc, end_uutc)`` into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    tz = _dt.datetime.now().astimezone().tzinfo if local else _dt.timezone.utc
    n = len(traces)
    fig, ax = plt.subplots(figsize=(width_in, 1.5 + 0.45 * max(n, 1)))
    try:
        x0, x1 = _days(start_uutc), _days(end_uutc)
        rows = {}
        for i, tr in enumerate(traces):
            y0 = n - 1 - i
            rows[tr.name] = y0
            for g0, g1 in tr.gaps:
                a, b = max(_days(g0), x0), min(_days(g1), x1)
                if b > a:
                    ax.add_patch(Rectangle((a, y0 - 0.5), b - a, 1.0, color="0.85", zorder=0,
                                           linewidth=0))
            ax.plot(_days(tr.times_uutc), y0 + _normalise(tr.values), lw=0.6, color="C0",
                    zorder=2)
        for k, rec in enumerate(records):
            t = _days(rec["time_uutc"])
            if not x0 <= t < x1:
                continue
            ch = rec.get("channel")
            if ch in rows:
                ax.plot([t, t], [rows[ch] - 0.5, rows[ch] + 0.5], color="C3", lw=0.9, zorder=3)
            else:
                ax.axvline(t, color="C3", lw=0.9, ls="--", zorder=3)
            if k < MAX_LABELS:
                text = str(rec.get("text") or rec.get("type") or "")
                ax.annotate(text[:40], (t, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -4), textcoords="offset points", rotation=90,
                            va="top", fontsize=7, color="C3")
        ax.set_xlim(x0, x1)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_yticks(range(n))
        ax.set_yticklabels([tr.name for tr in reversed(traces)])
        locator = mdates.AutoDateLocator(tz=tz)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
        zone = _dt.datetime.now(tz).strftime("%Z") or str(tz)
        ax.set_xlabel(f"{'local time' if local else 'UTC'} ({zone})")
        top = ax.secondary_xaxis("top", functions=(lambda d: d * _US_PER_DAY,
                                                   lambda u: u / _US_PER_DAY))
        top.xaxis.set_major_locator(MaxNLocator(4))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f}"))
        top.set_xlabel("uUTC")
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out, dpi=100)
        return out
    finally:
        plt.close(fig)
