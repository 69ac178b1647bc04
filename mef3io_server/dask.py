"""Lazy Dask arrays of recordings served by mef3io-server.

Example (see docs/dask.md)::

    from dask.distributed import Client, LocalCluster
    from mef3io_server.dask import read_signal

    with LocalCluster(n_workers=2) as cluster, Client(cluster):
        x = read_signal("localhost:50051", "/data/patient1.mefd")
        print(x.shape, x.chunks)                     # (channels, samples)
        peak = abs(x).max(axis=1).compute()          # per channel

Each chunk is the read of one time window through the server, fetched by
whichever worker computes it, through that process's own
:class:`~mef3io_server.client.Mef3Client` (one per address and client
options, cached per process). Chunks are whole numbers of the server's tiles
and their windows join exactly (see :mod:`mef3io_server.window_pieces`), so
the array equals one direct read of the whole window, NaN in gaps.

Needs the ``dask`` extra (``pip install mef3io-server[dask]``).
"""
from __future__ import annotations

import threading
import warnings
from typing import Optional, Sequence

import numpy as np

from .exceptions import WindowWarning
from .server.tile_grid import samples_in_window
from .timespec import to_uutc
from .window_check import WindowCheck
from .window_pieces import DEFAULT_TILE_DURATION_S, piece_samples, split_window

#: Default chunk duration in seconds (6 tiles of the server's default 10 s).
DEFAULT_CHUNK_S = 60.0
#: A chunk is shrunk (by whole tiles) to at most this many bytes.
MAX_CHUNK_BYTES = 128 * 1024 * 1024
#: A window needing more chunks than this is refused (its graph alone would not fit).
MAX_CHUNKS = 1_000_000

_clients: dict = {}
_opened: set = set()
_lock = threading.Lock()


def _client_key(address: str, client_kwargs: dict) -> tuple:
    return (address, tuple(sorted((k, repr(v)) for k, v in client_kwargs.items())))


def cached_client(address: str, **client_kwargs):
    """This process's :class:`Mef3Client` for ``address`` and these options (made once)."""
    from .client import Mef3Client

    key = _client_key(address, client_kwargs)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Mef3Client(address, **client_kwargs)
        return client


def _open(client, path: str, password: Optional[str]) -> dict:
    info = client.open_file(path, password=password)
    if not info.get("file_opened"):
        raise RuntimeError(f"cannot open {path}: {info.get('error_message') or 'unknown error'}")
    return info


def fetch_chunk(address: str, client_kwargs: dict, path: str, channels: list,
                t0: int, t1: int, n_samples: int, password: Optional[str] = None) -> np.ndarray:
    """Read ``[t0, t1)`` (``n_samples`` samples) of ``channels`` through this process's client.

    Opens the file through that client the first time (and again if the
    server forgot the session); raises RuntimeError with the server's message
    when the read fails or does not hold ``n_samples`` samples.
    """
    client = cached_client(address, **client_kwargs)
    key = (_client_key(address, client_kwargs), path)
    if key not in _opened:
        _open(client, path, password)
        _opened.add(key)
    with warnings.catch_warnings():     # the window was checked once, by read_signal
        warnings.simplefilter("ignore", WindowWarning)
        res = client.get_signal_range(path, channels, t0, t1)
        if res["array"] is None:   # the session may have expired: open again, once
            _open(client, path, password)
            res = client.get_signal_range(path, channels, t0, t1)
    if res["array"] is None:
        raise RuntimeError(f"reading {path} [{t0}, {t1}): {res['error_message']}")
    arr = res["array"]
    if arr.shape != (len(channels), n_samples):
        raise RuntimeError(f"reading {path} [{t0}, {t1}): got shape {arr.shape}, "
                           f"expected {(len(channels), n_samples)}")
    return arr


def read_signal(address: str, path: str, channels: Optional[Sequence[str]] = None,
                start_uutc=None, end_uutc=None,
                chunk_s: Optional[float] = None, *, password: Optional[str] = None,
                tile_duration_s: float = DEFAULT_TILE_DURATION_S, **client_kwargs):
    """A lazy ``dask.array`` (channels, samples), float32, of ``[start_uutc, end_uutc)``.

    Parameters
    ----------
    address : str
        ``host:port`` of the server.
    path : str
        The recording (``.mefd``), as the server sees it.
    channels : list of str, optional
        Channel names (default: all, in file order); they must share one
        sampling rate.
    start_uutc, end_uutc : optional
        The half-open window: uUTC, or any time the clients take (ISO 8601,
        ``datetime``, ``numpy.datetime64``, ``"+10m"`` from the recording's
        start); default: from the first channel's start to the last channel's
        end (of the chosen channels). A window mostly outside the channels'
        data warns :class:`~mef3io_server.exceptions.WindowWarning`.
    chunk_s : float, optional
        Seconds per chunk (default 60), rounded to whole server tiles of
        ``tile_duration_s`` (the server's ``TILE_DURATION_S``, default 10)
        and shrunk by whole tiles to at most 128 MiB per chunk.
    password : str, optional
        Password of an encrypted recording.
    **client_kwargs
        Passed to every worker's :class:`Mef3Client` (``token``,
        ``root_certificates``, ``client_id``, ``timeout``...).

    Sample ``j`` stands at ``start_uutc + j * 1e6 / fs``; gaps and time
    outside a channel are NaN. The array's ``.attrs``-like details
    (``channel_names``, ``fs``, ``start_uutc``, ``end_uutc``) are on the
    returned object as the attribute ``mef`` (a dict).
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph
    from dask.base import tokenize

    client = cached_client(address, **client_kwargs)
    info = _open(client, path, password)
    names = list(info["channel_names"])
    chans = names if not channels else ([channels] if isinstance(channels, str)
                                        else list(channels))
    missing = [c for c in chans if c not in names]
    if missing:
        raise ValueError(f"no channel {', '.join(missing)} in {path} "
                         f"(channels: {', '.join(names)})")
    idx = [names.index(c) for c in chans]
    served = info.get("channel_served_sampling_rates") or []
    rates = served if len(served) == len(names) and all(served) else info["channel_sampling_rates"]
    fss = sorted({float(rates[i]) for i in idx})
    if len(fss) != 1:
        raise ValueError(f"the channels have different sampling rates ({fss} Hz); "
                         "read channels of one rate per array")
    fs = fss[0]
    starts = [int(info["channel_start_uutc"][i]) for i in idx]
    ends = [int(info["channel_end_uutc"][i]) for i in idx]
    origin = int(info["start_uutc"])
    t_start = min(starts) if start_uutc is None else to_uutc(start_uutc, origin)
    t_end = max(ends) if end_uutc is None else to_uutc(end_uutc, origin)
    if t_end <= t_start:
        raise ValueError(f"empty window [{t_start}, {t_end})")
    check = WindowCheck(t_start, t_end, min(starts), max(ends))
    if check.mostly_outside:
        warnings.warn(f"{path}: {check.message()}", WindowWarning, stacklevel=2)
    per = piece_samples(fs, DEFAULT_CHUNK_S if chunk_s is None else float(chunk_s),
                        n_channels=len(chans), max_bytes=MAX_CHUNK_BYTES,
                        tile_duration_s=tile_duration_s)
    n_chunks = -(-samples_in_window(t_start, t_end, fs) // per)
    if n_chunks > MAX_CHUNKS:
        raise ValueError(f"[{t_start}, {t_end}) makes {n_chunks} chunks of {per} samples (at "
                         f"most {MAX_CHUNKS}): choose a shorter window or a larger chunk_s")
    anchor = starts[0] if len(set(starts)) == 1 else None
    pieces = split_window(t_start, t_end, fs, per, anchor_uutc=anchor)
    name = "mef3io-read-" + tokenize(address, sorted(client_kwargs.items(), key=str), path,
                                     chans, t_start, t_end, per, info["end_uutc"])
    dsk = {(name, 0, k): (fetch_chunk, address, dict(client_kwargs), path, chans,
                          p.t0, p.t1, p.n_samples, password)
           for k, p in enumerate(pieces)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks = ((len(chans),), tuple(p.n_samples for p in pieces))
    arr = da.Array(graph, name, chunks, dtype=np.float32,
                   meta=np.empty((0, 0), dtype=np.float32))
    arr.mef = {"channel_names": chans, "fs": fs, "start_uutc": t_start, "end_uutc": t_end,
               "path": path}
    return arr
