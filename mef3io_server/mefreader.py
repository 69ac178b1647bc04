"""mef_tools' ``MefReader``, served: a mef_tools script reads a remote recording
by changing one import.

Example (see docs/coming-from.md)::

    # from mef_tools.io import MefReader
    from mef3io_server.mefreader import MefReader

    reader = MefReader("/data/patient1.mefd", password2="pw", address="server:50051")
    x = reader.get_data(reader.channels[:4], t0, t0 + 10_000_000)   # list of float64 arrays

The interface of ``mef_tools.io.MefReader`` 1.2.3: ``channels``,
``properties``, ``get_property(name, channel=None)``,
``get_channel_info(channel=None)``, ``get_data(channels, t_stamp1=None,
t_stamp2=None)``, ``get_raw_data(...)``, ``get_annotations(channel=None)``,
``close()``. A list of channels gives a list of arrays, a single name one
array; arrays are float64, NaN in gaps; ``get_data`` in the channel's units,
``get_raw_data`` in stored counts (read as ``int32`` on the wire, exact).

Kept from mef_tools because scripts rely on them: unknown names in a list are
dropped (a single unknown name raises ``ValueError``); repeated names are
read once; ``t_stamp1`` defaults to the earliest start and ``t_stamp2`` to
the *earliest end* of the channels read; ``get_raw_data`` always returns a
list. Fixed: ``get_data`` scales each array by its own channel's factor (by
position in mef_tools, so a dropped name shifted the factors), and drops
unknown names like ``get_raw_data`` (mef_tools then failed); Python ``int``
channel indexes work (mef_tools took only ``numpy.int64``); a NumPy array of
names reads like a list; ``get_annotations()`` of a session without
session-level records is ``[]`` (a ``KeyError`` with pymef 1.4.8). The full
list, and what ``get_data`` returns exactly, is in docs/coming-from.md.
"""
from __future__ import annotations

from numbers import Integral
import numpy as np

from .served_recording import ServedRecording
from .unit_factors import RAW_GAP
from .messages import DEFAULT_ADDRESS

#: Keys of a channel's entry in :attr:`MefReader.bi` that are not record body fields.
_RECORD_META = ("time_uutc", "type", "text", "channel", "level", "segment", "locked",
                "duration_us")


class MefReader:
    """``mef_tools.io.MefReader`` over mef3io-server (see module docstring).

    Parameters
    ----------
    session_path : str
        The recording (``.mefd``), as the server sees it.
    password2 : str, optional
        Its password (level 2, as mef_tools; a level-1 password reads the
        samples too).
    address : str
        ``host:port`` of the server (default ``localhost:50051``).
    client : Mef3Client, optional
        A client to read through instead of making one for ``address``.
    **client_kwargs
        Options of the client made for ``address`` (``token``, ``timeout``...).
    """

    __version__ = "2.0.0"      # the mef_tools MefReader interface this follows

    def __init__(self, session_path, password2=None, *, address: str = DEFAULT_ADDRESS,
                 client=None, **client_kwargs):
        self._rec = ServedRecording(client if client is not None else address,
                                    str(session_path), password=password2, **client_kwargs)
        self.bi = self._basic_info()

    def _basic_info(self) -> list[dict]:
        """Per channel, pymef's ``read_ts_channel_basic_info`` entry: arrays of one value."""
        runs = self._rec.segments()
        factors = self._rec.unit_factors([c.name for c in self._rec.channels])
        descriptions = self._rec.info.get("channel_descriptions") or []
        if len(descriptions) != len(self._rec.channels):    # a server that does not send them
            descriptions = [None] * len(self._rec.channels)
        out = []
        for c, description in zip(self._rec.channels, descriptions):
            nsamp = sum(r["number_of_samples"] for r in runs.get(c.name, {}).get("runs", []))
            u = factors[c.name]
            out.append({
                "name": c.name,
                "fsamp": np.array([c.fs], dtype=np.float64),
                "nsamp": np.array([nsamp], dtype=np.int64),
                "ufact": np.array([np.nan if u is None else u], dtype=np.float64),
                "unit": np.array([c.units.encode()], dtype="S128"),
                "start_time": np.array([c.start_uutc], dtype=np.int64),
                "end_time": np.array([c.end_uutc], dtype=np.int64),
            })
            if description is not None:
                out[-1]["channel_description"] = np.array([description.encode()], dtype="S2048")
        return out

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    # ---- metadata ----

    @property
    def channels(self) -> list:
        """Names of the session's channels, in file order."""
        return [ch["name"] for ch in self.bi]

    @property
    def properties(self) -> list:
        """The keys of a channel's info, sorted (as mef_tools lists them)."""
        keys = []
        for ch in self.bi:
            keys += list(ch.keys())
        return list(np.unique(keys))

    def get_property(self, property_name, channel=None):
        """``property_name`` of ``channel`` (its single value), or of every channel
        (a list) when ``channel`` is None; None for an unknown channel."""
        if channel is None:
            return [ch[property_name][0] if len(ch[property_name]) == 1 else ch[property_name]
                    for ch in self.bi]
        for ch in self.bi:
            if ch["name"] == channel:
                v = ch[property_name]
                return v[0] if len(v) == 1 else v
        return None

    def get_channel_info(self, channel=None):
        """The info dict of ``channel`` (None if unknown), or the list of all."""
        if channel is None:
            return self.bi
        for ch in self.bi:
            if ch["name"] == channel:
                return ch
        return None

    def close(self) -> None:
        """Close the connection (made by this reader; a given client stays open)."""
        rec = getattr(self, "_rec", None)
        if rec is not None:
            rec.close()

    # ---- data ----

    def _pick(self, channels) -> list[str]:
        names = self.channels
        if isinstance(channels, str):
            if channels not in names:
                raise ValueError("Channel name is not present in MEF file.")
            return [channels]
        if isinstance(channels, Integral) and not isinstance(channels, bool):
            if not 0 <= channels < len(names):
                raise ValueError(f"Number of channels in MEF file: {len(names)}. "
                                 f"However index {channels} pasted")
            return [names[channels]]
        picked: list[str] = []
        if isinstance(channels, (list, tuple, np.ndarray)):
            for ch in channels:
                if isinstance(ch, Integral) and not isinstance(ch, bool):
                    ch = names[ch]
                if isinstance(ch, (str, np.str_)) and str(ch) in names \
                        and str(ch) not in picked:
                    picked.append(str(ch))
        if not picked:
            raise ValueError(f"none of the channels asked ({channels!r}) is in the session "
                             f"(channels: {', '.join(names[:20])})")
        return picked

    def _window(self, picked, t_stamp1, t_stamp2) -> tuple[int, int]:
        if t_stamp1 is None:
            t_stamp1 = min(self._rec.by_name[n].start_uutc for n in picked)
        if t_stamp2 is None:
            t_stamp2 = min(self._rec.by_name[n].end_uutc for n in picked)
        return int(t_stamp1), int(t_stamp2)

    def _read(self, picked, t0, t1, dtype):
        """One array per name in ``picked``, read one server read per sampling rate."""
        out: dict[str, np.ndarray] = {}
        by_rate: dict[float, list[str]] = {}
        for n in picked:
            by_rate.setdefault(self._rec.by_name[n].fs, []).append(n)
        for group in by_rate.values():
            arr = self._rec.read(group, t0, t1, dtype=dtype)["array"]
            rows = arr.astype(np.float64)
            if dtype == "int32":
                rows[arr == RAW_GAP] = np.nan
            out.update(zip(group, rows))
        return [out[n] for n in picked]

    def get_raw_data(self, channels, t_stamp1=None, t_stamp2=None) -> list:
        """Stored counts of ``channels`` over ``[t_stamp1, t_stamp2)`` uUTC: a list of
        float64 arrays (NaN in gaps), one per channel picked (see module docstring)."""
        picked = self._pick(channels)
        t0, t1 = self._window(picked, t_stamp1, t_stamp2)
        return self._read(picked, t0, t1, "int32")

    def get_data(self, channels, t_stamp1=None, t_stamp2=None):
        """Values of ``channels`` in their units over ``[t_stamp1, t_stamp2)`` uUTC:
        float64, NaN in gaps; one array for a name or an index, else a list."""
        picked = self._pick(channels)
        t0, t1 = self._window(picked, t_stamp1, t_stamp2)
        data = self._read(picked, t0, t1, None)
        if isinstance(channels, (str, Integral)):
            return data[0]
        return data

    # ---- records ----

    def get_annotations(self, channel=None) -> list:
        """The session's records (``channel`` None) or those of one channel, as pymef's
        dicts: ``type``, ``time`` (uUTC), then the body (``text``, ``duration``, ...)."""
        if channel is not None and channel not in self.channels:
            raise ValueError(f"No channel {channel} in this session")
        recs = self._rec.records(None if channel is None else [channel])
        out = []
        for r in recs:
            if channel is None and r["level"] != "session":
                continue
            if channel is not None and (r["level"] != "channel" or r["channel"] != channel):
                continue
            d = {"type": r["type"], "time": r["time_uutc"]}
            if r.get("duration_us") is not None:
                d["duration"] = r["duration_us"]
            if r.get("text") is not None:
                d["text"] = r["text"]
            d.update({k: v for k, v in r.items() if k not in _RECORD_META})
            out.append(d)
        return out

    def __repr__(self) -> str:
        return (f"MefReader({self._rec.path!r}, address={self._rec.address!r}, "
                f"{len(self.bi)} channels)")
