"""Bearer tokens: ``AUTH_TOKENS_FILE`` and the interceptor that checks them.

* The file holds one accepted token per line; ``#`` starts a comment line,
  blank lines are ignored, surrounding whitespace is stripped.
* It is re-read when it changes (its size, mtime or inode differ from the last
  read: one ``stat`` per call), so tokens can be added or revoked while the
  server runs. A file that cannot be read, or holds no token, refuses every
  call (fails closed) and says so in the log, once per change.
* A client sends ``authorization: Bearer <token>`` metadata. A missing,
  malformed or unknown token ends the call with gRPC status
  ``UNAUTHENTICATED`` and a message saying which of the three it was.
* Only SHA-256 digests of the tokens are kept in memory, and a presented
  token is compared with each of them with :func:`hmac.compare_digest`
  (constant time, no early exit across tokens). Tokens are never logged.
* The standard health service (``grpc.health.v1.Health``) needs no token, so
  load balancers and container health checks can probe it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from typing import Optional

import grpc

log = logging.getLogger("mef3io_server.auth")

AUTH_KEY = "authorization"
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenFile:
    """The accepted tokens of ``AUTH_TOKENS_FILE``, re-read when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: Optional[tuple] = None
        self._digests: tuple[bytes, ...] = ()
        self.reloads = 0
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return
            digests: tuple[bytes, ...] = ()
            try:
                with open(self.path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                digests = tuple(_digest(t) for t in (ln.strip() for ln in lines)
                                if t and not t.startswith("#"))
            except (OSError, UnicodeDecodeError) as e:
                if self._stamp != ("unreadable",):
                    log.error("AUTH_TOKENS_FILE %s cannot be read (%s): every call is refused",
                              self.path, type(e).__name__)
                self._stamp, self._digests = ("unreadable",), ()
                return
            if not digests:
                log.warning("AUTH_TOKENS_FILE %s holds no token: every call is refused",
                            self.path)
            elif self._stamp is not None:
                log.info("AUTH_TOKENS_FILE %s changed: %d token(s) accepted",
                         self.path, len(digests))
            self._digests = digests
            self._stamp = stamp
            self.reloads += 1

    def accepts(self, token: str) -> bool:
        """True when ``token`` is one of the file's tokens (constant-time comparison)."""
        self._refresh()
        presented = _digest(token)
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(presented, d)
        return ok


def bearer_token(metadata) -> tuple[Optional[str], str]:
    """(token, problem) from call metadata; problem is "" when a token was found."""
    values = [v for k, v in (metadata or ()) if k == AUTH_KEY]
    if not values:
        return None, ("this server requires a bearer token: send 'authorization: Bearer "
                      "<token>' metadata (Mef3Client(..., token=...))")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "the authorization metadata must be 'Bearer <token>'"
    return token.strip(), ""


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call UNAUTHENTICATED."""

    def deny(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kw)
    return grpc.unary_unary_rpc_method_handler(deny, **kw)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without an accepted bearer token (health checks excepted)."""

    def __init__(self, tokens: TokenFile):
        self.tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        token, problem = bearer_token(handler_call_details.invocation_metadata)
        if token is not None:
            if self.tokens.accepts(token):
                return handler
            problem = "the bearer token was not accepted by this server"
        return _refusal(handler, problem)
