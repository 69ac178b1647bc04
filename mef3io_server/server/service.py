"""The gRPC service: messages in, engine calls, messages out. Nothing else.

Every RPC of ``gRPCMef3Server`` maps to one :class:`~.engine.Engine` method.
Errors become ``error_message`` (unary: in the answer; streaming: one message,
then the stream ends) with gRPC status OK, as PROTOCOL.md requires; an
unexpected exception is logged with its traceback and answered with a short
"internal error" message, and the server keeps serving.
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import grpc
import numpy as np

from ..protobufs import gRPCMef3Server_pb2 as pb2
from ..protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from .. import envelope_codec
from .engine import Engine, FileInfo
from .errors import BadRequest, ServerError

log = logging.getLogger("mef3io_server.service")

CLIENT_ID_KEY = "x-mef3io-client-id"


def client_id_of(context: grpc.ServicerContext) -> str:
    """The caller's client id from metadata ("" = the shared default session)."""
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID_KEY:
            if isinstance(value, bytes) or not (0 < len(value) <= 128) or not value.isprintable():
                raise BadRequest(f"{CLIENT_ID_KEY} must be 1 to 128 printable characters")
            return value
    return ""


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
        channel_units=info.units, encrypted=info.encrypted, access_level=info.access_level)
    if info.cache_fs is not None:
        msg.cache_fs = info.cache_fs
    return msg


class Mef3Service(pb2_grpc.gRPCMef3ServerServicer):
    """``gRPCMef3Server`` on top of an :class:`Engine`."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ---- unary ----

    def OpenFile(self, request, context):
        try:
            cid = client_id_of(context)
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
            cid = client_id_of(context)
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
            cid = client_id_of(context)
            return file_info_message(self.engine.file_info(cid, request.file_path))
        except ServerError as e:
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=str(e))
        except Exception as e:  # noqa: BLE001
            return pb2.FileInfoResponse(file_path=request.file_path, file_opened=False,
                                        error_message=_internal("FileInfo", e))

    def ListOpenFiles(self, request, context):
        try:
            return pb2.ListOpenFilesResponse(file_paths=self.engine.list_open_files())
        except Exception as e:  # noqa: BLE001
            return pb2.ListOpenFilesResponse(error_message=_internal("ListOpenFiles", e))

    # ---- streaming ----

    def GetSignalRange(self, request, context) -> Iterator[pb2.SignalChunk]:
        path = request.file_path
        try:
            cid = client_id_of(context)
            read = self.engine.read_signal(
                cid, path, list(request.channel_names), request.start_uutc, request.end_uutc,
                request.n_points if request.HasField("n_points") else None)
            names = read.channel_names
            for a, b, j0, rows in read.chunks:
                yield pb2.SignalChunk(
                    file_path=path, array_bytes=rows.tobytes(), dtype="float32",
                    shape=rows.shape, start_uutc=a, end_uutc=b, fs=read.fs,
                    channel_names=names, total_samples=read.n_samples, sample_offset=j0)
        except ServerError as e:
            yield pb2.SignalChunk(file_path=path, error_message=str(e))
        except Exception as e:  # noqa: BLE001
            yield pb2.SignalChunk(file_path=path, error_message=_internal("GetSignalRange", e))

    def GetEnvelope(self, request, context) -> Iterator[pb2.ChannelEnvelope]:
        """``GetEnvelope`` as messages (the server sends :meth:`GetEnvelopeEncoded`'s bytes)."""
        for raw in self.GetEnvelopeEncoded(request, context):
            yield pb2.ChannelEnvelope.FromString(raw)

    def GetEnvelopeEncoded(self, request, context) -> Iterator[bytes]:
        """``GetEnvelope`` sending wire bytes built by :mod:`..envelope_codec` (no lists)."""
        path = request.file_path
        try:
            cid = client_id_of(context)
            t0 = request.start_uutc if request.HasField("start_uutc") else None
            t1 = request.end_uutc if request.HasField("end_uutc") else None
            step = self.engine.settings.envelope_rows_per_message
            for name, env in self.engine.envelope(cid, path, list(request.channel_names), t0, t1):
                n = len(env["start_uutc"])
                for i in range(0, max(n, 1), step):
                    j = i + step
                    yield envelope_codec.encode(path, name, env["start_uutc"][i:j],
                                                env["end_uutc"][i:j], env["min"][i:j],
                                                env["max"][i:j])
        except ServerError as e:
            yield envelope_codec.encode(path, "", error_message=str(e))
        except Exception as e:  # noqa: BLE001
            yield envelope_codec.encode(path, "", error_message=_internal("GetEnvelope", e))


def add_service_to_server(service: Mef3Service, server) -> None:
    """Register ``service`` like the generated ``add_gRPCMef3ServerServicer_to_server``,
    except that ``GetEnvelope`` streams bytes from :meth:`Mef3Service.GetEnvelopeEncoded`
    (the same messages on the wire, without the protobuf runtime's per-row cost)."""

    class _Capture:
        def add_generic_rpc_handlers(self, handlers):
            pass

        def add_registered_method_handlers(self, name, handlers):
            self.name, self.handlers = name, dict(handlers)

    cap = _Capture()
    pb2_grpc.add_gRPCMef3ServerServicer_to_server(service, cap)
    cap.handlers["GetEnvelope"] = grpc.unary_stream_rpc_method_handler(
        service.GetEnvelopeEncoded, request_deserializer=pb2.EnvelopeRequest.FromString,
        response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(cap.name,
                                                                          cap.handlers),))
    server.add_registered_method_handlers(cap.name, cap.handlers)
