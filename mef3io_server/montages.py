"""Montages and filters for reads: what a clinical viewer shows instead of raw channels.

Give them to ``get_signal_range(..., montage=..., filters=...)`` of
:class:`mef3io_server.client.Mef3Client` or
:class:`mef3io_server.aio.AsyncMef3Client`; the server computes them on native
samples before any reduction (``cache_fs``, ``n_points``), so an overview of
a bipolar, filtered montage is the reduction of that signal, not a difference
of reductions (docs/viewer.md)::

    from mef3io_server.montages import bipolar, average_reference, bandpass, notch

    m = bipolar([("Fp1", "F3"), ("F3", "C3")])             # "Fp1-F3", "F3-C3"
    res = client.get_signal_range(path, None, t0, t1, montage=m,
                                  filters=[bandpass(0.5, 70), notch(50)])

A montage is a list of :class:`Derived` channels: lists join with ``+``.
Gaps: a derived sample is NaN where an input with a non-zero weight is NaN;
an average (``average_reference``) is the mean of the channels that have a
sample there, NaN only where none has. Filters are zero-phase (SciPy's
``sosfiltfilt``), a gap restarts them, and consecutive pages join without a
step (the server reads the padding they need).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, Union


@dataclass(frozen=True)
class Derived:
    """One derived channel: ``sum(w * channel for channel, w in weights) - mean(average_of)``."""

    name: str
    weights: Mapping[str, float] = field(default_factory=dict)
    average_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filter:
    """One zero-phase filter: ``kind`` in highpass, lowpass, bandpass, bandstop, notch;
    ``hz`` its cut-off(s) in Hz; ``order`` (Butterworth, default 2); ``q`` (notch, default 30)."""

    kind: str
    hz: tuple[float, ...]
    order: Optional[int] = None
    q: Optional[float] = None


def bipolar(pairs: Iterable[Union[tuple[str, str], str]]) -> list[Derived]:
    """``a - b`` for each pair, named ``"a-b"``; a pair may be given as ``"Fp1-F3"`` text
    (split at the first ``-``, so channel names holding ``-`` need the tuple form)."""
    out = []
    for p in pairs:
        a, b = p.split("-", 1) if isinstance(p, str) else p
        out.append(Derived(f"{a}-{b}", {a: 1.0, b: -1.0}))
    return out


def average_reference(channels: Sequence[str], *, over: Optional[Sequence[str]] = None,
                      suffix: str = "-avg") -> list[Derived]:
    """Each channel minus the average of ``over`` (default: ``channels``) at each sample,
    named ``channel + suffix``; the average is over the channels with a sample there."""
    over = tuple(channels if over is None else over)
    return [Derived(f"{c}{suffix}", {c: 1.0}, over) for c in channels]


def reference(channels: Sequence[str], ref: str) -> list[Derived]:
    """Each channel minus the reference channel ``ref``, named ``"channel-ref"``."""
    return [Derived(f"{c}-{ref}", {c: 1.0, ref: -1.0}) for c in channels if c != ref]


def from_weights(weights: Mapping[str, Mapping[str, float]]) -> list[Derived]:
    """Derived channels from ``{name: {recorded channel: weight}}``."""
    return [Derived(name, dict(w)) for name, w in weights.items()]


def highpass(hz: float, order: Optional[int] = None) -> Filter:
    return Filter("highpass", (float(hz),), order)


def lowpass(hz: float, order: Optional[int] = None) -> Filter:
    return Filter("lowpass", (float(hz),), order)


def bandpass(low_hz: float, high_hz: float, order: Optional[int] = None) -> Filter:
    return Filter("bandpass", (float(low_hz), float(high_hz)), order)


def bandstop(low_hz: float, high_hz: float, order: Optional[int] = None) -> Filter:
    return Filter("bandstop", (float(low_hz), float(high_hz)), order)


def notch(hz: float, q: Optional[float] = None) -> Filter:
    """A notch at ``hz`` (50 or 60 for mains) of quality ``q`` (width ``hz / q`` at -3 dB)."""
    return Filter("notch", (float(hz),), None, q)


def as_montage(montage) -> list[Derived]:
    """``montage`` as a list of :class:`Derived`: given as such, one :class:`Derived`, or
    ``{name: {recorded channel: weight}}``."""
    if isinstance(montage, Mapping):
        return from_weights(montage)
    return _listed(montage, Derived, "a montage is a list of Derived channels (see "
                                     "mef3io_server.montages)")


def as_filters(filters) -> list[Filter]:
    """``filters`` as a list of :class:`Filter` (one :class:`Filter` is a list of one)."""
    return _listed(filters, Filter, "filters are Filter values (see mef3io_server.montages: "
                                    "bandpass(0.5, 70), notch(50), ...)")


def _listed(value, kind: type, what: str) -> list:
    if isinstance(value, kind):
        return [value]
    out = list(value)
    for v in out:
        if not isinstance(v, kind):
            raise TypeError(f"{what}, not {type(v).__name__}")
    return out
