"""gRPC method handlers rebuilt around another behaviour, keeping their kind and flags.

Server interceptors (:mod:`.calls`, :mod:`.admission`) wrap the function a
handler runs. gRPC reads two attributes of that function that a plain wrapper
would lose: ``experimental_non_blocking`` (the health service's ``Watch`` sends
its answers from a callback and holds no thread while it waits) and
``experimental_thread_pool`` (the pool the call runs on, see :mod:`.workers`).
:func:`rebuilt` makes the new handler; :func:`flags_of` / :func:`with_flags`
carry the attributes over.
"""
from __future__ import annotations

from typing import Callable, Optional

import grpc


def behavior_of(handler: grpc.RpcMethodHandler) -> Callable:
    """The function ``handler`` runs (whichever of its four slots is set)."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream
    if handler.request_streaming:
        return handler.stream_unary
    if handler.response_streaming:
        return handler.unary_stream
    return handler.unary_unary


def non_blocking(behavior: Callable) -> bool:
    return bool(getattr(behavior, "experimental_non_blocking", False))


def with_flags(wrapper: Callable, behavior: Callable,
               pool: Optional[object] = None) -> Callable:
    """``wrapper`` carrying ``behavior``'s gRPC attributes (``pool`` replaces its pool)."""
    wrapper.experimental_non_blocking = non_blocking(behavior)
    wrapper.experimental_thread_pool = pool if pool is not None \
        else getattr(behavior, "experimental_thread_pool", None)
    return wrapper


def on_pool(behavior: Callable, pool) -> Callable:
    """``behavior`` run on ``pool`` (a ``ThreadPoolExecutor``), non-blocking kept."""
    if non_blocking(behavior):
        def run(request, context, send_response_callback=None):
            return behavior(request, context, send_response_callback)
    else:
        def run(request, context):
            return behavior(request, context)
    return with_flags(run, behavior, pool)


def rebuilt(handler: grpc.RpcMethodHandler, behavior: Callable,
            request_deserializer: Optional[Callable] = None) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and serializers running ``behavior``."""
    kw = {"request_deserializer": request_deserializer or handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    rs, ss = handler.request_streaming, handler.response_streaming
    if rs and ss:
        return grpc.stream_stream_rpc_method_handler(behavior, **kw)
    if rs:
        return grpc.stream_unary_rpc_method_handler(behavior, **kw)
    if ss:
        return grpc.unary_stream_rpc_method_handler(behavior, **kw)
    return grpc.unary_unary_rpc_method_handler(behavior, **kw)
