"""The gRPC service: messages in, engine calls, messages out. Nothing else.

Every RPC of ``gRPCMef3Server`` maps to one :class:`~.engine.Engine` method.
Errors become ``error_message`` (unary: in the answer; streaming: one message,
then the stream ends) with gRPC status OK, as docs/protocol.md requires; an
unexpected exception is logged with its traceback and answered with a short
"internal error" message, and the server keeps serving.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from functools import lru_cache
from typing import Iterator

import grpc
import numpy as np

from ..protobufs import gRPCMef3Server_pb2 as pb2
from ..protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from . import callers
from .annotations import Annotation
from .callers import Caller
from .discovery import RecordingSummary
from .. import envelope_codec
from ..protobuf_encoding import LEN, field_key, varint_bytes
from ..messages import CLIENT_ID_KEY
from .decode import cancel_token
from .derived_reads import DerivedSpec
from .engine import Engine, FileInfo
from .errors import BadRequest, ServerError
from .filtering import parse_filters
from .mixed_rates import read_mixed
from .montage import parse_montage
from .recent_keys import RecentKeys
from .segments import runs_slices

log = logging.getLogger("mef3io_server.service")

SESSION_REQUIRED_KEY = "x-mef3io-session-required"   # = mef3io_server.routing's
RECORDS_PER_MESSAGE = 1_000
RUNS_PER_MESSAGE = 50_000
RECORDINGS_PER_MESSAGE = 100


def client_id_of(context: grpc.ServicerContext) -> str:
    """The caller's client id from metadata ("" = the shared default session)."""
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID_KEY:
            if isinstance(value, bytes) or not (0 < len(value) <= 128) or not value.isprintable():
                raise BadRequest(f"{CLIENT_ID_KEY} must be 1 to 128 printable characters")
            return value
    return ""


def session_required(context: grpc.ServicerContext) -> bool:
    """True when the caller says it opened the file itself (``x-mef3io-session-required``):
    a missing session of its own is then answered "not open", not read around."""
    return any(k == SESSION_REQUIRED_KEY for k, _ in context.invocation_metadata() or ())


def origin_of(context: grpc.ServicerContext) -> str:
    """The caller's address without its port ("ipv4:10.0.0.7:5123" -> "ipv4:10.0.0.7")."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return kind + ":" + rest.rsplit(":", 1)[0]
    return peer


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller: identity (set by the admission), client id, origin."""
    return Caller(callers.current().identity, client_id_of(context), origin_of(context))


def _internal(what: str, exc: BaseException) -> str:
    log.exception("internal error in %s", what)
    return f"internal error in {what}: {type(exc).__name__}: {exc}"[:1000]


def file_info_message(info: FileInfo, opened: bool = True) -> pb2.FileInfoResponse:
    msg = pb2.FileInfoResponse(
        file_path=info.client_path, file_opened=opened,
        number_of_channels=len(info.channel_names),
        channel_names=info.channel_names,
        channel_sampling_rates=info.sampling_rates,
        start_uutc=info.start_uutc, end_uutc=info.end_uutc, duration_s=info.duration_s,
        channel_start_uutc=info.channel_start_uutc, channel_end_uutc=info.channel_end_uutc,
        channel_served_sampling_rates=info.served_rates,
        channel_sampling_rates_exact=info.sampling_rates,
        channel_units=info.units, encrypted=info.encrypted, access_level=info.access_level,
        channel_units_conversion_factors=info.units_factors,
        channel_descriptions=info.descriptions)
    if info.cache_fs is not None:
        msg.cache_fs = info.cache_fs
    return msg


class Mef3Service(pb2_grpc.gRPCMef3ServerServicer):
    """``gRPCMef3Server`` on top of an :class:`Engine`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._envelopes = KeptEncodings(ENVELOPES_KEPT_BYTES)
        self.answers = KeptEncodings(ANSWERS_KEPT_BYTES)

    def _caller(self, context, client_path: str) -> Caller:
        """The caller's client id; when it says it opened the file itself, only if
        its session on the file is here (else NotOpen: see Engine.require_session)."""
        cid = caller_of(context)
        if session_required(context):
            self.engine.require_session(cid, client_path)
        return cid

    # ---- unary ----

    def OpenFile(self, request, context):
        try:
            cid = caller_of(context)
            info = self.engine.open_file(
                cid, request.file_path,
                cache_fs=request.cache_fs if request.HasField("cache_fs") else None,
                allow_mixed_rates=bool(request.allow_mixed_rates),
                password=request.password if request.HasField("password") else "")
            return file_info_message(info)
        except ServerError as e:
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=str(e))
        except Exception as e:  # noqa: BLE001
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=_internal("OpenFile", e))

    def CloseFile(self, request, context):
        try:
            cid = caller_of(context)
            self.engine.close_file(cid, request.file_path)
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False)
        except ServerError as e:
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=str(e))
        except Exception as e:  # noqa: BLE001
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=_internal("CloseFile", e))

    def FileInfo(self, request, context):
        try:
            cid = self._caller(context, request.file_path)
            return file_info_message(self.engine.file_info(cid, request.file_path))
        except ServerError as e:
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=str(e))
        except Exception as e:  # noqa: BLE001
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=_internal("FileInfo", e))

    def ListOpenFiles(self, request, context):
        try:
            return pb2.ListOpenFilesResponse(
                file_paths=self.engine.list_open_files(callers.current()))
        except Exception as e:  # noqa: BLE001
            return pb2.ListOpenFilesResponse(error_message=_internal("ListOpenFiles", e))

    # ---- streaming ----

    def GetSignalRange(self, request, context) -> Iterator[pb2.SignalChunk]:
        path = request.file_path
        try:
            cid = self._caller(context, path)
            # Fired when the call ends for any reason: a client that cancels (or
            # whose deadline passes) stops the read's own decodes.
            cancel = cancel_token()
            context.add_callback(cancel.cancel)
            args = (cid, path, list(request.channel_names), request.start_uutc,
                    request.end_uutc, request.n_points if request.HasField("n_points") else None)
            kw = dict(dtype=request.dtype or "float32",
                      derived=derived_spec(request, self.engine.settings.max_channels_per_read),
                      cancel=cancel)
            if request.mixed_rates:         # one read per rate, its chunks marked (+ group)
                groups = [(g.read, pb2.SignalChunk(group=k, channel_index=g.index)
                           .SerializeToString()) for k, g in enumerate(read_mixed(
                               self.engine, *args, **kw))]
            else:
                groups = [(self.engine.read_signal(*args, **kw), b"")]
            for read, group in groups:
                yield from self._signal_chunks(path, read, group)
        except ServerError as e:
            yield pb2.SignalChunk(file_path=path, error_message=str(e))
        except Exception as e:  # noqa: BLE001
            yield pb2.SignalChunk(file_path=path, error_message=_internal("GetSignalRange", e))

    def _signal_chunks(self, path: str, read, group: bytes = b""):
        """The chunks of one read as wire bytes; ``group``: fields added to each (serialized)."""
        encoder = SignalChunkEncoder(path, read.channel_names, read.fs, read.n_samples,
                                     read.dtype, group)
        if not read.shared:                     # assembled for this read alone
            for a, b, j0, rows in read.chunks:
                yield encoder.encode(rows, a, b, j0)   # wire bytes; see serialize_signal_chunk
            return
        for a, b, j0, rows in read.chunks:
            # A window shared by everyone (read-only, see SignalRead.shared): its
            # message is kept, from its second asker on, while that very array lives.
            source = rows if rows.base is None else rows.base
            key = (path, tuple(read.channel_names), float(read.fs), read.n_samples,
                   a, b, j0, rows.shape, read.dtype, group)
            kept = self.answers.get(key, source)
            if kept is None:
                kept = [encoder.encode(rows, a, b, j0)]
                self.answers.put(key, source, kept, when_offered_twice=True)
            yield kept[0]

    def GetEnvelope(self, request, context) -> Iterator[pb2.ChannelEnvelope]:
        """``GetEnvelope`` as messages (the server sends :meth:`GetEnvelopeEncoded`'s bytes)."""
        for raw in self.GetEnvelopeEncoded(request, context):
            yield pb2.ChannelEnvelope.FromString(raw)

    def GetEnvelopeEncoded(self, request, context) -> Iterator[bytes]:
        """``GetEnvelope`` sending wire bytes built by :mod:`..envelope_codec` (no lists)."""
        path = request.file_path
        try:
            cid = self._caller(context, path)
            t0 = request.start_uutc if request.HasField("start_uutc") else None
            t1 = request.end_uutc if request.HasField("end_uutc") else None
            step = self.engine.settings.envelope_rows_per_message
            whole = t0 is None and t1 is None
            for name, env in self.engine.envelope(cid, path, list(request.channel_names), t0, t1):
                msgs = self._envelopes.get((path, name, step), env["start_uutc"]) \
                    if whole else None
                if msgs is None:
                    n = len(env["start_uutc"])
                    msgs = [envelope_codec.encode(path, name, env["start_uutc"][i:i + step],
                                                  env["end_uutc"][i:i + step],
                                                  env["min"][i:i + step], env["max"][i:i + step])
                            for i in range(0, max(n, 1), step)]
                    if whole:
                        self._envelopes.put((path, name, step), env["start_uutc"], msgs)
                yield from msgs
        except ServerError as e:
            yield envelope_codec.encode(path, "", error_message=str(e))
        except Exception as e:  # noqa: BLE001
            yield envelope_codec.encode(path, "", error_message=_internal("GetEnvelope", e))

    # ---- additions: annotations, runs, discovery ----

    @staticmethod
    def _streamed(what: str, failed, produce) -> Iterator:
        """``produce()``'s messages; an error ends the stream with ``failed(message)``."""
        try:
            yield from produce()
        except ServerError as e:
            yield failed(str(e))
        except Exception as e:  # noqa: BLE001
            yield failed(_internal(what, e))

    def GetRecords(self, request, context) -> Iterator[pb2.RecordsChunk]:
        path = request.file_path

        def produce():
            cid = self._caller(context, path)
            found = self.engine.records(cid, path, list(request.channel_names),
                                        _optional(request, "start_uutc"),
                                        _optional(request, "end_uutc"))
            for i in range(0, max(len(found), 1), RECORDS_PER_MESSAGE):
                yield pb2.RecordsChunk(file_path=path, records=[
                    record_message(a) for a in found[i:i + RECORDS_PER_MESSAGE]])

        return self._streamed("GetRecords", lambda m: pb2.RecordsChunk(
            file_path=path, error_message=m), produce)

    def GetSegments(self, request, context) -> Iterator[pb2.ChannelSegments]:
        path = request.file_path

        def produce():
            cid = self._caller(context, path)
            for runs in self.engine.segments(cid, path, list(request.channel_names)):
                for i0, i1 in runs_slices(runs, RUNS_PER_MESSAGE):
                    yield pb2.ChannelSegments(
                        file_path=path, channel_name=runs.name, sampling_rate=runs.fs,
                        start_uutc=runs.start_uutc[i0:i1].tolist(),
                        end_uutc=runs.end_uutc[i0:i1].tolist(),
                        start_sample=runs.start_sample[i0:i1].tolist(),
                        number_of_samples=runs.number_of_samples[i0:i1].tolist())

        return self._streamed("GetSegments", lambda m: pb2.ChannelSegments(
            file_path=path, error_message=m), produce)

    def ListRecordings(self, request, context) -> Iterator[pb2.RecordingsChunk]:
        def produce():
            recursive = request.recursive if request.HasField("recursive") else True
            batch = []
            for s in self.engine.list_recordings(_optional(request, "root"), recursive,
                                                 context.is_active, callers.current()):
                batch.append(recording_entry_message(s))
                if len(batch) >= RECORDINGS_PER_MESSAGE:
                    yield pb2.RecordingsChunk(recordings=batch)
                    batch = []
            yield pb2.RecordingsChunk(recordings=batch)

        return self._streamed("ListRecordings", lambda m: pb2.RecordingsChunk(error_message=m),
                              produce)


#: Wire messages kept of whole-channel envelopes, and of windows kept for everyone
#: (bytes, on top of TILE_CACHE_MB; see KeptEncodings).
ENVELOPES_KEPT_BYTES = 64 << 20
ANSWERS_KEPT_BYTES = 32 << 20


class KeptEncodings:
    """Wire messages kept for the next asker while the array they came from lives.

    * Whole-channel envelopes: the block index read when the recording was
      opened (the same arrays for as long as that version of the files is
      open); encoding costs ~22 ms per day of 64 channels, sending it less.
    * Windows the tile store shares (a viewer redrawing, several tools on one
      window): the read-only array from the cache; from the window's second
      asker on (see :meth:`put`) the message is kept instead of copying the
      samples again on every read.

    An entry holds a weak reference to the array it was encoded from, so it
    is used only while that very array is alive and is the one asked with:
    a re-opened, appended or replaced recording, or a window evicted from the
    tile cache, has new arrays and misses. LRU, at most ``max_bytes`` of
    messages.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.hits = 0
        self._lock = threading.Lock()
        self._items: "OrderedDict[tuple, tuple[weakref.ref, list[bytes], int]]" = OrderedDict()
        self._offered = RecentKeys(self._OFFERED)
        self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of the messages kept now."""
        with self._lock:
            return self._bytes

    def entries(self) -> list:
        """``(key, (source ref, messages, size))`` of each kept answer, oldest first."""
        with self._lock:
            return list(self._items.items())

    def get(self, key: tuple, source: np.ndarray):
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            if entry[0]() is not source:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple, source: np.ndarray, msgs: list, *,
            when_offered_twice: bool = False) -> None:
        """Keep ``msgs`` (bytes or :class:`EncodedChunk`) for ``key`` while ``source`` lives.

        ``when_offered_twice``: keep them only if this key was offered before
        (a window asked for twice). A window read once (the next page a steady
        reader was given ahead) keeps nothing: its message would take new
        memory on every page, for a message never sent again.
        """
        size = sum(len(m.data) if isinstance(m, EncodedChunk) else len(m) for m in msgs)
        if size > self.max_bytes:
            return
        with self._lock:
            if when_offered_twice and self._offered.add(key):
                return
            self._offered.pop(key, None)
            if key in self._items:
                self._drop(key)
            self._items[key] = (weakref.ref(source), msgs, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    #: Keys offered once and not kept (see :meth:`put`), newest last.
    _OFFERED = 256

    def _drop(self, key: tuple) -> None:
        self._bytes -= self._items.pop(key)[2]


def derived_spec(request: pb2.SignalRangeRequest, max_channels: int):
    """The request's montage and filters as a :class:`.derived_reads.DerivedSpec`, or None.

    Parsed once per distinct montage and filters (a viewer sends the same ones with
    every page: parsing 63 derived channels again each time cost ~0.9 ms per page)."""
    if not request.montage and not request.filters:
        return None
    return _parsed_spec(pb2.SignalRangeRequest(montage=request.montage, filters=request.filters)
                        .SerializeToString(), max_channels)


@lru_cache(maxsize=256)
def _parsed_spec(spec: bytes, max_channels: int):
    request = pb2.SignalRangeRequest.FromString(spec)
    montage = parse_montage(((d.name, d.inputs, d.weights, d.average_of) for d in request.montage),
                            max_channels) if request.montage else None
    return DerivedSpec(montage, parse_filters(
        (f.kind, f.hz, _optional(f, "order"), _optional(f, "q")) for f in request.filters))


def _optional(msg, name: str):
    """An optional field's value, or None when unset."""
    return getattr(msg, name) if msg.HasField(name) else None

def record_message(a: Annotation) -> pb2.Record:
    msg = pb2.Record(time_uutc=a.time_uutc, type=a.type, level=a.level, locked=a.locked,
                     body_json=a.body_json())
    if a.text is not None:
        msg.text = a.text
    if a.channel is not None:
        msg.channel = a.channel
    if a.segment is not None:
        msg.segment = a.segment
    if a.duration_us is not None:
        msg.duration_us = a.duration_us
    return msg


def recording_entry_message(s: RecordingSummary) -> pb2.RecordingEntry:
    msg = pb2.RecordingEntry(
        path=s.path, number_of_channels=s.number_of_channels, start_uutc=s.start_uutc,
        end_uutc=s.end_uutc, min_sampling_rate=s.min_sampling_rate,
        max_sampling_rate=s.max_sampling_rate, size_bytes=s.size_bytes, encrypted=s.encrypted)
    if s.error is not None:
        msg.error_message = s.error
    return msg


# ---- SignalChunk on the wire without extra copies ----
#
# A SignalChunk built the usual way copies its samples three times before gRPC
# sees them (rows.tobytes(), into the message, SerializeToString). Here the
# fields that are the same for every chunk of a read are serialized once, the
# few per-chunk fields are serialized small, and the samples are appended as
# field 2 (array_bytes) straight from the array: one copy. Protobuf parsers
# accept fields in any order, so the bytes are a valid SignalChunk for any client.


_ARRAY_BYTES_TAG = field_key(2, LEN)      # SignalChunk.array_bytes


@lru_cache(maxsize=256)
def _chunk_head(file_path: str, channel_names: tuple, fs: float, total: int,
                dtype: str = "float32") -> bytes:
    """The fields shared by every chunk of a read, serialized (a viewer re-reading
    the same shape of window gets them from here)."""
    return pb2.SignalChunk(file_path=file_path, dtype=dtype, fs=fs,
                           channel_names=channel_names, total_samples=total).SerializeToString()


class SignalChunkEncoder:
    """Encodes the ``SignalChunk`` messages of one read as wire bytes.

    ``rows``: ``(n_channels, n)`` of ``dtype`` (float32 values or int32 stored
    samples, see ``SignalRangeRequest.dtype``); ``a``/``b``: the chunk's uUTC span;
    ``j0``: index of its first sample in the read of ``total`` samples.
    The samples (``array_bytes``, last) start at a multiple of
    :data:`SAMPLES_ALIGN` bytes into the message, thanks to a ``padding``
    field of zeros before them: a client that reads them in place (see
    :mod:`mef3io_server.signal_chunk_codec`) gets an aligned array.
    """

    def __init__(self, file_path: str, channel_names, fs: float, total: int,
                 dtype: str = "float32", extra: bytes = b""):
        self._head = _chunk_head(file_path, tuple(channel_names), float(fs), int(total),
                                 dtype) + extra     # extra: fields of every chunk (serialized)
        self._dtype = np.dtype(dtype)

    def encode(self, rows: np.ndarray, a: int, b: int, j0: int) -> "EncodedChunk":
        rows = np.ascontiguousarray(rows, dtype=self._dtype)
        per_chunk = pb2.SignalChunk(shape=rows.shape, start_uutc=a, end_uutc=b,
                                    sample_offset=j0).SerializeToString()
        size = varint_bytes(rows.nbytes)
        pad = _padding(len(self._head) + len(per_chunk) + len(_ARRAY_BYTES_TAG) + len(size))
        return EncodedChunk(b"".join((self._head, per_chunk, pad, _ARRAY_BYTES_TAG, size,
                                      memoryview(rows.reshape(-1).view(np.uint8)))),
                            rows.nbytes)


#: Alignment of the samples in an encoded SignalChunk, bytes.
SAMPLES_ALIGN = 16
_PADDING_TAG = field_key(22, LEN)         # SignalChunk.padding


@lru_cache(maxsize=64)
def _padding(before: int) -> bytes:
    """The ``padding`` field that makes ``before`` bytes a multiple of SAMPLES_ALIGN
    (empty when they are): its tag, its length and that many zeros."""
    need = -before % SAMPLES_ALIGN
    if need == 0:
        return b""
    smallest = len(_PADDING_TAG) + 1            # tag, length 0
    if need < smallest:
        need += SAMPLES_ALIGN
    return _PADDING_TAG + varint_bytes(need - smallest) + bytes(need - smallest)


class EncodedChunk:
    """A SignalChunk already in wire form (``data``) and its sample payload size in bytes."""

    __slots__ = ("data", "sample_bytes")

    def __init__(self, data: bytes, sample_bytes: int):
        self.data = data
        self.sample_bytes = sample_bytes


def serialize_signal_chunk(message) -> bytes:
    """GetSignalRange's response serializer: encoded bytes pass through, messages serialize."""
    if isinstance(message, EncodedChunk):
        return message.data
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


#: RPCs whose handler yields wire bytes (or EncodedChunk) instead of messages:
#: RPC name -> the servicer method that does.
PRE_ENCODED = {"GetSignalRange": "GetSignalRange", "GetEnvelope": "GetEnvelopeEncoded"}


def add_to_server(servicer: pb2_grpc.gRPCMef3ServerServicer, server: grpc.Server) -> None:
    """Register ``servicer`` like the generated ``add_gRPCMef3ServerServicer_to_server``,
    every RPC of the service, except that GetSignalRange uses :func:`serialize_signal_chunk`."""
    from google.protobuf import message_factory

    desc = pb2.DESCRIPTOR.services_by_name["gRPCMef3Server"]
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    handlers = {}
    for m in desc.methods:
        request = message_factory.GetMessageClass(m.input_type)
        response = message_factory.GetMessageClass(m.output_type)
        serializer = serialize_signal_chunk if m.name in PRE_ENCODED \
            else response.SerializeToString
        behaviour = getattr(servicer, PRE_ENCODED.get(m.name, m.name))
        handlers[m.name] = kinds[(m.client_streaming, m.server_streaming)](
            behaviour, request_deserializer=request.FromString,
            response_serializer=serializer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(desc.full_name, handlers),))
    server.add_registered_method_handlers(desc.full_name, handlers)
