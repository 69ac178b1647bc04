"""Admission of each gRPC call: who is calling, and which threads run it.

:class:`CallerInterceptor` sits inside the call observer (:mod:`.calls`):

* Health calls pass without a token and run on the health threads.
* With ``AUTH_TOKENS_FILE`` set, a call without an accepted bearer token is
  refused with ``UNAUTHENTICATED`` and a message saying whether the token was
  missing, malformed or unknown. Its request is never parsed, and it runs on
  the refused calls' own threads.
* Otherwise the call's caller becomes the current one (:mod:`.callers`:
  identity = the token's name, ``""`` without tokens) and the call runs on its
  identity's threads, streaming or small (:mod:`.workers`).

gRPC runs the interceptor and the call in one ``contextvars`` context of the
call's own, so the caller set here is the one the service reads.
"""
from __future__ import annotations

from typing import Optional

import grpc

from .auth import TokenFile, bearer_token
from .callers import Caller, calling_as
from .method_handlers import behavior_of, on_pool, rebuilt
from .workers import WorkerPools

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)

#: What a refused call's request is parsed into: nothing (it is never looked at).
NOT_PARSED = object()


def _not_parsed(raw: bytes) -> object:
    return NOT_PARSED


def refusal(handler: grpc.RpcMethodHandler, message: str, pool) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that ends the call UNAUTHENTICATED on ``pool``."""

    def deny(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    deny.experimental_thread_pool = pool
    return rebuilt(handler, deny, request_deserializer=_not_parsed)


class CallerInterceptor(grpc.ServerInterceptor):
    """Authenticates (when ``tokens`` is given), names and places every call."""

    def __init__(self, pools: WorkerPools, tokens: Optional[TokenFile] = None):
        self.pools = pools
        self.tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return rebuilt(handler, on_pool(behavior_of(handler), self.pools.health))
        identity = ""
        if self.tokens is not None:
            token, problem = bearer_token(handler_call_details.invocation_metadata)
            if token is not None:
                identity = self.tokens.identity_of(token)
                if identity is None:
                    problem = "the bearer token was not accepted by this server"
            if token is None or identity is None:
                return refusal(handler, problem, self.pools.refused)
        calling_as(Caller(identity))
        pool = self.pools.for_call(identity, handler.response_streaming)
        return rebuilt(handler, on_pool(behavior_of(handler), pool))
