"""One recording on a server, as the lab-tool adapters see it.

:class:`ServedRecording` is what :mod:`mef3io_server.mne`,
:mod:`mef3io_server.mefreader` and :mod:`mef3io_server.xarray` stand on: a
recording opened through the public :class:`~mef3io_server.client.Mef3Client`
API (``open_file``, ``get_signal_range``, ``get_segments``, ``get_records``),
its channels' metadata, reads that open the file again when the server has
forgotten this client's session, and the channels' units conversion factors
(sent by the server; recovered as :mod:`mef3io_server.unit_factors` says from
a server that does not send them).

Times are uUTC (int), rates Hz. ``source`` is a ``host:port`` address (a
client is made, and closed with :meth:`ServedRecording.close`) or a client
object (used as it is, never closed here).
"""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

from .server.tile_grid import samples_in_window
from .unit_factors import infer_factor

#: Seconds of data read (int32 and float32) to recover a channel's factor ...
FACTOR_PROBE_S = 1.0
#: ... and, for channels whose first second is flat, the longer second try.
FACTOR_PROBE_LONG_S = 30.0


@dataclass(frozen=True)
class ServedChannel:
    """A channel's metadata as ``open_file`` answers it (rates Hz, times uUTC)."""

    name: str
    fs: float
    start_uutc: int
    end_uutc: int
    units: str


class ServedRecording:
    """A recording opened on a server (see module docstring).

    Parameters
    ----------
    source : str or Mef3Client
        ``host:port`` of the server, or a client.
    path : str
        The recording (``.mefd``) as the server sees it.
    password : str, optional
        Level-1 or level-2 password of an encrypted recording.
    **client_kwargs
        Options of the client made for an address (``token``,
        ``root_certificates``, ``timeout``, ...).

    Raises ``RuntimeError`` with the server's message when the file cannot be
    opened. Copies (``copy.deepcopy``, as MNE's ``raw.copy()`` makes) share
    this object and its connection; a pickled one connects again to the same
    address (with the client options it was made with, if any).
    """

    def __init__(self, source, path: str, *, password: Optional[str] = None, **client_kwargs):
        from .client import Mef3Client

        if isinstance(source, str):
            self.client = Mef3Client(source, **client_kwargs)
            self._owned = True
        else:
            if inspect.iscoroutinefunction(getattr(source, "get_signal_range", None)):
                raise TypeError("these adapters read synchronously: give a Mef3Client or an "
                                "address, not an asyncio client")
            if client_kwargs:
                raise TypeError("client options apply to an address, not to a client: "
                                f"{', '.join(client_kwargs)}")
            self.client = source
            self._owned = False
        self.address = getattr(self.client, "address", source)
        self._client_kwargs = dict(client_kwargs)
        self.path = str(path)
        self.password = password
        self._factors: dict[str, Optional[float]] = {}
        self._lock = threading.Lock()
        try:
            self.info = self._open()
        except BaseException:
            self.close()
            raise
        names = self.info["channel_names"]
        rates = self.info["channel_sampling_rates"]
        units = self.info.get("channel_units") or [""] * len(names)
        self.channels = [ServedChannel(n, float(fs), int(a), int(b), str(u))
                         for n, fs, a, b, u in zip(names, rates, self.info["channel_start_uutc"],
                                                   self.info["channel_end_uutc"], units)]
        self.by_name = {c.name: c for c in self.channels}
        factors = self.info.get("channel_units_conversion_factors") or []
        if len(factors) == len(names):          # sent by this project's server
            self._factors.update({n: float(f) for n, f in zip(names, factors)})

    @property
    def client_options(self) -> dict:
        """The options the client was made with (empty for a given client)."""
        return dict(self._client_kwargs)

    # ---- life cycle ----

    def _open(self) -> dict:
        info = self.client.open_file(self.path, password=self.password or None)
        if not info.get("file_opened"):
            raise RuntimeError(f"cannot open {self.path} on {self.address}: "
                               f"{info.get('error_message') or 'unknown error'}")
        return info

    def close(self) -> None:
        """Close the connection when this object made it (a given client stays open)."""
        if self._owned and self.client is not None:
            self.client.shutdown()
            self.client = None

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (_reconnect, (self.address, self.path, self.password, self._client_kwargs))

    # ---- channels ----

    def pick(self, names: Optional[Sequence[str]] = None) -> list[ServedChannel]:
        """Channels by name in the order given (None: all, in file order).

        Raises ``ValueError`` naming unknown channels and the ones there are.
        """
        if names is None:
            return list(self.channels)
        names = [names] if isinstance(names, str) else list(names)
        missing = [n for n in names if n not in self.by_name]
        if missing:
            have = ", ".join(c.name for c in self.channels[:20])
            more = f", ... ({len(self.channels)} in all)" if len(self.channels) > 20 else ""
            raise ValueError(f"no channel {', '.join(map(repr, missing))} in {self.path} "
                             f"(it has: {have}{more})")
        return [self.by_name[n] for n in names]

    def one_rate(self, chans: Sequence[ServedChannel], what: str) -> float:
        """The rate ``chans`` share; ``ValueError`` naming each rate's channels when
        they differ (``what`` says what needs one rate)."""
        groups: dict[float, list[str]] = {}
        for c in chans:
            groups.setdefault(c.fs, []).append(c.name)
        if len(groups) == 1:
            return next(iter(groups))
        desc = "; ".join(f"{fs:g} Hz: {', '.join(n[:6])}{', ...' if len(n) > 6 else ''} "
                         f"({len(n)} channels)" for fs, n in sorted(groups.items()))
        first = sorted(groups.items())[-1][1]
        raise ValueError(f"{what} needs channels of one sampling rate, and {self.path} has "
                         f"several: {desc}. Pick one group with channels=[...], e.g. "
                         f"channels={first[:3]!r}{' + ...' if len(first) > 3 else ''}")

    # ---- reads ----

    def read(self, names: Sequence[str], t0: int, t1: int, *, dtype: Optional[str] = None,
             n_points: Optional[int] = None) -> dict:
        """``get_signal_range`` of ``[t0, t1)``; the file is opened again, once, when
        the read fails (the server may have closed an idle session: this project's
        client re-opens by itself, the published one does not). Raises
        ``RuntimeError`` with the server's message when it still fails."""
        kw = {} if dtype is None else {"dtype": dtype}
        if n_points is not None:
            kw["n_points"] = n_points
        res = self.client.get_signal_range(self.path, list(names), int(t0), int(t1), **kw)
        if res["array"] is None:
            self._open()
            res = self.client.get_signal_range(self.path, list(names), int(t0), int(t1), **kw)
        if res["array"] is None:
            raise RuntimeError(f"reading {self.path} [{t0}, {t1}) from {self.address}: "
                               f"{res['error_message']}")
        return res

    def segments(self, names: Optional[Sequence[str]] = None) -> dict:
        """``get_segments``: runs and gaps per channel (see the client)."""
        return self.client.get_segments(self.path, names)

    def records(self, names: Optional[Sequence[str]] = None) -> list:
        """``get_records``: the session's records and those of ``names`` (None: all)."""
        return self.client.get_records(self.path, names)

    def unit_factors(self, names: Sequence[str]) -> dict[str, Optional[float]]:
        """Units conversion factor of each channel: as the server sent it with the
        file's metadata (``channel_units_conversion_factors``); from a server that
        does not send it (the published 3.1.0), recovered once per channel from
        its first second (then its first 30 s) read as int32 and float32, None
        where those are flat. See :mod:`mef3io_server.unit_factors`."""
        with self._lock:
            todo = [n for n in names if n not in self._factors]
        for seconds in (FACTOR_PROBE_S, FACTOR_PROBE_LONG_S):
            groups: dict[tuple[float, int], list[str]] = {}
            for n in todo:
                c = self.by_name[n]
                groups.setdefault((c.fs, c.start_uutc), []).append(n)
            for (fs, start), group in groups.items():
                end = min(max(self.by_name[n].end_uutc for n in group),
                          start + int(seconds * 1e6))
                if samples_in_window(start, end, fs) <= 0:
                    continue
                counts = self.read(group, start, end, dtype="int32")["array"]
                values = self.read(group, start, end)["array"]
                with self._lock:
                    for i, n in enumerate(group):
                        self._factors[n] = infer_factor(counts[i], values[i])
            with self._lock:
                todo = [n for n in names if self._factors.get(n) is None]
        with self._lock:
            return {n: self._factors.get(n) for n in names}


def _reconnect(address, path, password, client_kwargs) -> ServedRecording:
    return ServedRecording(address, path, password=password, **client_kwargs)
