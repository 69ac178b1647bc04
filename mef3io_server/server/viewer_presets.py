"""The montages and filters the web viewer offers by name, built as :class:`.derived_reads.DerivedSpec`.

The page (``GET /api/signal?...&montage=&filter=``) names one of each; this
module turns the names and the read's channels into the same
:class:`~.derived_reads.DerivedSpec` a gRPC client's montage and filters
become (:func:`.montage.parse_montage`, :func:`.filtering.parse_filters`), so
the HTTP side computes nothing of its own. The empty name is none.

Montages, over the channels of the read (in the order asked):

* ``average`` -- each channel minus the average of the read's channels
  (named ``"Fp1-avg"``); the average is over the channels with a sample there;
* ``bipolar`` -- the longitudinal bipolar ("double banana") chains, left
  temporal, right temporal, left parasagittal, right parasagittal, midline,
  each pair of neighbouring electrodes of a chain present in the read
  (``"Fp1-F7"``, ..., names matched without case, ``T7/T8/P7/P8`` as
  ``T3/T4/T5/T6``); when no such pair is present, each channel minus the next
  one in the order asked.

Filters (zero-phase, :mod:`.filtering`): ``0.5-70Hz`` band-pass (Butterworth,
order 2), and the same with a 50 Hz or 60 Hz notch (mains).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

from .derived_reads import DerivedSpec
from .errors import BadRequest
from .filtering import parse_filters
from .montage import parse_montage

#: name -> label shown by the page.
MONTAGES = {"average": "average reference", "bipolar": "bipolar (longitudinal)"}
_BAND = ("bandpass", (0.5, 70.0), None, None)
#: name -> (label, filters as parse_filters items).
FILTERS = {
    "0.5-70Hz": ("0.5-70 Hz", (_BAND,)),
    "0.5-70Hz-notch50": ("0.5-70 Hz + 50 Hz notch", (_BAND, ("notch", (50.0,), None, None))),
    "0.5-70Hz-notch60": ("0.5-70 Hz + 60 Hz notch", (_BAND, ("notch", (60.0,), None, None))),
}
#: The longitudinal bipolar chains of the 10-20 system, front to back.
CHAINS = (("FP1", "F7", "T3", "T5", "O1"), ("FP2", "F8", "T4", "T6", "O2"),
          ("FP1", "F3", "C3", "P3", "O1"), ("FP2", "F4", "C4", "P4", "O2"),
          ("FZ", "CZ", "PZ"))
#: Newer 10-10 names of the same electrodes.
ALIASES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}


def offers() -> dict:
    """What ``GET /api/server`` lists: ``{"montages": [...], "filters": [...]}`` of
    ``{"name", "label"}``."""
    return {"montages": [{"name": n, "label": label} for n, label in MONTAGES.items()],
            "filters": [{"name": n, "label": label} for n, (label, _) in FILTERS.items()]}


def derived_spec(montage: str, filter_name: str, channels: Sequence[str],
                 max_channels: Optional[int] = None) -> Optional[DerivedSpec]:
    """The :class:`DerivedSpec` of a montage and a filter named by the page over
    ``channels`` (None when both are empty). Raises :class:`BadRequest` naming an
    unknown name, or a bipolar montage of fewer than two channels."""
    if not montage and not filter_name:
        return None
    return _spec(montage, filter_name, tuple(channels), max_channels)


@lru_cache(maxsize=256)
def _spec(montage: str, filter_name: str, channels: tuple[str, ...],
          max_channels: Optional[int]) -> DerivedSpec:
    if montage and montage not in MONTAGES:
        raise BadRequest(f"unknown montage {montage[:40]!r}; this server offers "
                         f"{', '.join(MONTAGES)} (or none)")
    if filter_name and filter_name not in FILTERS:
        raise BadRequest(f"unknown filter {filter_name[:40]!r}; this server offers "
                         f"{', '.join(FILTERS)} (or none)")
    filters = parse_filters(FILTERS[filter_name][1]) if filter_name else ()
    if not montage:
        return DerivedSpec(None, filters)
    if montage == "average":
        items = [(f"{c}-avg", [c], [1.0], channels) for c in channels]
    else:
        items = [(f"{a}-{b}", [a, b], [1.0, -1.0], ()) for a, b in bipolar_pairs(channels)]
        if not items:
            raise BadRequest("a bipolar montage needs at least two channels")
    return DerivedSpec(parse_montage(items, max_channels), filters)


def bipolar_pairs(channels: Sequence[str]) -> list[tuple[str, str]]:
    """The longitudinal bipolar pairs among ``channels`` (see the module docstring)."""
    by_name = {}
    for c in channels:
        key = c.strip().upper()
        by_name.setdefault(ALIASES.get(key, key), c)
    pairs = []
    for chain in CHAINS:
        for a, b in zip(chain, chain[1:]):
            if a in by_name and b in by_name:
                pairs.append((by_name[a], by_name[b]))
    if pairs:
        return pairs
    return list(zip(channels, channels[1:]))
