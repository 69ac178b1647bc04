"""Clear client-side errors for calls that never reached the service.

gRPC reports a plaintext client talking to a TLS port, an untrusted server
certificate, a refused connection and a missing token as terse statuses
(``UNAVAILABLE: Socket closed``, ``UNAUTHENTICATED``). :class:`GuardedStub`
wraps a generated stub so that such failures raise:

* :class:`ServerUnreachable` (a ``ConnectionError``) for ``UNAVAILABLE``,
  saying what to check: the address, and TLS on both sides;
* :class:`NotAuthenticated` (a ``PermissionError``) for ``UNAUTHENTICATED``,
  with the server's message (which says whether the token was missing,
  malformed or not accepted).

Both are also ``grpc.RpcError`` with ``code()`` and ``details()`` of the
original, so code that catches ``grpc.RpcError`` keeps working. Other
statuses pass through unchanged.
"""
from __future__ import annotations

import grpc


class _Explained(grpc.RpcError):
    def __init__(self, message: str, original: grpc.RpcError):
        super().__init__(message)
        self.original = original

    def code(self):
        return self.original.code()

    def details(self):
        return self.original.details()


class ServerUnreachable(_Explained, ConnectionError):
    """The call could not reach the server (address, network or TLS mismatch)."""


class NotAuthenticated(_Explained, PermissionError):
    """The server requires a bearer token and refused the one given (or none)."""


def explain(err: grpc.RpcError, address: str, tls: bool) -> BaseException:
    """The clear exception for ``err``, or ``err`` itself when it needs none."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        if tls:
            hint = ("this client uses TLS: check that the server has TLS on (TLS_CERT_FILE), "
                    "that root_certificates holds the CA that signed its certificate, that "
                    "the certificate names the host in the address, and for mutual TLS that "
                    "private_key and certificate_chain are given")
        else:
            hint = ("this client uses plaintext: if the server has TLS on, create the client "
                    "with root_certificates=<CA PEM path or bytes>")
        return ServerUnreachable(f"cannot reach mef3io-server at {address} ({details}); "
                                 f"{hint}", err)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NotAuthenticated(f"mef3io-server at {address} refused the call: {details}", err)
    return err


class _GuardedStream:
    """A streaming call whose iteration raises the explained errors."""

    def __init__(self, call, explain_):
        self._call = call
        self._explain = explain_

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._call)
        except grpc.RpcError as e:
            raise self._explain(e) from None

    def __getattr__(self, name):
        return getattr(self._call, name)


class _GuardedMethod:
    def __init__(self, method, explain_):
        self._method = method
        self._explain = explain_

    def __call__(self, *args, **kwargs):
        try:
            result = self._method(*args, **kwargs)
        except grpc.RpcError as e:
            raise self._explain(e) from None
        if isinstance(result, grpc.Call) and hasattr(result, "__next__"):
            return _GuardedStream(result, self._explain)
        return result

    def __getattr__(self, name):
        return getattr(self._method, name)


class GuardedStub:
    """Wraps a generated stub: every method raises the explained errors."""

    def __init__(self, stub, address: str, tls: bool):
        self._stub = stub
        self._address = address
        self._tls = tls

    def _explain_error(self, err: grpc.RpcError) -> BaseException:
        return explain(err, self._address, self._tls)

    def __getattr__(self, name):
        return _GuardedMethod(getattr(self._stub, name), self._explain_error)
