"""Montages: derived channels as linear combinations of recorded channels.

A derived channel is ``sum_i w_i * x_i - mean(average_of)``: weights over
recorded channels, optionally minus the average of a set of recorded channels
(the common average reference). It is computed on native samples, before any
filter or reduction (see :mod:`.derived_reads`).

Gap (NaN) rules, per sample:

* the weighted sum is NaN where any input with a non-zero weight is NaN
  (a bipolar ``Fp1-F3`` has a sample only where both have one);
* the average of ``average_of`` is the mean of the inputs that have a sample
  there (a channel in a gap, or before its first sample, is left out of the
  average rather than blanking every derived channel), and NaN only where none
  of them has one. So ``Fp1 - avg`` is NaN exactly where ``Fp1`` is NaN or
  every channel of the average is.

Pure functions and frozen values, no I/O: the server parses the wire's
``DerivedChannel`` messages into a :class:`Montage` and applies it to the
rows of a read.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import BadRequest

#: Most recorded inputs one derived channel may combine.
MAX_INPUTS = 4096


@dataclass(frozen=True)
class DerivedChannel:
    """``sum(w * x for name, w in weights) - mean(average_of)``; names are recorded channels."""

    name: str
    weights: tuple[tuple[str, float], ...]
    average_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Montage:
    """Derived channels, in the order they are served."""

    channels: tuple[DerivedChannel, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.channels]

    @cached_property
    def inputs(self) -> tuple[str, ...]:
        """The recorded channels it reads, each once, in order of first use."""
        seen: dict[str, None] = {}
        for d in self.channels:
            for name, _ in d.weights:
                seen.setdefault(name, None)
            for name in d.average_of:
                seen.setdefault(name, None)
        return tuple(seen)

    @cached_property
    def signature(self) -> tuple:
        """A hashable value saying exactly what the montage computes (for cache keys)."""
        return tuple((d.name, d.weights, d.average_of) for d in self.channels)


def parse_montage(items: Iterable[tuple[str, Sequence[str], Sequence[float], Sequence[str]]],
                  max_channels: Optional[int] = None) -> Montage:
    """A :class:`Montage` from ``(name, inputs, weights, average_of)`` per derived channel.

    Raises :class:`BadRequest` naming the derived channel when: its name is
    empty or repeated; inputs and weights differ in number; a weight is not
    finite; it has neither a non-zero weight nor an average; an input is named
    twice (give one weight). Zero weights are dropped. ``max_channels``:
    most derived channels (``MAX_CHANNELS_PER_READ``).
    """
    out: list[DerivedChannel] = []
    names: set[str] = set()
    for name, inputs, weights, average_of in items:
        name = str(name)
        label = f"derived channel {name!r}" if name else f"derived channel #{len(out) + 1}"
        if not name:
            raise BadRequest(f"{label} has no name")
        if name in names:
            raise BadRequest(f"{label} is named twice in the montage")
        names.add(name)
        inputs, weights, average_of = list(inputs), list(weights), list(average_of)
        if len(inputs) != len(weights):
            raise BadRequest(f"{label} has {len(inputs)} inputs but {len(weights)} weights; "
                             "give one weight per input")
        if len(inputs) > MAX_INPUTS or len(average_of) > MAX_INPUTS:
            raise BadRequest(f"{label} combines more than {MAX_INPUTS} channels")
        if len(set(inputs)) != len(inputs):
            dup = sorted({i for i in inputs if inputs.count(i) > 1})
            raise BadRequest(f"{label} names {', '.join(dup)} more than once; give each input "
                             "one weight")
        if len(set(average_of)) != len(average_of):
            raise BadRequest(f"{label} names a channel of its average more than once")
        pairs = []
        for i, w in zip(inputs, weights):
            w = float(w)
            if not math.isfinite(w):
                raise BadRequest(f"{label}: the weight of {i!r} is {w}, not a finite number")
            if not i:
                raise BadRequest(f"{label} has an input with an empty name")
            if w != 0.0:
                pairs.append((str(i), w))
        if not pairs and not average_of:
            raise BadRequest(f"{label} has no input with a non-zero weight and no average")
        out.append(DerivedChannel(name, tuple(pairs), tuple(str(a) for a in average_of)))
    if not out:
        raise BadRequest("the montage has no derived channel")
    if max_channels is not None and len(out) > max_channels:
        raise BadRequest(f"{len(out)} derived channels in one read; the limit is {max_channels} "
                         "(MAX_CHANNELS_PER_READ)")
    return Montage(tuple(out))


def apply_montage(montage: Montage, inputs: Sequence[str], x: np.ndarray,
                  rows: Optional[range] = None,
                  averages: Optional[dict[tuple[str, ...], np.ndarray]] = None) -> np.ndarray:
    """The derived rows ``(len(rows), n)`` float64 from recorded rows ``x``.

    ``x``: ``(len(inputs), n)``, row ``i`` the samples of recorded channel
    ``inputs[i]`` (NaN in gaps). ``rows``: which derived channels (default all),
    so a caller can work in blocks; ``averages``: a dict the averages of
    ``average_of`` sets are kept in between blocks of the same ``x``. See the
    module docstring for the NaN rules.
    """
    row = {name: i for i, name in enumerate(inputs)}
    x = np.asarray(x)
    n = x.shape[1]
    rows = range(len(montage.channels)) if rows is None else rows
    out = np.empty((len(rows), n), dtype=np.float64)
    averages = {} if averages is None else averages
    for k, d in enumerate(montage.channels[r] for r in rows):
        acc = out[k]
        if not d.weights:
            acc.fill(0.0)
        for i, (name, w) in enumerate(d.weights):
            src = x[row[name]]
            if i == 0:                  # the first term sets the row: no zeroing pass
                np.multiply(src, w, out=acc, dtype=np.float64)
            elif w == 1.0:
                acc += src
            elif w == -1.0:
                acc -= src
            else:
                acc += w * src.astype(np.float64)
        if d.average_of:
            avg = averages.get(d.average_of)
            if avg is None:
                avg = averages[d.average_of] = _mean_of_available(
                    x[[row[a] for a in d.average_of]])
            acc -= avg
    return out


def _mean_of_available(rows: np.ndarray) -> np.ndarray:
    """Per sample, the mean of the rows with a finite value there; NaN where none has one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN columns: NaN, said above
        return np.nanmean(rows.astype(np.float64, copy=False), axis=0)
