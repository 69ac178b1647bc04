"""Call observation: one :class:`CallRecord` per gRPC call, for the metrics and the log.

:class:`CallObserver` is the outermost server interceptor. For every call it
notes who asked (identity and client id, see :mod:`.callers`), what (RPC,
file, window, channel count), how much was streamed (sample bytes), how long
it took and how it ended, and hands the finished record to its listeners
(:mod:`.metrics`, :mod:`.logs`). It also counts the data calls in flight,
which the drain waits for, and tells the :class:`~.workers.StallWatchdog`
when a streaming call's messages are handed to gRPC and taken by the client.

Outcomes: ``ok``; ``error`` (the answer carried an ``error_message``, as the
protocol reports bad requests, even if the client then went away);
``cancelled`` (the client went away before the end); ``stalled`` (cancelled
because the client took no message for ``STREAM_STALL_TIMEOUT_S``);
``invalid_argument`` (the request could not be parsed: the call is answered
with that status and a message naming the RPC, without a traceback in the
log); a gRPC status name in lower case (``unauthenticated``, ...) when the
call was aborted with one; ``internal`` for an unexpected exception.

Control and format characters of what a client sent (client id, file path,
error text quoting them) are recorded as ``?``, so no log line can be forged
or disguised. Only these fields are recorded: never a password, a token or
other metadata.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import grpc
import numpy as np

from ..messages import CLIENT_ID_KEY
from . import callers
from .method_handlers import behavior_of, non_blocking, rebuilt, with_flags
from .workers import StallWatchdog

log = logging.getLogger("mef3io_server.calls")

#: Services whose calls are infrastructure, not data: not counted in flight.
INFRA_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass
class CallRecord:
    """What one call asked for and how it went (times in seconds, sizes in bytes)."""

    method: str                         # full gRPC method, "/pkg.Service/Rpc"
    client_id: str = ""
    identity: str = ""                  # the token's name (callers); "" without tokens
    file: str = ""
    window: Optional[tuple[int, int]] = None   # [start_uutc, end_uutc) when the call has one
    channels: Optional[int] = None      # channel names asked for (0 = all)
    bytes: int = 0                      # sample bytes streamed
    messages: int = 0
    duration_s: float = 0.0
    outcome: str = "ok"
    error: str = ""                     # the error_message answered, if any
    derived: str = ""                   # montage and filters asked, "montage=.. filter=.." (HTTP)
    started: float = 0.0

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]

    @property
    def infrastructure(self) -> bool:
        return self.method.startswith(INFRA_PREFIXES)


def _printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, control and format characters (line and
    paragraph separators, bidirectional overrides, ...) shown as "?" (no log injection)."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


class Malformed:
    """What a request that could not be parsed becomes (gRPC would log a traceback)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _tolerant(deserialize: Callable) -> Callable:
    """``deserialize`` returning :class:`Malformed` instead of raising."""
    def parse(raw: bytes):
        try:
            return deserialize(raw)
        except Exception as e:  # noqa: BLE001 - any parse failure is the client's
            return Malformed(f"{type(e).__name__}: {e}")
    return parse


def _client_id(metadata) -> str:
    for k, v in metadata or ():
        if k == CLIENT_ID_KEY:
            v = v.decode("latin-1") if isinstance(v, bytes) else v
            return _printable(v, 128)
    return ""


def _describe_request(rec: CallRecord, request) -> None:
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", None)
    if not fields:
        return
    if "file_path" in fields:
        rec.file = _printable(request.file_path, 4096)
    if "channel_names" in fields:
        rec.channels = len(request.channel_names)
    if "start_uutc" in fields and "end_uutc" in fields:
        try:
            present = request.HasField("start_uutc") and request.HasField("end_uutc")
        except ValueError:      # not optional fields: always present
            present = True
        if present:
            rec.window = (int(request.start_uutc), int(request.end_uutc))


_ITEMSIZE = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "int16": 2}


def _sample_bytes(message) -> int:
    """Payload bytes of a SignalChunk (from its shape and dtype; 0 for other messages)."""
    pre_encoded = getattr(message, "sample_bytes", None)   # service.EncodedChunk
    if pre_encoded is not None:
        return int(pre_encoded)
    dtype = getattr(message, "dtype", "")
    if not dtype:
        return 0
    size = _ITEMSIZE.get(dtype)
    if size is None:
        try:
            size = np.dtype(dtype).itemsize
        except TypeError:
            return 0
    n = 1
    for d in message.shape:
        n *= d
    return n * size


class CallObserver(grpc.ServerInterceptor):
    """Wraps every handler to build a :class:`CallRecord` (see module docstring)."""

    def __init__(self, listeners: tuple[Callable[[CallRecord], None], ...] = (),
                 watchdog: Optional[StallWatchdog] = None):
        self.listeners = list(listeners)
        self.watchdog = watchdog or StallWatchdog(None)
        self.watchdog.on_stall = self._stalled
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="watch-send")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    def close(self) -> None:
        """Stop the stall watchdog and the thread sending callback streams' answers."""
        self.watchdog.close()
        self._sender.shutdown(wait=False, cancel_futures=True)

    # ---- in-flight data calls (the drain waits for them) ----

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no data call is in flight; False when ``timeout`` s passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    # ---- records ----

    def _begin(self, details, identity: str, request, context
               ) -> tuple[CallRecord, Callable[[Optional[str]], None]]:
        rec = CallRecord(details.method, _client_id(details.invocation_metadata),
                         identity=identity, started=time.perf_counter())
        if request is not None:
            _describe_request(rec, request)
        counted = not rec.infrastructure
        if counted:
            with self._lock:
                self._in_flight += 1
        done = [False]

        def finish(outcome: Optional[str] = None) -> None:
            with self._lock:
                if done[0]:
                    return
                done[0] = True
                if counted:
                    self._in_flight -= 1
                    if not self._in_flight:
                        self._idle.notify_all()
            self.watchdog.taken(rec)
            if outcome is not None and not (outcome == "cancelled"
                                            and rec.outcome in ("error", "stalled")):
                rec.outcome = outcome      # (an error answered stays an error)
            rec.duration_s = time.perf_counter() - rec.started
            for listener in self.listeners:
                try:
                    listener(rec)
                except Exception:  # noqa: BLE001 - observing must never break a call
                    log.exception("a call listener failed")

        context.add_callback(lambda: finish("cancelled"))
        return rec, finish

    @staticmethod
    def _note(rec: CallRecord, message) -> None:
        rec.messages += 1
        err = getattr(message, "error_message", "")
        if err:
            rec.outcome, rec.error = "error", _printable(err, 1000)
        rec.bytes += _sample_bytes(message)

    @staticmethod
    def _failed(context, exc: BaseException) -> str:
        code = getattr(context, "code", lambda: None)()
        if isinstance(code, grpc.StatusCode):
            return code.name.lower()
        return "internal"

    @staticmethod
    def _refuse_malformed(rec: CallRecord, request: Malformed, context, finish) -> None:
        rec.error = _printable(f"the {rec.rpc} request could not be parsed "
                               f"({request.reason})", 1000)
        finish("invalid_argument")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, rec.error)

    def _stalled(self, rec: CallRecord) -> None:
        rec.outcome = "stalled"
        log.warning("%s identity=%s client=%s cancelled: the client took no message for "
                    "%g s (STREAM_STALL_TIMEOUT_S)", rec.rpc, rec.identity or "-",
                    rec.client_id or "-", self.watchdog.timeout_s)

    # ---- wrapping ----

    def _unary_response(self, behavior, details, identity, request_streaming: bool):
        def wrapped(request, context):
            rec, finish = self._begin(details, identity,
                                      None if request_streaming else request, context)
            if isinstance(request, Malformed):
                self._refuse_malformed(rec, request, context, finish)
            try:
                response = behavior(request, context)
            except BaseException as e:
                finish(self._failed(context, e))
                raise
            self._note(rec, response)
            finish(None)
            return response
        return with_flags(wrapped, behavior)

    def _stream_response(self, behavior, details, identity, request_streaming: bool):
        watchdog = self.watchdog

        def wrapped(request, context):
            rec, finish = self._begin(details, identity,
                                      None if request_streaming else request, context)
            if isinstance(request, Malformed):
                self._refuse_malformed(rec, request, context, finish)
            try:
                for message in behavior(request, context):
                    self._note(rec, message)
                    watchdog.handed(rec, context.cancel)
                    yield message
                    watchdog.taken(rec)
            except GeneratorExit:
                finish("cancelled")
                raise
            except BaseException as e:
                finish(self._failed(context, e))
                raise
            finish(None)
        return with_flags(wrapped, behavior)

    def _callback_stream(self, behavior, details, identity):
        """A non-blocking streaming behaviour (health ``Watch``): answers come through
        ``send_response_callback`` from any thread; ``None`` ends the call.

        The answers are sent by :attr:`_sender`, one thread, in order: gRPC's
        callback waits until the message is sent, and the health service calls
        it holding its lock, which the end of another watch (run on gRPC's own
        thread, the one that would finish that send) needs too: sending there
        could wait for ever (seen while a server drained with watches closing).
        """
        def wrapped(request, context, send_response_callback=None):
            rec, finish = self._begin(details, identity, request, context)
            if isinstance(request, Malformed):
                self._refuse_malformed(rec, request, context, finish)

            def send(message):
                if message is None:
                    finish(None)
                else:
                    self._note(rec, message)
                try:
                    self._sender.submit(send_response_callback, message)
                except RuntimeError:        # shut down: the call is ending anyway
                    pass
            try:
                return behavior(request, context, send)
            except BaseException as e:
                finish(self._failed(context, e))
                raise
        return with_flags(wrapped, behavior)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        identity = callers.current().identity   # set by the admission (same context)
        d = handler_call_details
        behavior = behavior_of(handler)
        rs, ss = handler.request_streaming, handler.response_streaming
        if ss and not rs and non_blocking(behavior):
            wrapped = self._callback_stream(behavior, d, identity)
        elif ss:
            wrapped = self._stream_response(behavior, d, identity, rs)
        else:
            wrapped = self._unary_response(behavior, d, identity, rs)
        parse = None if rs or handler.request_deserializer is None \
            else _tolerant(handler.request_deserializer)
        return rebuilt(handler, wrapped, request_deserializer=parse)
