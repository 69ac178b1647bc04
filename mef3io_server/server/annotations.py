"""Annotations: the MEF records of a session, its channels and their segments.

MEF 3.0 keeps records (``Note``, ``Seiz``, ``SyLg``, ``EDFA``, ...) at three
levels: the session, each channel and each segment. :func:`read_annotations`
returns them as :class:`Annotation` objects in time order, read with
``mef3io.Reader.records`` (nothing of the signal is decoded).

Encryption: in an encrypted session the record bodies (their text) are level-2
encrypted. With the level-1 password ``Reader.records`` refuses the whole
call, so the records are then read with ``mef3io.inspect`` instead, which
reports each body it cannot open as locked: such an annotation has
``locked=True`` and ``text=None`` (and no body field), never undecrypted
bytes. Its time and type are still exact.

Times are uUTC. A window ``[t0, t1)`` keeps an annotation whose time falls in
it, or whose duration (EDFA) ``[time, time + duration)`` overlaps it.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

#: Keys of a mef3io record dict that are not body fields of its type.
HEADER_KEYS = ("type", "time", "level", "channel", "segment", "text", "duration",
               "version_major", "version_minor")
_LEVEL_ORDER = {"session": 0, "channel": 1, "segment": 2}


@dataclass(slots=True)
class Annotation:
    """One MEF record.

    ``channel`` is None at session level, ``segment`` None unless at segment
    level. ``locked`` means its body is encrypted beyond the access level of
    the password given: ``text``, ``duration_us`` and ``body`` are then empty.
    ``body`` holds the other body fields of its type (e.g. ``earliest_onset``
    of a ``Seiz``), times in uUTC.
    """

    time_uutc: int
    type: str
    text: Optional[str]
    channel: Optional[str]
    level: str
    segment: Optional[int]
    locked: bool = False
    duration_us: Optional[int] = None
    body: dict = field(default_factory=dict)

    def sort_key(self) -> tuple:
        return (self.time_uutc, _LEVEL_ORDER.get(self.level, 3), self.channel or "",
                -1 if self.segment is None else self.segment)

    def overlaps(self, t0: Optional[int], t1: Optional[int]) -> bool:
        """True when this annotation belongs to the half-open window ``[t0, t1)``."""
        if t1 is not None and self.time_uutc >= t1:
            return False
        if t0 is None:
            return True
        if self.duration_us and self.duration_us > 0:
            return self.time_uutc + self.duration_us > t0
        return self.time_uutc >= t0

    def body_json(self) -> str:
        """The body fields as JSON ("" when none; values JSON cannot hold as strings)."""
        if not self.body:
            return ""
        return json.dumps(self.body, default=_json_value, sort_keys=True)


def _json_value(v):
    if hasattr(v, "item"):          # numpy scalars
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def annotation_from_record(rec: dict, locked: bool = False) -> Annotation:
    """An :class:`Annotation` from one dict of ``mef3io.Reader.records``."""
    text = rec.get("text")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    duration = rec.get("duration")
    body = {} if locked else {k: v for k, v in rec.items()
                              if k not in HEADER_KEYS and v is not None}
    seg = rec.get("segment")
    return Annotation(
        time_uutc=int(rec["time"]), type=str(rec.get("type") or ""),
        text=None if locked else (None if text is None else str(text)),
        channel=rec.get("channel"), level=str(rec.get("level") or "session"),
        segment=None if seg is None else int(seg), locked=locked,
        duration_us=None if (locked or duration is None) else int(duration), body=body)


def _all_records(reader, path: str, password: str) -> list[Annotation]:
    """Every record of the session, bodies locked where the password does not reach."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if reader is not None:
            try:
                return [annotation_from_record(r) for r in reader.records(level="all")]
            except mef3io.PasswordError:
                pass    # some bodies are beyond this password: read them one by one
        summary = mef3io.inspect(path, password, include_values=True, strict=False)
    out = []
    for r in summary.records:
        if r.time is None:
            continue        # its time depends on an offset that cannot be read
        fields = dict(r.fields or {})
        fields.setdefault("type", r.type)
        fields.setdefault("level", r.level)
        fields.setdefault("channel", r.channel)
        fields.setdefault("segment", r.segment)
        fields["time"] = r.time
        out.append(annotation_from_record(fields, locked=bool(r.body_locked)))
    return out


class AnnotationIndex:
    """Every annotation of one session as one access level sees it, sorted, for selections.

    Reading records costs mef3io about 20 us each (2 s for a day of 100,000),
    so an open recording keeps its index and answers windows by bisection.
    """

    def __init__(self, annotations: Iterable[Annotation]):
        self.items = sorted(annotations, key=Annotation.sort_key)
        self.times = np.fromiter((a.time_uutc for a in self.items), np.int64, len(self.items))
        self.max_duration_us = max((a.duration_us or 0 for a in self.items), default=0)

    def __len__(self) -> int:
        return len(self.items)

    def select(self, channels: Optional[Iterable[str]] = None, t0: Optional[int] = None,
               t1: Optional[int] = None) -> list[Annotation]:
        """The annotations of ``channels`` (None: all) in ``[t0, t1)``, in time order.

        Session-level annotations are always included (see :func:`read_annotations`).
        """
        lo = 0 if t0 is None else int(np.searchsorted(self.times, t0 - self.max_duration_us))
        hi = len(self.items) if t1 is None else int(np.searchsorted(self.times, t1))
        wanted = None if channels is None else set(channels)
        return [a for a in self.items[lo:hi]
                if (wanted is None or a.channel is None or a.channel in wanted)
                and a.overlaps(t0, t1)]


def read_annotations(reader, path: str, password: str = "") -> AnnotationIndex:
    """Every annotation of a session (all levels, record-only channels too), indexed.

    Parameters
    ----------
    reader : mef3io.Reader or None
        The session's open reader, opened with ``password``. ``None`` reads
        with ``mef3io.inspect`` and ``password`` only (a client whose own
        password opens more or less than the shared reader's).
    path, password : str
        The session's path and the password to read with (``inspect`` uses
        it when some record bodies are beyond it).

    :meth:`AnnotationIndex.select` then picks channels and a window: channels
    ``None`` means session-level annotations plus those of every channel and
    segment (including channels that have records but no samples); names mean
    session-level annotations plus those of these channels. Time order; ties
    are ordered session, channel, segment level, then by channel name and
    segment number.
    """
    return AnnotationIndex(_all_records(reader, path, password))
