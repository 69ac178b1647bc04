"""Building, running and draining the gRPC server process.

:func:`build_server` assembles the engine, the service, the standard health
service and (optionally) reflection; :func:`serve` runs it until SIGTERM or
SIGINT, then drains: health goes NOT_SERVING, new calls are refused,
in-flight streams get ``SHUTDOWN_GRACE_S`` to finish, decode workers exit.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..protobufs import gRPCMef3Server_pb2 as pb2
from ..protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from .config import Settings, load_settings
from .engine import Engine
from .service import Mef3Service

log = logging.getLogger("mef3io_server")

SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["gRPCMef3Server"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class RunningServer:
    """A started server: the gRPC server, its engine and health, and the bound port."""

    server: grpc.Server
    engine: Engine
    health: health.HealthServicer
    port: int
    settings: Settings

    def stop(self, grace: Optional[float] = None) -> None:
        """Drain and stop (health NOT_SERVING, refuse new calls, wait, close workers)."""
        grace = self.settings.shutdown_grace_s if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.engine.begin_drain()
        self.server.stop(grace).wait()
        self.engine.close()


def server_options(settings: Settings) -> list[tuple[str, object]]:
    return [
        ("grpc.so_reuseport", 0),   # a taken port is an error, not a silent second server
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def build_server(settings: Settings, *, interceptors=(), credentials=None) -> RunningServer:
    """Create and start the server on ``settings.port`` (0: any free port)."""
    engine = Engine(settings)
    engine.start()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers,
                                   thread_name_prefix="grpc"),
        interceptors=list(interceptors), options=server_options(settings))
    pb2_grpc.add_gRPCMef3ServerServicer_to_server(Mef3Service(engine), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.grpc_reflection:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
    address = f"[::]:{settings.port}"
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0 and settings.port != 0:
        engine.close()
        raise OSError(f"cannot listen on port {settings.port} (PORT): is it in use?")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, engine, health_servicer, port, settings)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=getattr(logging, settings.log_level),
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Optional[Settings] = None, *, preload: Optional[str] = None) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT. Returns an exit code.

    ``preload``: a recording opened at start-up in the shared default session.
    """
    settings = settings or load_settings()
    configure_logging(settings)
    if not settings.data_roots:
        log.warning("DATA_ROOTS is not set: any readable path on this machine is served")
    try:
        running = build_server(settings)
    except OSError as e:
        print(f"mef3io-server: {e}", file=sys.stderr)
        return 1
    if preload:
        try:
            info = running.engine.open_file("", preload)
        except Exception as e:  # noqa: BLE001
            print(f"mef3io-server: cannot serve {preload}: {e}", file=sys.stderr)
            running.stop(0)
            return 1
        print(f"serving {preload}: {len(info.channel_names)} channels, "
              f"{info.duration_s:.0f} s", file=sys.stderr, flush=True)
    log.info("mef3io-server listening on port %d (decode: %s, tile cache %.0f MB, "
             "tiles %.3g s)", running.port, running.engine.decoder.kind,
             settings.tile_cache_mb, settings.tile_duration_s)
    print(f"mef3io-server listening on port {running.port}", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("received signal %d: draining", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    running.stop()
    log.info("stopped")
    if getattr(running.engine.decoder, "wedged", 0):
        # A decode pool wedged by a killed worker keeps a thread Python would
        # join at exit for ever (see ProcessDecoder._watch_pools): leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    return 0
