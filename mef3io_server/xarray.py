"""xarray on recordings served by mef3io-server: a labelled ``DataArray``.

Example (see docs/xarray.md)::

    from mef3io_server.xarray import read_dataarray

    da = read_dataarray("localhost:50051", "/data/patient1.mefd",
                        channels=["Fz", "Cz"], start="2020-09-13T12:26:40",
                        end="2020-09-13T12:27:40")
    da.sel(channel="Cz").mean("time")

Dims ``("channel", "time")``; ``time`` is a ``datetime64[ns]`` coordinate in
UTC (sample ``j`` at ``start + j / fs``, each rounded half up to a
microsecond); ``attrs`` hold ``fs`` (Hz), ``units`` (one string when the
channels share it, else a list), ``path``, ``start_uutc``/``end_uutc`` and
``n_points``. Values are float32 in the channels' units, NaN in gaps. A long
window comes back lazy, dask-backed through :func:`mef3io_server.dask.read_signal`
(chunks of whole server tiles, read when computed); ``lazy=`` forces either way.

Needs the ``xarray`` extra (``pip install mef3io-server[xarray]``).
"""
from __future__ import annotations

import datetime as _dt
from typing import Optional, Sequence, Union

import numpy as np

from .served_recording import ServedRecording
from .server.tile_grid import samples_in_window
from .window_pieces import sample_times

#: Windows above this many bytes of float32 come back lazy (dask) unless ``lazy=`` says.
LAZY_ABOVE_BYTES = 64 << 20

TimeLike = Union[int, np.integer, str, np.datetime64, _dt.datetime, None]


def _require_xarray():
    try:
        import xarray
    except ImportError:
        raise ImportError("mef3io_server.xarray needs xarray: pip install "
                          "'mef3io-server[xarray]' (or pip install xarray)") from None
    return xarray


def to_uutc(t: TimeLike) -> Optional[int]:
    """uUTC of ``t``: an int (already uUTC), an ISO string or ``numpy.datetime64``
    (UTC, no zone given), or a ``datetime`` (naive means UTC)."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds
    if isinstance(t, (str, np.datetime64)):
        return int(np.datetime64(t, "us").astype(np.int64))
    raise TypeError(f"a time must be uUTC (int), an ISO string, numpy.datetime64 or "
                    f"datetime, not {type(t).__name__}")


def read_dataarray(source, path: str, channels: Optional[Sequence[str]] = None,
                   start: TimeLike = None, end: TimeLike = None,
                   n_points: Optional[int] = None, *, password: Optional[str] = None,
                   lazy: Optional[bool] = None, chunk_s: Optional[float] = None,
                   **client_kwargs):
    """A window of a served recording as an ``xarray.DataArray`` (channel, time).

    Parameters
    ----------
    source : str or Mef3Client
        ``host:port`` of the server, or a client (a lazy array's workers
        connect to its ``address`` with ``client_kwargs``).
    path : str
        The recording (``.mefd``), as the server sees it.
    channels : list of str, optional
        Names (default: all); they must share one sampling rate.
    start, end : int, str, numpy.datetime64 or datetime, optional
        The half-open window (uUTC or UTC times); default: the channels' span.
    n_points : int, optional
        That many points per channel (the server's MinMaxLTTB reduction, real
        samples; eager): point ``k`` stands at ``start + k * (end - start) /
        n_points``, the start of its bucket.
    password : str, optional
        Password of an encrypted recording.
    lazy : bool, optional
        Dask-backed (True) or read now (False); default: lazy above 64 MiB.
    chunk_s : float, optional
        Seconds per dask chunk (see :func:`mef3io_server.dask.read_signal`).
    """
    xr = _require_xarray()
    rec = ServedRecording(source, path, password=password, **client_kwargs)
    try:
        chans = rec.pick(channels)
        fs = rec.one_rate(chans, "a DataArray")
        names = [c.name for c in chans]
        t0 = to_uutc(start)
        t1 = to_uutc(end)
        t0 = min(c.start_uutc for c in chans) if t0 is None else t0
        t1 = max(c.end_uutc for c in chans) if t1 is None else t1
        if t1 <= t0:
            raise ValueError(f"empty or inverted window [{t0}, {t1}) (uUTC)")
        n = samples_in_window(t0, t1, fs)
        units = [c.units for c in chans]
        attrs = {"fs": fs, "units": units[0] if len(set(units)) == 1 else units,
                 "path": str(path), "start_uutc": t0, "end_uutc": t1, "n_points": n_points}
        if n_points is not None:
            res = rec.read(names, t0, t1, n_points=int(n_points))
            data = res["array"]
            attrs["fs"] = float(res["fs"])
            k = np.arange(data.shape[1], dtype=np.int64)
            times = t0 + (k * (t1 - t0)) // data.shape[1]
        else:
            if lazy is None:
                lazy = n * len(names) * 4 > LAZY_ABOVE_BYTES
            if lazy:
                from .dask import read_signal
                data = read_signal(rec.address, str(path), names, t0, t1, chunk_s,
                                   password=password, **rec.client_options)
            else:
                data = rec.read(names, t0, t1)["array"]
            times = sample_times(t0, 0, n, fs)
        coords = {"channel": names,
                  "time": np.asarray(times, dtype=np.int64).astype("datetime64[us]")
                  .astype("datetime64[ns]")}
        return xr.DataArray(data, dims=("channel", "time"), coords=coords, attrs=attrs,
                            name=str(path).rstrip("/").rsplit("/", 1)[-1])
    finally:
        rec.close()
