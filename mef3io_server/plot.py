"""A picture of a recording's window (``mef3io-server plot``): stacked channels on a time axis.

Each channel is drawn in its own row, centred on its median. By default every
row has one amplitude scale: the typical 1st..99th percentile range of the
channels (their median, so one odd channel does not flatten the rest) fills
0.9 of a row, and a scale bar at the right says how many units (e.g. 100 uV)
a stretch of that height is. ``common_scale=False`` (``--scale channel``)
scales each channel to its own range and gives each row its own bar;
channels in different units always get their own. The time axis is local time
(or UTC) with a second axis on top in uUTC. Gaps (from ``GetSegments``) are
shaded grey in the row of their channel. Annotations (from ``GetRecords``) are
red lines, spans when they have a duration, across every row for session
records or in their channel's row; their text is written horizontally in a
band above the traces, on up to three levels so neighbours do not overlap.
Needs the ``plot`` extra (matplotlib); drawn with the Agg backend.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

_US_PER_DAY = 86_400_000_000
#: At most this many annotation labels are written (lines are always drawn).
MAX_LABELS = 40
#: Levels of the annotation label band above the traces.
LABEL_LEVELS = 3
#: Fraction of a row the typical channel's 1st..99th percentile range fills.
ROW_FILL = 0.9


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


def _centre_and_span(v: np.ndarray) -> tuple[float, float]:
    """(median, 1st..99th percentile range) of the finite values; (0, 0) when none."""
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, mid, hi = np.percentile(finite, [1, 50, 99])
    span = float(hi - lo) or float(finite.max() - finite.min())
    return float(mid), span


def nice_step(x: float) -> float:
    """The 1, 2 or 5 times a power of ten nearest below-or-at ``x`` (> 0)."""
    if not x > 0 or not math.isfinite(x):
        return 1.0
    e = math.floor(math.log10(x))
    for m in (5, 2, 1):
        if m * 10 ** e <= x:
            return m * 10 ** e
    return 10 ** e


def _label(value: float, units: str) -> str:
    return f"{value:g} {units}".strip()


def row_scales(traces: Sequence[Trace], common: bool = True) -> list[float]:
    """Units per row height of each trace: one for all channels of one unit when
    ``common``, else each channel's own (a flat or empty channel gets 1)."""
    spans = [_centre_and_span(np.asarray(tr.values, dtype=np.float64))[1] for tr in traces]
    per_row = [s / ROW_FILL if s > 0 else 1.0 for s in spans]
    if not common:
        return per_row
    out = list(per_row)
    for units in {tr.units for tr in traces}:
        idx = [i for i, tr in enumerate(traces) if tr.units == units and spans[i] > 0]
        if idx:
            shared = float(np.median([spans[i] for i in idx])) / ROW_FILL
            for i in idx:
                out[i] = shared
    return out


def _label_levels(times: Sequence[float], texts: Sequence[str], x0: float, x1: float,
                  axes_width_in: float, fontsize: float) -> list[int]:
    """A band level (0 = highest) for each label, in time order, so that neighbours do not
    overlap; a label that fits nowhere gets the level free soonest."""
    char_frac = 0.6 * fontsize / 72 / max(axes_width_in, 1e-6)     # one character, axis fraction
    free_from = [-math.inf] * LABEL_LEVELS
    levels = []
    for t, text in zip(times, texts):
        pos = (t - x0) / (x1 - x0)
        level = next((k for k in range(LABEL_LEVELS) if free_from[k] <= pos),
                     int(np.argmin(free_from)))
        free_from[level] = pos + (len(text) + 2) * char_frac
        levels.append(level)
    return levels


def plot_traces(out, traces: Sequence[Trace], start_uutc: int, end_uutc: int,
                records: Sequence[dict] = (), title: str = "", local: bool = True,
                width_in: float = 14.0, common_scale: bool = True) -> Path:
    """Draw ``traces`` (top to bottom) over ``[start_uutc, end_uutc)`` into ``out``.

    The format follows the suffix (``.png``, ``.svg``, ``.pdf``). See the module
    docstring for the scales, gaps and annotations.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import matplotlib.transforms as mtransforms
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    tz = _dt.datetime.now().astimezone().tzinfo if local else _dt.timezone.utc
    n = len(traces)
    shown = [r for r in records if _visible(r, start_uutc, end_uutc)]
    band = 0.45 * LABEL_LEVELS if shown else 0.0
    fig, ax = plt.subplots(figsize=(width_in, 1.6 + 0.45 * max(n, 1) + 0.3 * bool(shown)))
    try:
        x0, x1 = _days(start_uutc), _days(end_uutc)
        scales = row_scales(traces, common_scale)
        units = {tr.units for tr in traces}
        common = common_scale and len(units) == 1
        rows = {}
        for i, (tr, scale) in enumerate(zip(traces, scales)):
            y0 = n - 1 - i
            rows[tr.name] = y0
            for g0, g1 in tr.gaps:
                a, b = max(_days(g0), x0), min(_days(g1), x1)
                if b > a:
                    ax.add_patch(Rectangle((a, y0 - 0.5), b - a, 1.0, color="0.85", zorder=0,
                                           linewidth=0))
            centre, _ = _centre_and_span(np.asarray(tr.values, dtype=np.float64))
            y = (np.asarray(tr.values, dtype=np.float64) - centre) / scale
            ax.plot(_days(tr.times_uutc), y0 + y, lw=0.6, color="C0", zorder=2)
        # Scale bars, right of the axes: one for all rows, or one per row.
        bar_tf = mtransforms.blended_transform_factory(ax.transAxes, ax.transData)
        bars = [(0, scales[-1], traces[-1].units)] if common and n else \
            [(n - 1 - i, s, tr.units) for i, (tr, s) in enumerate(zip(traces, scales))]
        for y0, scale, unit in bars:
            value = nice_step(0.6 * scale)
            h = value / scale
            ax.plot([1.008, 1.008], [y0 - h / 2, y0 + h / 2], transform=bar_tf, color="k",
                    lw=2, clip_on=False, solid_capstyle="butt")
            ax.text(1.013, y0, _label(value, unit), transform=bar_tf, va="center", ha="left",
                    fontsize=7)
        _draw_records(ax, shown, rows, x0, x1, n, fig.get_figwidth() * 0.8)
        ax.set_xlim(x0, x1)
        ax.set_ylim(-0.7, n - 0.3 + band)
        ax.set_yticks(range(n))
        ax.set_yticklabels([tr.name for tr in reversed(traces)])
        ax.set_ylabel("one amplitude scale for every channel (bar)" if common
                      else "each channel on its own amplitude scale (bars)", fontsize=8)
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


def _visible(rec: dict, start_uutc: int, end_uutc: int) -> bool:
    t = int(rec["time_uutc"])
    dur = int(rec.get("duration_us") or 0)
    return t < end_uutc and (t >= start_uutc or t + dur > start_uutc)


def _draw_records(ax, records: Sequence[dict], rows: dict, x0: float, x1: float, n: int,
                  axes_width_in: float) -> None:
    """Annotation lines (spans when they last), and their labels in the band above row 0."""
    from matplotlib.patches import Rectangle

    texts = [str(r.get("text") or r.get("type") or "")[:40] for r in records]
    times = [max(float(_days(r["time_uutc"])), x0) for r in records]
    levels = _label_levels(times, texts, x0, x1, axes_width_in, 7)
    for k, (rec, t, text, level) in enumerate(zip(records, times, texts, levels)):
        start = float(_days(rec["time_uutc"]))
        dur = int(rec.get("duration_us") or 0)
        end = min(float(_days(int(rec["time_uutc"]) + dur)), x1) if dur > 0 else None
        ch = rec.get("channel")
        if ch in rows:
            lo, hi = rows[ch] - 0.5, rows[ch] + 0.5
            if end is not None:
                ax.add_patch(Rectangle((t, lo), end - t, 1.0, color="C3", alpha=0.18,
                                       zorder=1, linewidth=0))
            if start >= x0:
                ax.plot([start, start], [lo, hi], color="C3", lw=0.9, zorder=3)
        else:
            if end is not None:
                ax.axvspan(t, end, color="C3", alpha=0.12, zorder=1, linewidth=0)
            if start >= x0:
                ax.axvline(start, color="C3", lw=0.9, ls="--", zorder=3)
        if k < MAX_LABELS and text:
            y = n - 0.35 + 0.45 * (LABEL_LEVELS - level) - 0.2
            ax.plot([t, t], [n - 0.5, y], color="C3", lw=0.5, zorder=3)
            ax.text(t, y, " " + text, rotation=0, ha="left", va="center", fontsize=7,
                    color="C3", zorder=4, clip_on=True)
