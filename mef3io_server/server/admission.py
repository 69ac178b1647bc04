"""Admission of each gRPC call: who is calling, and which threads run it.

:class:`CallerInterceptor` sits inside the call observer (:mod:`.calls`):

* Health calls pass without a token and run on the health threads; at most
  :data:`MAX_HEALTH_WATCHES` ``Watch`` streams are open at once (more are
  refused ``RESOURCE_EXHAUSTED``): a ``Watch`` holds no thread, but memory
  and a stream, and anyone may open one.
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

import threading

import grpc

from .auth import TokenFile, bearer_token
from .callers import Caller, calling_as
from .method_handlers import behavior_of, non_blocking, on_pool, rebuilt
from .workers import WorkerPools

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
WATCH_METHOD = "/grpc.health.v1.Health/Watch"
#: Health Watch streams open at once, from everyone together.
MAX_HEALTH_WATCHES = 1024

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
        self._watches = threading.BoundedSemaphore(MAX_HEALTH_WATCHES)

    def _bounded_watch(self, behavior):
        """``Watch`` counted against :data:`MAX_HEALTH_WATCHES` while its stream is open."""
        def watch(request, context, send_response_callback=None):
            if not self._watches.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{MAX_HEALTH_WATCHES} health watches are open already")
            if not context.add_callback(self._watches.release):   # already over
                self._watches.release()
            return behavior(request, context, send_response_callback)
        watch.experimental_non_blocking = True
        return watch

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            behavior = behavior_of(handler)
            if handler_call_details.method == WATCH_METHOD and non_blocking(behavior):
                behavior = self._bounded_watch(behavior)
            return rebuilt(handler, on_pool(behavior, self.pools.health))
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
