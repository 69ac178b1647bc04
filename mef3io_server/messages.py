"""Requests and answers of the protocol, shared by the sync and asyncio clients.

Like httpx's models shared by ``Client`` and ``AsyncClient``: this module
builds every request message and turns answers into the plain dicts and NumPy
arrays the clients return (through :mod:`mef3io_server.client_base`, so
:class:`mef3io_server.client.Mef3Client` and
:class:`mef3io_server.aio.AsyncMef3Client` differ only in how they call). An
answer carrying the server's error message raises
:class:`~mef3io_server.exceptions.RequestRefused` (a ``RuntimeError``), except
where the published protocol returns it in the dict. Nothing here touches the
network.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional

import numpy as np

from . import montages
from .exceptions import InvalidArgument, RequestRefused, ServerUnsupported
from .protobufs import gRPCMef3Server_pb2 as pb2

CLIENT_ID_KEY = "x-mef3io-client-id"
DEFAULT_ADDRESS = "localhost:50051"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def channel_options(aio: bool = False) -> list:
    """Channel options of the clients: :data:`CHANNEL_OPTIONS`, and for the sync
    client gRPC's single-threaded streaming reads. Without it every streaming
    call of a sync channel starts a "channel spin" thread that hands each
    message to the caller's thread; with it the caller's thread takes them
    itself (see ``benchmarks/decisions.md`` for what that saves per read)."""
    if aio:
        return list(CHANNEL_OPTIONS)
    import grpc.experimental
    return CHANNEL_OPTIONS + [(grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]


def check_client_id(client_id: Optional[str]) -> str:
    """A valid client id: the given one, or a random one when ``None``."""
    if client_id is None:
        return uuid.uuid4().hex
    if not isinstance(client_id, str) or not (0 < len(client_id) <= 128) \
            or not client_id.isprintable():
        raise InvalidArgument("client_id must be 1 to 128 printable characters")
    return client_id


def call_metadata(client_id: str, token: Optional[str] = None) -> tuple:
    md = [(CLIENT_ID_KEY, client_id)]
    if token:
        md.append(("authorization", f"Bearer {token}"))
    return tuple(md)


def _channels(channels) -> list[str]:
    if channels is None:
        return []
    if isinstance(channels, str):
        return [channels]
    return list(channels)


# ------------------------------------------------------------------ files

def open_file_request(file_path: str, cache_fs=None, allow_mixed_rates=False,
                      password=None) -> pb2.OpenFileRequest:
    req = pb2.OpenFileRequest(file_path=str(file_path), allow_mixed_rates=bool(allow_mixed_rates))
    if cache_fs is not None:
        req.cache_fs = float(cache_fs)
    if password:
        req.password = str(password)
    return req


def file_info_request(file_path: str) -> pb2.FileInfoRequest:
    return pb2.FileInfoRequest(file_path=str(file_path))


def file_info_to_dict(resp: pb2.FileInfoResponse) -> dict:
    """A ``FileInfoResponse`` as a dict (per-channel lists are parallel)."""
    exact = list(resp.channel_sampling_rates_exact)
    return {
        "file_path": resp.file_path,
        "file_opened": resp.file_opened,
        "number_of_channels": resp.number_of_channels,
        "channel_names": list(resp.channel_names),
        "channel_sampling_rates": exact or list(resp.channel_sampling_rates),
        "channel_start_uutc": list(resp.channel_start_uutc),
        "channel_end_uutc": list(resp.channel_end_uutc),
        "channel_served_sampling_rates": list(resp.channel_served_sampling_rates),
        "channel_units": list(resp.channel_units),
        # Empty from servers that do not send them (the published 3.1.0).
        "channel_units_conversion_factors": list(resp.channel_units_conversion_factors),
        "channel_descriptions": list(resp.channel_descriptions),
        "cache_fs": resp.cache_fs if resp.HasField("cache_fs") else None,
        "start_uutc": resp.start_uutc,
        "end_uutc": resp.end_uutc,
        "duration_s": resp.duration_s,
        "encrypted": resp.encrypted if resp.HasField("encrypted") else None,
        "access_level": resp.access_level if resp.HasField("access_level") else None,
        "error_message": resp.error_message,
    }


def check_open_answer(resp: pb2.FileInfoResponse, cache_fs) -> dict:
    if cache_fs is not None and resp.file_opened and not resp.HasField("cache_fs"):
        raise ServerUnsupported("the server does not support cache_fs (it is older than this "
                                "client); upgrade mef3io-server or open without it")
    return file_info_to_dict(resp)


def close_answer(resp: pb2.FileInfoResponse) -> dict:
    return {"file_path": resp.file_path, "file_opened": resp.file_opened,
            "error_message": resp.error_message}


# ------------------------------------------------------------------ signal

#: Sample types a read can ask for (``SignalRangeRequest.dtype``).
SIGNAL_DTYPES = ("float32", "int32")


def signal_request(file_path, channels, start_uutc, end_uutc, n_points=None, dtype=None,
                   montage=None, filters=None, mixed_rates=False) -> pb2.SignalRangeRequest:
    """``montage``/``filters``: see :mod:`mef3io_server.montages` (None: not sent, so the
    request is the published client's)."""
    req = pb2.SignalRangeRequest(file_path=str(file_path), channel_names=_channels(channels),
                                 start_uutc=int(start_uutc), end_uutc=int(end_uutc))
    if n_points is not None:
        req.n_points = int(n_points)
    if dtype is not None:
        if str(dtype) not in SIGNAL_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(SIGNAL_DTYPES)}, not {dtype!r}")
        req.dtype = str(dtype)
    if montage is not None:
        for d in montages.as_montage(montage):
            req.montage.add(name=d.name, inputs=list(d.weights),
                            weights=[float(w) for w in d.weights.values()],
                            average_of=list(d.average_of))
    if filters is not None:
        for f in montages.as_filters(filters):
            msg = req.filters.add(kind=f.kind, hz=list(f.hz))
            if f.order is not None:
                msg.order = int(f.order)
            if f.q is not None:
                msg.q = float(f.q)
    if mixed_rates:
        req.mixed_rates = True
    return req


class SignalAssembler:
    """Joins the chunks of a ``GetSignalRange`` stream into one array.

    When the server says the read's total length (``total_samples``, this
    server), chunks are copied straight into one preallocated array, except
    a read that arrives as one chunk: its message buffer is the array,
    without a copy (read-only, like the published client's single-chunk
    answers; ``array.copy()`` to modify it). From an older server chunks are
    collected and concatenated. Any chunk with an
    ``error_message`` fails the whole read: the result then has
    ``array=None`` and that message, never a truncated array.
    """

    def __init__(self, n_points=None, dtype=None):
        self.n_points = n_points
        self.asked_dtype = dtype
        self.parts: list[np.ndarray] = []
        self.out: Optional[np.ndarray] = None
        self.channel_names = None
        self.fs = None
        self.dtype = None
        self.start = None
        self.end = None
        self.error = None
        self.filled = 0

    def feed(self, chunk: pb2.SignalChunk) -> bool:
        """Take one chunk; False once the read has failed (stop reading)."""
        if chunk.error_message:
            self.error = chunk.error_message
            self.parts = []
            self.out = None
            return False
        arr = np.frombuffer(chunk.array_bytes, dtype=chunk.dtype)
        if not arr.flags.aligned:       # (a view into a message whose samples start at an
            arr = arr.copy()            # odd offset: see signal_chunk_codec)
        arr = arr.reshape(tuple(chunk.shape))
        if self.channel_names is None:
            self.channel_names = list(chunk.channel_names)
        self.dtype = chunk.dtype
        self.fs = chunk.fs
        self.start = chunk.start_uutc if self.start is None else min(self.start, chunk.start_uutc)
        self.end = chunk.end_uutc if self.end is None else max(self.end, chunk.end_uutc)
        if chunk.HasField("total_samples") and chunk.HasField("sample_offset") and arr.ndim == 2:
            if self.out is None and chunk.sample_offset == 0 \
                    and arr.shape[1] == chunk.total_samples:
                # The whole read in one chunk: the message's buffer is the answer
                # (read-only, as the published client's single-chunk answers).
                self.parts.append(arr)
                self.filled = arr.shape[1]
                return True
            if self.out is None:
                self.out = np.empty((arr.shape[0], chunk.total_samples), dtype=arr.dtype)
                for part in self.parts:         # a "whole" chunk was not the only one
                    self.out[:, :part.shape[1]] = part
                self.parts = []
            j0 = chunk.sample_offset
            self.out[:, j0:j0 + arr.shape[1]] = arr
            self.filled += arr.shape[1]
        else:
            self.parts.append(arr)
        return True

    def result(self) -> dict:
        base = {"channel_names": self.channel_names, "fs": self.fs, "start_uutc": self.start,
                "end_uutc": self.end, "dtype": self.dtype}
        if self.error is not None:
            return {"array": None, **base, "shape": None, "error_message": self.error}
        if self.out is not None:
            if self.filled != self.out.shape[1]:
                return {"array": None, **base, "shape": None,
                        "error_message": f"the stream ended after {self.filled} of "
                                         f"{self.out.shape[1]} samples"}
            array = self.out
        elif self.parts:
            array = np.concatenate(self.parts, axis=1) if len(self.parts) > 1 else self.parts[0]
        else:
            return {"array": None, **base, "shape": None, "error_message": "No data returned."}
        if self.n_points is not None and array.shape[-1] > int(self.n_points):
            raise ServerUnsupported("the server does not support n_points (it is older than this "
                                    "client); upgrade mef3io-server or read without it")
        if self.asked_dtype is not None and self.dtype != self.asked_dtype:
            raise ServerUnsupported(f"the server does not support dtype={self.asked_dtype} (it "
                                    "is older than this client) and sent "
                                    f"{self.dtype}; upgrade mef3io-server or read without it")
        return {"array": array, **base, "shape": array.shape, "error_message": ""}


class MixedRateAssembler:
    """Joins a ``mixed_rates`` read: one :class:`SignalAssembler` per rate group, then one
    array per channel in the order asked (see :meth:`result`)."""

    def __init__(self, n_points=None, dtype=None):
        self.n_points, self.dtype = n_points, dtype
        self.groups: dict[int, tuple[SignalAssembler, list[int]]] = {}
        self.error = None

    def feed(self, chunk) -> bool:
        if chunk.error_message:
            self.error = chunk.error_message
            return False
        if not chunk.HasField("group"):
            raise ServerUnsupported("the server does not support mixed_rates (it is older than "
                                    "this client); read each rate separately")
        g = self.groups.get(chunk.group)
        if g is None:
            g = self.groups[chunk.group] = (SignalAssembler(self.n_points, self.dtype),
                                            list(chunk.channel_index))
        return g[0].feed(chunk)

    def result(self) -> dict:
        """``arrays`` (one 1-D array per channel), ``channel_names``, ``fs`` and
        ``n_samples`` (per channel), ``start_uutc``/``end_uutc`` (the window; every
        channel's first sample is at ``start_uutc``), ``error_message``; ``arrays`` is
        None on error."""
        parts = {}
        for asm, index in self.groups.values():
            res = asm.result()
            if res["array"] is None:
                self.error = self.error or res["error_message"]
                break
            for k, i in enumerate(index):
                parts[i] = (res["channel_names"][k], res["array"][k], res["fs"], res)
        if self.error is not None or not parts:
            return {"arrays": None, "channel_names": None, "fs": None, "n_samples": None,
                    "start_uutc": None, "end_uutc": None,
                    "error_message": self.error or "No data returned."}
        order = [parts[i] for i in sorted(parts)]
        return {"arrays": [p[1] for p in order], "channel_names": [p[0] for p in order],
                "fs": [p[2] for p in order], "n_samples": [p[1].size for p in order],
                "start_uutc": min(p[3]["start_uutc"] for p in order),
                "end_uutc": max(p[3]["end_uutc"] for p in order),
                "dtype": order[0][3]["dtype"], "error_message": ""}


# ------------------------------------------------------------------ envelope

def envelope_request(file_path, channels=None, start_uutc=None, end_uutc=None
                     ) -> pb2.EnvelopeRequest:
    return _with_window(pb2.EnvelopeRequest(file_path=str(file_path),
                                            channel_names=_channels(channels)),
                        start_uutc, end_uutc)


def _with_window(req, start_uutc=None, end_uutc=None):
    """``req`` with its optional ``start_uutc``/``end_uutc`` set when given."""
    if start_uutc is not None:
        req.start_uutc = int(start_uutc)
    if end_uutc is not None:
        req.end_uutc = int(end_uutc)
    return req


class EnvelopeAssembler:
    """Joins ``ChannelEnvelope`` messages (a long channel comes in several) per channel.

    Both clients receive them decoded by :func:`mef3io_server.envelope_codec.decode`
    (arrays straight from the bytes): :meth:`feed_decoded` takes one.
    """

    def __init__(self):
        self.parts: dict[str, dict[str, list]] = {}

    def feed_decoded(self, msg: dict) -> None:
        """Take one message decoded by :func:`mef3io_server.envelope_codec.decode`."""
        if msg["error_message"]:
            raise RequestRefused(msg["error_message"])
        p = self.parts.setdefault(msg["channel_name"], {"start_uutc": [], "end_uutc": [],
                                                        "min": [], "max": []})
        for k in p:
            p[k].append(msg[k])

    def result(self) -> dict:
        return {ch: {k: np.concatenate(v) for k, v in p.items()} for ch, p in self.parts.items()}


def list_open_answer(resp: pb2.ListOpenFilesResponse) -> list[str]:
    if resp.error_message:
        raise RequestRefused(resp.error_message)
    return list(resp.file_paths)


# ------------------------------------------------------------------ records

def records_request(file_path, channels=None, start_uutc=None, end_uutc=None
                    ) -> pb2.RecordsRequest:
    return _with_window(pb2.RecordsRequest(file_path=str(file_path),
                                           channel_names=_channels(channels)),
                        start_uutc, end_uutc)


def record_to_dict(rec: pb2.Record) -> dict:
    """One ``Record`` as a dict: the fixed keys, then every body field of its type.

    ``text`` is None when the record is ``locked`` (its body is encrypted
    beyond the session's access level) or its type has no text;
    ``channel`` is None at session level; ``duration_us`` is None unless the
    type carries a duration (EDFA).
    """
    out = {
        "time_uutc": rec.time_uutc,
        "type": rec.type,
        "text": rec.text if rec.HasField("text") else None,
        "channel": rec.channel if rec.HasField("channel") else None,
        "level": rec.level,
        "segment": rec.segment if rec.HasField("segment") else None,
        "locked": rec.locked,
        "duration_us": rec.duration_us if rec.HasField("duration_us") else None,
    }
    if rec.body_json:
        for k, v in json.loads(rec.body_json).items():
            out.setdefault(k, v)
    return out


def records_answer(chunk: pb2.RecordsChunk) -> list[dict]:
    """The records of one ``RecordsChunk``; :class:`RequestRefused` with the server's message."""
    if chunk.error_message:
        raise RequestRefused(chunk.error_message)
    return [record_to_dict(r) for r in chunk.records]


# ------------------------------------------------------------------ segments

def segments_request(file_path, channels=None) -> pb2.SegmentsRequest:
    return pb2.SegmentsRequest(file_path=str(file_path), channel_names=_channels(channels))


class SegmentsAssembler:
    """Joins ``ChannelSegments`` messages (a channel with many runs comes in several).

    Result: ``{channel: {"fs": Hz, "runs": [{start_uutc, end_uutc,
    start_sample, number_of_samples}, ...], "gaps": [{start_uutc, end_uutc},
    ...]}}`` in the server's channel order; runs are half-open
    ``[start_uutc, end_uutc)`` and a gap is the time between two runs.
    """

    def __init__(self):
        self.channels: dict[str, dict] = {}

    def feed(self, msg: pb2.ChannelSegments) -> None:
        if msg.error_message:
            raise RequestRefused(msg.error_message)
        ch = self.channels.setdefault(msg.channel_name, {"fs": msg.sampling_rate, "runs": []})
        ch["runs"].extend(
            {"start_uutc": a, "end_uutc": b, "start_sample": s, "number_of_samples": n}
            for a, b, s, n in zip(msg.start_uutc, msg.end_uutc, msg.start_sample,
                                  msg.number_of_samples))

    def result(self) -> dict:
        for ch in self.channels.values():
            runs = ch["runs"]
            ch["gaps"] = [{"start_uutc": a["end_uutc"], "end_uutc": b["start_uutc"]}
                          for a, b in zip(runs, runs[1:])]
        return self.channels


# ------------------------------------------------------------------ discovery

def list_recordings_request(root=None, recursive=True) -> pb2.ListRecordingsRequest:
    req = pb2.ListRecordingsRequest(recursive=bool(recursive))
    if root is not None:
        req.root = str(root)
    return req


def recording_entry_to_dict(e: pb2.RecordingEntry) -> dict:
    """One listed session. Rates are 0.0 (and ``encrypted`` True) when locked."""
    return {
        "path": e.path,
        "number_of_channels": e.number_of_channels,
        "start_uutc": e.start_uutc,
        "end_uutc": e.end_uutc,
        "min_sampling_rate": e.min_sampling_rate,
        "max_sampling_rate": e.max_sampling_rate,
        "size_bytes": e.size_bytes,
        "encrypted": e.encrypted,
        "error_message": e.error_message if e.HasField("error_message") else None,
    }


def recordings_answer(chunk: pb2.RecordingsChunk) -> list[dict]:
    """The entries of one ``RecordingsChunk``; :class:`RequestRefused` with the server's message."""
    if chunk.error_message:
        raise RequestRefused(chunk.error_message)
    return [recording_entry_to_dict(e) for e in chunk.recordings]
