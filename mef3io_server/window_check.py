"""Does a read window meet a recording's data? The check behind the clients' warnings.

The protocol answers any window, padding what lies outside the data with NaN
(as mef3io reads do), so a window typed in the wrong unit or an hour off comes
back as a valid, all-NaN array. The clients and the command line check each
window against the channels' span (from the file's metadata) before reading
and say so: :class:`WindowCheck` measures how much of the window holds no
data, and its :meth:`~WindowCheck.message` names the window, the data's span
and, for a time that looks like seconds or milliseconds, the likely mistake
(:func:`mef3io_server.timespec.unit_hint`). Times are uUTC, half-open.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .timespec import format_duration, format_uutc, unit_hint


def data_span(info: dict, channels: Optional[Sequence[str]] = None
              ) -> Optional[tuple[int, int]]:
    """``(start, end)`` uUTC of ``channels``' data in a file's metadata (``open_file``'s dict).

    ``channels`` None or empty: the whole recording. None when the metadata
    does not say (a channel it does not list, a file that did not open).
    """
    if not info or not info.get("file_opened", True) or not info.get("channel_names"):
        return None
    if isinstance(channels, str):
        channels = [channels]
    if not channels:
        return int(info["start_uutc"]), int(info["end_uutc"])
    where: dict = {}
    for i, name in enumerate(info["channel_names"]):
        where.setdefault(name, i)       # (the first of a repeated name, as list.index)
    try:
        idx = [where[c] for c in channels]
        return (min(int(info["channel_start_uutc"][i]) for i in idx),
                max(int(info["channel_end_uutc"][i]) for i in idx))
    except (ValueError, IndexError, KeyError):
        return None


def _rough(us: int) -> str:
    """A duration for a sentence: whole seconds from a minute up."""
    return format_duration(round(us / 1e6) * 1_000_000 if us >= 60_000_000 else us)


@dataclass(frozen=True)
class WindowCheck:
    """The window ``[start_uutc, end_uutc)`` against the data's ``[data_start, data_end)``."""

    start_uutc: int
    end_uutc: int
    data_start: int
    data_end: int

    @property
    def overlap_us(self) -> int:
        return max(0, min(self.end_uutc, self.data_end) - max(self.start_uutc, self.data_start))

    @property
    def before_us(self) -> int:
        """Microseconds of the window before the data's start."""
        return max(0, min(self.end_uutc, self.data_start) - self.start_uutc)

    @property
    def after_us(self) -> int:
        """Microseconds of the window after the data's end."""
        return max(0, self.end_uutc - max(self.start_uutc, self.data_end))

    @property
    def outside(self) -> bool:
        """No data in the window at all: every sample would be NaN."""
        return self.overlap_us == 0

    @property
    def partly_outside(self) -> bool:
        return self.before_us > 0 or self.after_us > 0

    @property
    def mostly_outside(self) -> bool:
        """More of the window lies outside the data than inside it."""
        return self.before_us + self.after_us > self.overlap_us

    def message(self, local: bool = False) -> str:
        """What is wrong with the window, in one sentence (empty when nothing is)."""
        if not self.partly_outside:
            return ""

        def t(u: int) -> str:
            try:
                return format_uutc(u, local)[:26 if u % 1_000_000 else 19]
            except (OverflowError, ValueError):       # beyond the years 1..9999
                return f"{u} uUTC"

        zone = " local time" if local else " UTC"
        span = f"{t(self.data_start)} .. {t(self.data_end)}{zone}"
        window = f"[{t(self.start_uutc)}, {t(self.end_uutc)}){zone}"
        if self.outside:
            text = (f"the window {window} holds no data: the recording's data spans {span}, "
                    "so every sample would be NaN")
        else:
            parts = []
            if self.before_us:
                parts.append(f"starts {_rough(self.before_us)} before the data")
            if self.after_us:
                parts.append(f"ends {_rough(self.after_us)} after the data")
            text = (f"the window {window} {' and '.join(parts)} ({span}): those samples are "
                    "NaN")
        hints = [h for h in (unit_hint(self.start_uutc, (self.data_start, self.data_end)),
                             unit_hint(self.end_uutc, (self.data_start, self.data_end))) if h]
        if self.outside and not hints:
            hints = [h for h in (unit_hint(self.start_uutc), unit_hint(self.end_uutc)) if h]
        return text + (f"; {hints[0]}" if hints else "")     # the start's, or else the end's
