"""Times given by people: uUTC, ISO 8601, datetimes, or offsets from a recording's start.

The command line takes three forms of text, all turned into uUTC (integer
microseconds since the Unix epoch); the Python clients take these and Python's
and NumPy's time types too (:func:`to_uutc`):

* **uUTC**: an integer, ``1704067200000000`` (underscores allowed:
  ``1_704_067_200_000_000``).
* **ISO 8601**: ``2024-01-01T00:10:00Z``, ``2024-01-01T01:10:00+01:00``,
  ``2024-01-01 00:10:00.250``. A time WITHOUT a timezone is taken as **UTC**
  (never as the machine's local time, so a command means the same on every
  machine). Fractions of a second are kept to the microsecond.
* **offset from the recording's start**: ``+`` then one or more
  ``<number><unit>`` parts, units ``d``, ``h``, ``m``, ``s``, ``ms``, ``us``:
  ``+10m``, ``+1h30m``, ``+90s``, ``+500ms``, ``+1.5s``. The recording's start
  (``origin_uutc``) must be known.

Durations (:func:`parse_duration_us`) use the same ``<number><unit>`` parts
without the ``+``. All arithmetic is exact (``fractions.Fraction``), so
``+0.1s`` is exactly 100000 us. :func:`unit_hint` says when a number looks
like seconds or milliseconds rather than microseconds.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from fractions import Fraction
from typing import Optional

import numpy as np

from .exceptions import TimeSpecError

_UNIT_US = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000,
            "ms": 1_000, "us": 1}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|d|h|m|s)")
_INT = re.compile(r"\d[\d_]*")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


FORMS = ("uUTC (e.g. 1704067200000000), ISO 8601 (e.g. 2024-01-01T00:10:00Z; no timezone "
         "means UTC) or an offset from the recording's start (e.g. +10m, +1h30m, +90s, +500ms)")


def parse_duration_us(text: str) -> int:
    """``"1h30m"`` -> 5400000000: microseconds of a duration made of ``<number><unit>`` parts.

    Units: ``d``, ``h``, ``m`` (minutes), ``s``, ``ms``, ``us``. Rounded to the
    nearest microsecond (half up). Raises :class:`TimeSpecError` otherwise.
    """
    s = str(text).strip().lower().replace(" ", "")
    if not s:
        raise TimeSpecError("empty duration")
    pos = 0
    total = Fraction(0)
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += Fraction(m.group(1)) * _UNIT_US[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise TimeSpecError(f"cannot read {text!r} as a duration: use parts like 1h30m, 90s, "
                            "500ms (units d, h, m, s, ms, us)")
    return int(total + Fraction(1, 2)) if total.denominator != 1 else int(total)


def datetime_to_uutc(dt: _dt.datetime) -> int:
    """uUTC of a datetime, exactly; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_time(text, origin_uutc: Optional[int] = None) -> int:
    """uUTC of a time given as uUTC, ISO 8601 (naive = UTC) or ``+offset`` from ``origin_uutc``.

    Raises :class:`TimeSpecError` naming the accepted forms when ``text`` is
    none of them, and when an offset is given without an origin.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    if not s:
        raise TimeSpecError(f"empty time: give {FORMS}")
    if s.startswith("+"):
        if origin_uutc is None:
            raise TimeSpecError(f"{s!r} is an offset but the recording's start is not known")
        try:
            return int(origin_uutc) + parse_duration_us(s[1:])
        except TimeSpecError:
            raise TimeSpecError(f"cannot read the offset {s!r}: use e.g. +10m, +1h30m, +90s, "
                                "+500ms (units d, h, m, s, ms, us)") from None
    if _INT.fullmatch(s):
        return int(s.replace("_", ""))
    iso = s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s
    try:
        dt = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise TimeSpecError(f"cannot read the time {s!r}: give {FORMS}") from None
    return datetime_to_uutc(dt)


def needs_origin(value) -> bool:
    """True when ``value`` is an offset from the recording's start (``"+10m"``, a timedelta)."""
    if isinstance(value, (_dt.timedelta, np.timedelta64)):
        return True
    return isinstance(value, str) and value.strip().startswith("+")


def to_uutc(value, origin_uutc: Optional[int] = None) -> int:
    """uUTC of a time given to a client, in any of these forms:

    * an integer (``int`` or NumPy) of uUTC; a float is truncated to whole
      microseconds, as the published client did (``t0 + 10e6`` works);
    * text as on the command line: uUTC, ISO 8601 (no timezone = UTC) or
      ``"+10m"`` from the recording's start (:func:`parse_time`);
    * ``datetime.datetime`` (naive = UTC; pandas ``Timestamp`` too),
      ``datetime.date`` (its midnight UTC), ``numpy.datetime64`` (rounded to
      the microsecond);
    * an offset from the recording's start (``origin_uutc``):
      ``datetime.timedelta`` or ``numpy.timedelta64``.

    Raises :class:`TimeSpecError` (a ``ValueError``) otherwise.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TimeSpecError(f"{value!r} is not a time: give {FORMS}, or a datetime")
    if isinstance(value, (_dt.timedelta, np.timedelta64)):    # (timedelta64 is an integer)
        if origin_uutc is None:
            raise TimeSpecError(f"{value!r} is an offset but the recording's start is not known")
        return int(origin_uutc) + _timedelta_us(value)
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise TimeSpecError("NaT is not a time")
        return _round_ns(int(value.astype("datetime64[ns]").astype(np.int64)))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise TimeSpecError(f"{value!r} is not a time")
        return int(value)
    if isinstance(value, _dt.datetime):
        return datetime_to_uutc(value)
    if isinstance(value, _dt.date):
        return datetime_to_uutc(_dt.datetime(value.year, value.month, value.day))
    if isinstance(value, str):
        return parse_time(value, origin_uutc)
    raise TimeSpecError(f"cannot read {value!r} ({type(value).__name__}) as a time: give "
                        f"{FORMS}, a datetime, a numpy.datetime64 or a timedelta from the start")


def _round_ns(ns: int) -> int:
    """Nanoseconds to microseconds, rounded half up."""
    return (ns + 500) // 1000


def _timedelta_us(value) -> int:
    if isinstance(value, np.timedelta64):
        if np.isnat(value):
            raise TimeSpecError("NaT is not a duration")
        return _round_ns(int(value.astype("timedelta64[ns]").astype(np.int64)))
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


#: uUTC of 1990-01-01 and 2100-01-01: where recordings plausibly are, for :func:`unit_hint`.
_PLAUSIBLE_UUTC = (631_152_000_000_000, 4_102_444_800_000_000)


def unit_hint(value: int, span: Optional[tuple[int, int]] = None) -> str:
    """A sentence when uUTC ``value`` looks like seconds or milliseconds, else ``""``.

    ``span``: the recording's ``(start, end)`` in uUTC; ``value`` scaled by
    10^6 or 10^3 must then land within a day of it, otherwise between 1990 and
    2100 while ``value`` itself lies before 1990.
    """
    value = int(value)
    for factor, unit in ((1_000_000, "seconds"), (1_000, "milliseconds")):
        scaled = value * factor
        if span is not None:
            fits = span[0] - _UNIT_US["d"] <= scaled <= span[1] + _UNIT_US["d"]
        else:
            fits = (_PLAUSIBLE_UUTC[0] <= scaled <= _PLAUSIBLE_UUTC[1]
                    and value < _PLAUSIBLE_UUTC[0])
        if fits and not (span is not None and span[0] <= value <= span[1]):
            return (f"{value} looks like {unit} since 1970, not microseconds: as uUTC that "
                    f"time is {scaled} ({format_uutc(scaled, local=False)[:19]} UTC)")
    return ""


def uutc_to_datetime(uutc: int, local: bool = True) -> _dt.datetime:
    """An aware datetime of a uUTC time, in the machine's local timezone (or UTC)."""
    dt = _EPOCH + _dt.timedelta(microseconds=int(uutc))
    return dt.astimezone() if local else dt


def format_uutc(uutc: int, local: bool = True) -> str:
    """``2024-01-01 01:00:00.250000+01:00``: a uUTC time for people (local time by default)."""
    return uutc_to_datetime(uutc, local).isoformat(sep=" ", timespec="microseconds")


def format_duration(us: int) -> str:
    """``5400000000`` -> ``"1h30m"``; sub-second parts as ``s`` with decimals."""
    us = int(us)
    sign = "-" if us < 0 else ""
    us = abs(us)
    d, rem = divmod(us, _UNIT_US["d"])
    h, rem = divmod(rem, _UNIT_US["h"])
    m, rem = divmod(rem, _UNIT_US["m"])
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else ""]
    if rem or not any(parts):
        sec = Fraction(rem, 1_000_000)
        parts.append(f"{int(sec)}s" if sec.denominator == 1
                     else f"{rem / 1e6:.6f}".rstrip("0") + "s")
    return sign + "".join(parts)
