"""What the synchronous and asyncio clients share: everything but sending.

Like httpx's ``BaseClient`` under ``Client`` and ``AsyncClient``:
:class:`BaseClient` holds the connection's settings (address, client id,
call metadata, deadline, TLS), remembers what each ``open_file`` answered, and
writes every operation of the protocol once, as a generator that yields the
calls it needs (:class:`Unary`, :class:`Stream`) and receives their answers.
:class:`mef3io_server.client.Mef3Client` runs these generators with blocking
gRPC calls, :class:`mef3io_server.aio.AsyncMef3Client` with ``await``: that
is all that differs between them. Messages are built and answers parsed by
:mod:`mef3io_server.messages`; errors are mapped to one hierarchy by
:mod:`mef3io_server.exceptions`; times are read by
:mod:`mef3io_server.timespec`. Nothing here touches the network.

Times (``start_uutc``, ``end_uutc`` of every call that takes them) may be
given as uUTC integers, ISO 8601 text, ``datetime``, ``numpy.datetime64``, or
offsets from the recording's start (``"+10m"``, ``timedelta``):
:func:`mef3io_server.timespec.to_uutc`. Before a read, the window is checked
against the channels' data as this client last saw it
(:mod:`mef3io_server.window_check`).
"""
from __future__ import annotations

import os
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generator, Optional, Sequence, Union

import grpc

from . import envelope_codec, messages, montages, routing, signal_chunk_codec, timespec
from .exceptions import (InvalidArgument, Mef3Error, OpenFailed, ReadFailed, RequestRefused,
                         WindowOutsideData, WindowWarning, from_rpc_error)
from .protobufs import gRPCMef3Server_pb2 as pb2
from .protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from .reopen import OpenedFiles, Pause, reopened
from .window_check import WindowCheck, data_span

#: The environment variable naming the server when a client is given no address.
ADDRESS_VARIABLE = "MEF3IO_ADDRESS"
DEFAULT_PORT = 50051
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def resolve_address(address: Optional[str] = None) -> str:
    """``host:port`` to connect to: ``address``, else ``$MEF3IO_ADDRESS``, else
    ``localhost:50051``; a host without a port gets port 50051 (gRPC's own
    default would be 443). Targets with a scheme (``dns:``, ``unix:``, ...) are kept."""
    address = (address if address is not None
               else os.environ.get(ADDRESS_VARIABLE, "").strip() or messages.DEFAULT_ADDRESS)
    address = str(address).strip()
    if not address:
        raise InvalidArgument("the server address is empty: give host:port")
    if ":/" in address or address.split(":", 1)[0] in ("unix", "unix-abstract", "dns",
                                                         "ipv4", "ipv6", "vsock"):
        return address
    if address.startswith("["):
        return address if "]:" in address else f"{address}:{DEFAULT_PORT}"
    if address.count(":") > 1:                     # a bare IPv6 address
        return f"[{address}]:{DEFAULT_PORT}"
    if ":" not in address:
        return f"{address}:{DEFAULT_PORT}"
    host, port = address.rsplit(":", 1)
    if not port.isdigit():
        raise InvalidArgument(f"cannot read the server address {address!r}: give host:port, "
                              f"e.g. localhost:{DEFAULT_PORT}")
    return address


def _read_bytes(value: Union[None, str, bytes]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def make_channel(address: str, *, root_certificates=None, private_key=None,
                 certificate_chain=None, aio: bool = False, interceptors=()):
    """A gRPC channel to ``address``: TLS when ``root_certificates`` is given;
    ``interceptors`` for the channel's kind (see :func:`.routing.interceptors`)."""
    mod = grpc.aio if aio else grpc
    extra = {"interceptors": list(interceptors)} if aio and interceptors else {}
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read_bytes(root_certificates),
            private_key=_read_bytes(private_key),
            certificate_chain=_read_bytes(certificate_chain))
        channel = mod.secure_channel(address, creds, options=messages.channel_options(aio), **extra)
    else:
        channel = mod.insecure_channel(address, options=messages.channel_options(aio), **extra)
    if interceptors and not aio:
        channel = grpc.intercept_channel(channel, *interceptors)
    return channel


def make_stub(channel) -> pb2_grpc.gRPCMef3ServerStub:
    """The generated stub, except that signal chunks and envelopes are decoded straight
    from the received bytes (samples read in place, see :mod:`.signal_chunk_codec` and
    :mod:`.envelope_codec`), on sync and asyncio channels alike."""
    stub = pb2_grpc.gRPCMef3ServerStub(channel)
    stub.GetSignalRange = channel.unary_stream(
        "/gRPCMef3Server/GetSignalRange",
        request_serializer=pb2.SignalRangeRequest.SerializeToString,
        response_deserializer=signal_chunk_codec.decode)
    stub.GetEnvelope = channel.unary_stream(
        "/gRPCMef3Server/GetEnvelope",
        request_serializer=pb2.EnvelopeRequest.SerializeToString,
        response_deserializer=envelope_codec.decode)
    return stub


@dataclass(frozen=True)
class Unary:
    """A call with one answer, which the client sends back into the operation."""

    rpc: str
    request: object
    path: Optional[str] = None


@dataclass(frozen=True)
class Stream:
    """A streaming call: each message goes to ``feed``; ``feed`` returning False stops it."""

    rpc: str
    request: object
    feed: Callable[[object], Optional[bool]]
    path: Optional[str] = None


Call = Union[Unary, Stream, Pause]   # Pause: wait (see mef3io_server.reopen)
#: An operation: yields calls, receives their answers (None for a stream), returns the result.
Operation = Generator[Call, object, object]


@dataclass(frozen=True)
class Done:
    """What an operation returned."""

    value: object


class _FileMemory:
    """What ``open_file``/``get_file_info`` last answered per path (at most ``MAX`` paths)."""

    MAX = 1024

    def __init__(self):
        self._infos: "OrderedDict[str, dict]" = OrderedDict()

    def get(self, path: str) -> Optional[dict]:
        return self._infos.get(path)

    def remember(self, path: str, info: dict) -> None:
        self._infos[path] = info
        self._infos.move_to_end(path)
        while len(self._infos) > self.MAX:
            self._infos.popitem(last=False)

    def forget(self, path: str) -> None:
        self._infos.pop(path, None)


def _warn(message: str) -> None:
    """Warn :class:`WindowWarning`, attributed to the first caller outside this package."""
    level, frame = 2, sys._getframe(1)     # stacklevel 1 is this function
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) \
            == _PACKAGE_DIR:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, WindowWarning, stacklevel=level)


class BaseClient:
    """The state and the operations both clients share (see the module docstring).

    ``raise_errors=True`` turns the answers that report a failure in a dict
    (``open_file`` with ``file_opened`` False, ``get_signal_range`` with
    ``array`` None, ``get_file_info``/``close_file`` with an ``error_message``)
    into exceptions (:class:`~mef3io_server.exceptions.OpenFailed`,
    :class:`~mef3io_server.exceptions.ReadFailed`,
    :class:`~mef3io_server.exceptions.RequestRefused`), and a read window
    holding no data into :class:`~mef3io_server.exceptions.WindowOutsideData`.
    Every other failure raises in both modes.
    """

    CLIENT_ID_KEY = messages.CLIENT_ID_KEY
    _aio = False

    def __init__(self, address: Optional[str] = None, client_id: Optional[str] = None, *,
                 root_certificates=None, private_key=None, certificate_chain=None,
                 token: Optional[str] = None, timeout: Optional[float] = None,
                 raise_errors: bool = False):
        self.address = resolve_address(address)
        self.client_id = messages.check_client_id(client_id)
        self._metadata = messages.call_metadata(self.client_id, token)
        self._timeout = timeout
        self._tls = root_certificates is not None
        self.raise_errors = bool(raise_errors)
        self._files = _FileMemory()
        # Files opened here, with their open arguments: opened again after a move
        # (mef3io_server.reopen), and claimed in the routing metadata (.routing).
        self._opened = OpenedFiles()
        self.channel = make_channel(
            self.address, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, aio=self._aio,
            interceptors=routing.interceptors(self._opened.__contains__, aio=self._aio))
        self.stub = make_stub(self.channel)

    def call_options(self) -> dict:
        """Keyword arguments of every call: metadata (client id, token) and deadline.

        For calling :attr:`stub` directly with this client's identity:
        ``client.stub.GetSignalRange(request, **client.call_options())``.
        """
        return {"metadata": self._metadata, "timeout": self._timeout}

    # ------------------------------------------------------------ driving an operation
    # Each client runs an operation as: step = _advance(op); while it is a Call,
    # step = _advance(op, *outcome of sending it); the Done's value is the result.

    @staticmethod
    def _advance(op: Operation, answer=None, error: Optional[BaseException] = None):
        """Resume ``op`` with the last call's answer (or throw its error into it): its next
        :class:`Unary`/:class:`Stream`, or :class:`Done` with what it returned."""
        try:
            return op.throw(error) if error is not None else op.send(answer)
        except StopIteration as done:
            return Done(done.value)

    def _failed(self, err: grpc.RpcError, call: Call) -> tuple[None, Mef3Error]:
        """The outcome of a call that ended with a gRPC status other than OK."""
        return None, from_rpc_error(err, address=self.address, tls=self._tls, rpc=call.rpc,
                                    path=call.path, timeout=self._timeout)

    @staticmethod
    def _take(call: Stream, message) -> bool:
        """Give one streamed message to ``call.feed``; False: stop reading. An error it raises
        gets the call's rpc and path."""
        try:
            return call.feed(message) is not False
        except Mef3Error as err:
            err.rpc = err.rpc or call.rpc
            err.path = err.path or call.path
            raise

    # ------------------------------------------------------------ shared steps

    def _times(self, path: str, *values):
        """The uUTC of each time in ``values`` (None stays None); an offset from the
        recording's start needs its metadata (remembered, or asked with ``FileInfo``)."""
        if all(type(v) is int for v in values):        # the common case, uUTC already
            return values
        origin = None
        if any(v is not None and timespec.needs_origin(v) for v in values):
            info = yield from self._known_info(path)
            origin = int(info["start_uutc"])
        try:
            return tuple(None if v is None else timespec.to_uutc(v, origin) for v in values)
        except Mef3Error as e:
            e.path = path
            raise

    def _known_info(self, path: str):
        info = self._files.get(path)
        if info is None:
            info = messages.file_info_to_dict(
                (yield Unary("FileInfo", messages.file_info_request(path), path)))
            if not info["file_opened"]:
                raise InvalidArgument(f"a time from the recording's start needs its start, but "
                                      f"the server says: {info['error_message']}", path=path)
            self._files.remember(path, info)
        return info

    def _check_window(self, path: str, channels, t0: int, t1: int):
        """Warn (or with ``raise_errors``, refuse a window with no data) when a read's
        window lies mostly outside the channels' data as this client last saw it."""
        info = self._files.get(path)
        span = data_span(info, channels) if info is not None else None
        if span is None or t1 <= t0 or span[0] <= t0 < t1 <= span[1]:
            return
        check = WindowCheck(t0, t1, *span)
        if check.mostly_outside and check.after_us:
            # The recording may have grown since: ask once more before saying so.
            fresh = messages.file_info_to_dict(
                (yield Unary("FileInfo", messages.file_info_request(path), path)))
            if fresh["file_opened"]:
                self._files.remember(path, fresh)
                check = WindowCheck(t0, t1, *(data_span(fresh, channels) or span))
        if check.outside and self.raise_errors:
            raise WindowOutsideData(check.message(), rpc="GetSignalRange", path=path)
        if check.mostly_outside:
            _warn(f"{path}: {check.message()}")

    def _refused(self, answer: dict, rpc: str, path: str, error=RequestRefused) -> dict:
        """``answer``, or with ``raise_errors`` its ``error_message`` raised as ``error``."""
        if self.raise_errors and answer.get("error_message"):
            raise error(answer["error_message"], rpc=rpc, path=path)
        return answer

    def _reopened(self, file_path, make_op):
        """``make_op()``, run once more after opening the file again when the server
        says this client's session on it is gone (see :mod:`mef3io_server.reopen`)."""
        return reopened(self._opened, str(file_path), make_op, self._open_file)

    # ------------------------------------------------------------ operations

    def _open_file(self, file_path, cache_fs=None, allow_mixed_rates=False, password=None):
        resp = yield Unary("OpenFile", messages.open_file_request(file_path, cache_fs,
                                                              allow_mixed_rates, password),
                           str(file_path))
        info = messages.check_open_answer(resp, cache_fs)
        self._opened.remember(str(file_path), info, cache_fs=cache_fs,
                              allow_mixed_rates=allow_mixed_rates, password=password)
        if info["file_opened"]:
            self._files.remember(str(file_path), info)
            return info
        self._files.forget(str(file_path))
        if self.raise_errors:
            raise OpenFailed(info["error_message"] or "the server did not open it",
                             rpc="OpenFile", path=str(file_path))
        return info

    def _get_file_info(self, file_path):
        return self._reopened(file_path, lambda: self._file_info_once(file_path))

    def _file_info_once(self, file_path):
        info = messages.file_info_to_dict(
            (yield Unary("FileInfo", messages.file_info_request(file_path), str(file_path))))
        if info["file_opened"]:
            self._files.remember(str(file_path), info)
        return self._refused(info, "FileInfo", str(file_path))

    def _close_file(self, file_path):
        self._files.forget(str(file_path))
        self._opened.forget(str(file_path))
        answer = messages.close_answer(
            (yield Unary("CloseFile", messages.file_info_request(file_path), str(file_path))))
        return self._refused(answer, "CloseFile", str(file_path))

    def _list_open_files(self):
        return messages.list_open_answer((yield Unary("ListOpenFiles", pb2.ListOpenFilesRequest())))

    def _get_signal_range(self, file_path, channels: Optional[Sequence[str]], start_uutc,
                          end_uutc, n_points=None, dtype=None, montage=None, filters=None,
                          mixed_rates=False):
        path = str(file_path)
        t0, t1 = yield from self._times(path, start_uutc, end_uutc)
        if t0 is None or t1 is None:
            raise InvalidArgument("get_signal_range needs both start_uutc and end_uutc",
                                  path=path)
        try:
            request = messages.signal_request(path, channels, t0, t1, n_points, dtype, montage,
                                          filters, mixed_rates)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(str(e), path=path) from None
        if montage is not None:       # the window is checked against the inputs' data
            channels = list({c: None for d in montages.as_montage(montage)
                             for c in (*d.weights, *d.average_of)})
        yield from self._check_window(path, channels, t0, t1)
        return (yield from self._reopened(path, lambda: self._signal_once(path, request,
                                                                          n_points, dtype)))

    def _signal_once(self, path: str, request, n_points, dtype):
        mixed = request.mixed_rates
        asm = (messages.MixedRateAssembler if mixed else messages.SignalAssembler)(n_points, dtype)
        yield Stream("GetSignalRange", request, asm.feed, path)
        res = asm.result()
        if res["arrays" if mixed else "array"] is None:
            return self._refused(res, "GetSignalRange", path, ReadFailed)
        return res

    def _get_envelope(self, file_path, channels=None, start_uutc=None, end_uutc=None):
        path = str(file_path)
        t0, t1 = yield from self._times(path, start_uutc, end_uutc)
        return (yield from self._reopened(path, lambda: self._envelope_once(path, channels,
                                                                            t0, t1)))

    def _envelope_once(self, path: str, channels, t0, t1):
        asm = messages.EnvelopeAssembler()
        yield Stream("GetEnvelope", messages.envelope_request(path, channels, t0, t1),
                     asm.feed_decoded, path)
        return asm.result()

    def _get_records(self, file_path, channels=None, start_uutc=None, end_uutc=None):
        path = str(file_path)
        t0, t1 = yield from self._times(path, start_uutc, end_uutc)
        return (yield from self._reopened(path, lambda: self._records_once(path, channels,
                                                                           t0, t1)))

    def _records_once(self, path: str, channels, t0, t1):
        out: list = []
        yield Stream("GetRecords", messages.records_request(path, channels, t0, t1),
                     lambda chunk: out.extend(messages.records_answer(chunk)), path)
        return out

    def _get_segments(self, file_path, channels=None):
        return self._reopened(file_path, lambda: self._segments_once(file_path, channels))

    def _segments_once(self, file_path, channels=None):
        asm = messages.SegmentsAssembler()
        yield Stream("GetSegments", messages.segments_request(file_path, channels), asm.feed,
                     str(file_path))
        return asm.result()

    def _list_recordings(self, root=None, recursive=True, progress=None):
        out: list = []

        def take(chunk) -> None:
            out.extend(messages.recordings_answer(chunk))
            if progress is not None:
                progress(len(out))

        yield Stream("ListRecordings", messages.list_recordings_request(root, recursive), take,
                     None if root is None else str(root))
        return out
