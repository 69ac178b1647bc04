"""What the clients raise and warn: one hierarchy, the gRPC status and the server's words kept.

Every error :class:`~mef3io_server.client.Mef3Client` and
:class:`~mef3io_server.aio.AsyncMef3Client` raise is a :class:`Mef3Error`,
and also the built-in (or gRPC) exception code written for the published
3.1.0 client already catches, so that code keeps working::

    Mef3Error
    +-- RequestRefused     (RuntimeError)  the server answered with an error message
    |   +-- OpenFailed                     open_file: the recording was not opened
    |   +-- ReadFailed                     get_signal_range: no array
    +-- CallFailed         (grpc.RpcError) the call ended with a gRPC status other than OK
    |   +-- ServerUnreachable (ConnectionError)  UNAVAILABLE: address, network, TLS
    |   +-- NotAuthenticated  (PermissionError)  UNAUTHENTICATED: token missing or refused
    |   +-- DeadlineExceeded  (TimeoutError)     DEADLINE_EXCEEDED: no answer within timeout
    +-- ServerUnsupported  (RuntimeError)  the server is older and lacks what was asked
    +-- InvalidArgument    (ValueError)    an argument the client cannot send; nothing sent
        +-- TimeSpecError                  a time or duration it cannot read
        +-- WindowOutsideData              a read window with no data (raise_errors only)

Each carries ``status`` (the call's ``grpc.StatusCode``: ``OK`` for an error the
server answered with, as the protocol reports bad requests; ``None`` when no
call was made), ``server_message`` (the server's own words, ``None`` when it
said nothing), ``rpc`` (``"GetSignalRange"``, ...) and ``path`` (the
recording, when there is one). :class:`CallFailed` has ``code()`` and
``details()`` like any ``grpc.RpcError``.

:class:`WindowWarning` is warned when a read's window lies mostly outside the
recording (those samples are NaN) or a time looks like seconds or
milliseconds rather than microseconds.
"""
from __future__ import annotations

from typing import Optional

import grpc


class Mef3Error(Exception):
    """Base of every error the mef3io-server clients raise (see the module docstring)."""

    def __init__(self, message: str, *, status: Optional[grpc.StatusCode] = None,
                 server_message: Optional[str] = None, rpc: Optional[str] = None,
                 path: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.rpc = rpc
        self.path = path


class RequestRefused(Mef3Error, RuntimeError):
    """The server answered the call with an error message: it cannot serve this request
    (unknown channel, file not open, path outside its roots, a limit, ...).
    ``str(err)`` and ``server_message`` are the server's message."""

    def __init__(self, server_message: str, **context):
        context.setdefault("status", grpc.StatusCode.OK)
        super().__init__(server_message, server_message=server_message, **context)


class OpenFailed(RequestRefused):
    """``open_file`` did not open the recording (``file_opened`` False)."""


class ReadFailed(RequestRefused):
    """``get_signal_range`` returned no array (``array`` None)."""


class CallFailed(Mef3Error, grpc.RpcError):
    """The call ended with a gRPC status other than OK (``code()``, ``details()``)."""

    def __init__(self, message: str, original: Optional[grpc.RpcError] = None, **context):
        super().__init__(message, **context)
        self.original = original

    def code(self) -> Optional[grpc.StatusCode]:
        return self.status

    def details(self) -> Optional[str]:
        return self.server_message


class ServerUnreachable(CallFailed, ConnectionError):
    """The call could not reach the server (address, network or TLS mismatch)."""


class NotAuthenticated(CallFailed, PermissionError):
    """The server requires a bearer token and refused the one given (or none)."""


class DeadlineExceeded(CallFailed, TimeoutError):
    """The server did not answer within the client's ``timeout``."""


class ServerUnsupported(Mef3Error, RuntimeError):
    """The server does not support a feature this call asked for (it is older)."""


class InvalidArgument(Mef3Error, ValueError):
    """An argument the client cannot send (nothing was sent)."""


class TimeSpecError(InvalidArgument):
    """A time or duration that cannot be understood; the message says why and shows the forms."""


class WindowOutsideData(InvalidArgument):
    """A read window that does not overlap the channels' data (with ``raise_errors=True``;
    otherwise a :class:`WindowWarning` and an all-NaN array, as the protocol answers)."""


class WindowWarning(UserWarning):
    """A read window mostly outside the recording, or a time in the wrong unit."""


_UNAVAILABLE_HINT_TLS = (
    "this client uses TLS: check that the server has TLS on (TLS_CERT_FILE), that "
    "root_certificates holds the CA that signed its certificate, that the certificate "
    "names the host in the address, and for mutual TLS that private_key and "
    "certificate_chain are given")
_UNAVAILABLE_HINT_PLAIN = (
    "this client uses plaintext: if the server has TLS on, create the client with "
    "root_certificates=<CA PEM path or bytes>")


def from_rpc_error(err: grpc.RpcError, *, address: str, tls: bool, rpc: Optional[str] = None,
                   path: Optional[str] = None, timeout: Optional[float] = None) -> Mef3Error:
    """The :class:`Mef3Error` for a call that ended with a gRPC status other than OK."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    context = {"status": code, "server_message": details, "rpc": rpc, "path": path}
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = _UNAVAILABLE_HINT_TLS if tls else _UNAVAILABLE_HINT_PLAIN
        return ServerUnreachable(f"cannot reach mef3io-server at {address} ({details}); {hint}",
                                 err, **context)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NotAuthenticated(f"mef3io-server at {address} refused the call: {details}", err,
                                **context)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within timeout={timeout:g} s" if timeout else ""
        return DeadlineExceeded(f"mef3io-server at {address} did not answer {rpc or 'the call'}"
                                f"{within} ({details})", err, **context)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return ServerUnsupported(f"the server does not support {rpc or 'this call'} (it is older "
                                 "than this client, e.g. the published mef3io-server 3.1.0); "
                                 "upgrade it", **context)
    name = code.name if code is not None else "error"
    return CallFailed(f"{rpc or 'the call'} failed with {name}: {details}", err, **context)
