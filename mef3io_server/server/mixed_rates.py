"""Reads of channels at different rates in one request: a ragged answer.

A read with ``mixed_rates`` set groups the channels asked by the rate each is
served at (its own, or the session's ``cache_fs`` when lower) and serves each
group as an ordinary read of those channels: each channel at its own rate,
every group starting at the window's start, with its own rate and sample
count. The wire marks each chunk with its group and the positions of its
channels in the order asked (``SignalChunk.group``, ``channel_index``).

With ``n_points`` every group holding more than ``n_points`` samples comes
back on the same grid: ``n_points`` buckets evenly over ``[t0, t1)``, so a
viewer draws all channels together. A group with ``n_points`` samples or
fewer comes back unchanged at its own rate (never upsampled), as any
``n_points`` read; its rate says so.

Filters (without a montage) apply per group at each group's rate. A montage
combines channels of one rate only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import BadRequest, UnknownChannel


def rate_groups(rates: Sequence[float]) -> list[tuple[float, list[int]]]:
    """Indices of ``rates`` grouped by equal rate, groups in order of their first index."""
    groups: dict[float, list[int]] = {}
    for i, r in enumerate(rates):
        groups.setdefault(float(r), []).append(i)
    return list(groups.items())


def describe_rates(names: Sequence[str], rates: Sequence[float]) -> str:
    """``"256 Hz: Fp1, F3; 512 Hz: ECG"`` (at most five names per rate), for messages."""
    return "; ".join(f"{r:g} Hz: " + ", ".join(names[i] for i in idx[:5])
                     + (" ..." if len(idx) > 5 else "") for r, idx in rate_groups(rates))


@dataclass
class RateGroup:
    """One group of a mixed-rate read: positions of its channels in the order asked, and
    its read (an :class:`.engine.SignalRead`)."""

    index: list[int]
    read: object


def read_mixed(engine, client_id, client_path: str, channel_names: Sequence[str], t0: int,
               t1: int, n_points: Optional[int] = None, dtype: str = "float32",
               derived=None, cancel=None) -> list[RateGroup]:
    """The groups of a mixed-rate read, each validated and ready to stream (see the module
    docstring). Uses only the engine's public ``file_info`` and ``read_signal``."""
    if derived is not None and derived.montage is not None:
        raise BadRequest("a montage combines channels of one rate; mixed_rates applies to "
                         "recorded channels (with or without filters)")
    info = engine.file_info(client_id, client_path)
    served = dict(zip(info.channel_names, info.served_rates))
    names = list(channel_names) or list(info.channel_names)
    missing = [n for n in names if n not in served]
    if missing:
        raise UnknownChannel(f"unknown channel(s) {', '.join(missing[:10])} in {client_path}")
    groups = []
    for _, idx in rate_groups([served[n] for n in names]):
        read = engine.read_signal(client_id, client_path, [names[i] for i in idx], t0, t1,
                                  n_points, dtype=dtype, derived=derived, cancel=cancel)
        groups.append(RateGroup(idx, read))
    return groups
