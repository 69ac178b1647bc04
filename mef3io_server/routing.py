"""The routing key: every call about a recording names it in its metadata.

Several replicas of the server behind one load balancer each keep their own
tile cache. When the balancer hashes the recording's path consistently (nginx
``hash $http_x_mef3io_path consistent``, HAProxy ``balance hdr(x-mef3io-path)``
with ``hash-type consistent``, Envoy ``RING_HASH`` on the header), every call
about one recording reaches one replica, so each recording is decoded and
cached in one place, and adding or losing a replica moves only the
recordings that replica held (see ``docs/cluster.md``).

The balancer cannot read the protobuf request, so the clients copy the path
into a header: :data:`ROUTING_KEY` = ``x-mef3io-path``, the request's
``file_path`` as the client gave it, normalised (``posixpath.normpath``) and
percent-encoded (UTF-8; gRPC metadata is ASCII), e.g. ``/data/patient%201.mefd``.
The server ignores it. Calls that name no recording (``ListOpenFiles``,
``ListRecordings``) carry none.

The same interceptors send :data:`SESSION_REQUIRED_KEY` on reads of files
the client opened itself (``claims(path)`` is true): the server then answers
"not open by this client" when that client's session is missing (the file
moved to another replica, the replica restarted, the session expired)
instead of serving the read through another client's session, which would
ignore this client's ``cache_fs`` and password. See :mod:`mef3io_server.reopen`.

:func:`interceptors` gives them for a channel: :class:`RoutingInterceptor`
for ``grpc`` channels (``grpc.intercept_channel``), :class:`AsyncRoutingInterceptor`
and :class:`AsyncStreamRoutingInterceptor` for ``grpc.aio`` channels
(``interceptors=``).
"""
from __future__ import annotations

import posixpath
from collections import namedtuple
from typing import Callable, Optional
from urllib.parse import quote

import grpc

#: Metadata key holding the recording's path (what balancers hash on).
ROUTING_KEY = "x-mef3io-path"
#: Metadata key by which a client says it opened the file itself (value "1").
SESSION_REQUIRED_KEY = "x-mef3io-session-required"

#: RPCs about a file for which a missing session of the caller's is an error
#: when it claims one (not OpenFile, which makes it, nor CloseFile).
_READS = frozenset({"FileInfo", "GetSignalRange", "GetEnvelope", "GetRecords", "GetSegments"})


def routing_value(file_path: str) -> str:
    """The :data:`ROUTING_KEY` value of a path: normalised, then percent-encoded."""
    path = str(file_path)
    return quote(posixpath.normpath(path) if path else path, safe="/")


def call_metadata(method, request, metadata, claims: Optional[Callable[[str], bool]] = None
                  ) -> Optional[list]:
    """``metadata`` plus the routing key (and the session claim) for ``request``,
    or None when the request names no file."""
    path = getattr(request, "file_path", None)
    if not path:
        return None
    added = [(ROUTING_KEY, routing_value(path))]
    if claims is not None and _rpc_name(method) in _READS and claims(path):
        added.append((SESSION_REQUIRED_KEY, "1"))
    return list(metadata or ()) + added


def _rpc_name(method) -> str:
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return method.rsplit("/", 1)[-1]


class _Details(namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                       "wait_for_ready", "compression")),
               grpc.ClientCallDetails):
    """A sync call's details with other metadata."""


class RoutingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds :data:`ROUTING_KEY` (and :data:`SESSION_REQUIRED_KEY`) to every call
    about a file of a ``grpc`` channel.

    ``claims``: ``path -> bool``, true for the files this client opened itself.
    """

    def __init__(self, claims: Optional[Callable[[str], bool]] = None):
        self._claims = claims

    def _details(self, details, request):
        md = call_metadata(details.method, request, details.metadata, self._claims)
        if md is None:
            return details
        return _Details(details.method, details.timeout, md, details.credentials,
                        getattr(details, "wait_for_ready", None),
                        getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, request), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, request), request)


class _AsyncRouting:
    def __init__(self, claims: Optional[Callable[[str], bool]] = None):
        self._claims = claims

    def _details(self, details, request):
        md = call_metadata(details.method, request, details.metadata, self._claims)
        if md is None:
            return details
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*md), details.credentials,
                                          details.wait_for_ready)


class AsyncRoutingInterceptor(_AsyncRouting, grpc.aio.UnaryUnaryClientInterceptor):
    """:class:`RoutingInterceptor` for the unary calls of ``grpc.aio`` channels
    (``grpc.aio`` takes one kind of call per interceptor object)."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details, request), request)


class AsyncStreamRoutingInterceptor(_AsyncRouting, grpc.aio.UnaryStreamClientInterceptor):
    """:class:`RoutingInterceptor` for the streaming calls of ``grpc.aio`` channels."""

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details, request), request)


def interceptors(claims: Optional[Callable[[str], bool]] = None, *, aio: bool = False) -> list:
    """The client interceptors of a channel: the routing key (and session claims)."""
    if aio:
        return [AsyncRoutingInterceptor(claims), AsyncStreamRoutingInterceptor(claims)]
    return [RoutingInterceptor(claims)]
