"""Building, running and draining the gRPC server process.

:func:`build_server` assembles the engine, the service, the standard health
service and (optionally) reflection; :func:`serve` runs it until SIGTERM or
SIGINT, then drains: health goes NOT_SERVING, new calls are refused,
in-flight streams get ``SHUTDOWN_GRACE_S`` to finish, decode workers exit.
"""
from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..protobufs import gRPCMef3Server_pb2 as pb2
from .admission import CallerInterceptor
from .auth import TokenFile
from .calls import CallObserver
from . import filtering
from .config import Settings, load_settings
from .decode import stop_worker_helpers
from .engine import Engine
from .logs import CallLog, announce
from .logs import configure_logging as _configure_logging
from .memory import configure_allocator
from .pinning import raise_open_files_limit
from .service import Mef3Service, add_to_server
from .tls import server_credentials
from .workers import StallWatchdog, WorkerPools

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
    observer: Optional[CallObserver] = None
    metrics: Optional[object] = None      # metrics.MetricsServer when METRICS_PORT is set
    service: Optional[Mef3Service] = None
    pools: Optional[WorkerPools] = None
    http: Optional[object] = None         # http_server.HttpServer when HTTP_PORT is set

    def set_serving(self) -> None:
        """Health SERVING (after start-up: workers warm, preloaded recording open)."""
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: Optional[float] = None) -> None:
        """Drain and stop (health NOT_SERVING, refuse new calls, wait, close workers).

        Health answers NOT_SERVING and new data calls are refused (the engine
        answers "shutting down") while in-flight calls get up to ``grace``
        seconds to finish; then the port closes, and the decode workers exit.
        """
        grace = self.settings.shutdown_grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self.health.enter_graceful_shutdown()
        self.engine.begin_drain()
        left = grace
        if self.observer is not None and self.observer.wait_idle(grace):
            left = 0.5      # data calls done: only health watches and refusals remain
        self.server.stop(max(0.0, min(left, deadline - time.monotonic()))).wait()
        if self.http is not None:
            self.http.close()
        if self.observer is not None:
            self.observer.close()
        if self.pools is not None:
            self.pools.close()
        if self.metrics is not None:
            self.metrics.close()
        self.engine.close()
        if self.engine.decoder.kind == "processes":
            stop_worker_helpers()


def reach(host: str) -> str:
    """Who can connect to a port bound on ``host``, for the start-up lines."""
    if host in ("::", "0.0.0.0"):
        return "every interface"
    if host == "localhost" or ipaddress.ip_address(host).is_loopback:
        return "this machine only"
    return f"address {host}"


def port_problem(host: str, port: int) -> Optional[str]:
    """Why ``host``:``port`` cannot be listened on (in use, not permitted, not an address of
    this machine), or None. Asked before gRPC binds, whose failure is a bare "Failed to
    bind" after a line of C-core log; a port in TIME_WAIT is free, as for gRPC."""
    if port == 0:
        return None
    if host == "localhost":
        targets = [(socket.AF_INET, "127.0.0.1")]
    elif ":" in host:
        targets = [(socket.AF_INET6, host)]
    else:
        targets = [(socket.AF_INET, host)]
    for family, addr in targets:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if addr == "::":        # no IPv6 here: gRPC listens on 0.0.0.0 instead
                return port_problem("0.0.0.0", port)
            return None
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and addr == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind((addr, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return (f"port {port} is in use by another server (stop it, or set PORT "
                            "to another port; PORT=0 picks a free one)")
                if e.errno == errno.EACCES:
                    return (f"not permitted to listen on port {port} (PORT; ports below 1024 "
                            "need privileges)")
                if e.errno == errno.EADDRNOTAVAIL:
                    return f"{host} is not an address of this machine (BIND_ADDRESS)"
                return e.strerror or str(e)
    return None


def server_options(settings: Settings) -> list[tuple[str, object]]:
    return [
        ("grpc.so_reuseport", 0),   # a taken port is an error, not a silent second server
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def build_server(settings: Settings, *, interceptors=(), credentials=None,
                 mark_serving: bool = True) -> RunningServer:
    """Create and start the server on ``settings.port`` (0: any free port).

    TLS (``TLS_*``), tokens (``AUTH_TOKENS_FILE``), the per-call log and
    ``METRICS_PORT`` come from ``settings``; ``mark_serving=False`` leaves
    health NOT_SERVING until :meth:`RunningServer.set_serving`.
    """
    if credentials is None:
        credentials = server_credentials(settings)
    if settings.preload_filters:
        filtering.preload()         # before the port opens: no first call waits for it
    engine = Engine(settings)
    observer = CallObserver((CallLog(),), StallWatchdog(settings.stream_stall_timeout_s))
    pools = WorkerPools(settings.max_workers)
    tokens = TokenFile(settings.auth_tokens_file) if settings.auth_tokens_file else None
    chain = [observer, CallerInterceptor(pools, tokens)]
    # Every call runs on the pools of workers.WorkerPools; this one runs only what
    # gRPC itself handles (unknown methods).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="grpc"),
        interceptors=chain + list(interceptors), options=server_options(settings))
    service = Mef3Service(engine)
    add_to_server(service, server)   # = the generated one, fast GetSignalRange
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.grpc_reflection:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
    address = settings.listen_address()
    problem = port_problem(settings.bind_address, settings.port)
    if problem is None:
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:        # newer grpcio raises instead of returning 0
            port = 0
        if port == 0 and settings.port != 0:
            problem = "gRPC could not bind it (PORT, BIND_ADDRESS)"
    if problem is not None:
        engine.close()
        observer.close()
        pools.close()
        raise OSError(f"cannot listen on {address}: {problem}")
    server.start()
    running = RunningServer(server, engine, health_servicer, port, settings, observer,
                            service=service, pools=pools)
    try:
        engine.start()
        if settings.metrics_port is not None:
            from .metrics import MetricsServer

            running.metrics = MetricsServer(engine, observer, settings.metrics_port,
                                            addr=settings.effective_metrics_bind_address)
        if settings.http_port is not None:
            from .http_app import HttpFrontEnd
            from .http_server import HttpServer

            front = HttpFrontEnd(engine, tokens, observer.listeners)
            host = settings.effective_http_bind_address
            running.http = HttpServer(front.app(loopback_only=reach(host) == "this machine only"),
                                      settings)
    except Exception:
        if running.metrics is not None:
            running.metrics.close()
        server.stop(0)
        engine.close()
        observer.close()
        pools.close()
        raise
    if mark_serving:
        running.set_serving()
    return running


def configure_logging(settings: Settings) -> None:
    _configure_logging(settings.log_level, settings.log_format)


def serve(settings: Optional[Settings] = None, *, preload: Optional[str] = None) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT. Returns an exit code.

    ``preload``: a recording opened at start-up in the shared default session.
    """
    settings = settings or load_settings()
    configure_logging(settings)
    configure_allocator()         # before any server thread exists
    raise_open_files_limit()      # pinned recordings hold their files open (see pinning)
    if not settings.data_roots:
        log.warning("DATA_ROOTS is not set: any readable path on this machine is served")
    try:
        running = build_server(settings, mark_serving=False)
    except (OSError, ValueError) as e:     # ConfigError is a ValueError
        print(f"mef3io-server: {e}", file=sys.stderr)
        return 1
    if preload:
        try:
            info = running.engine.open_file("", preload, protected=True)
        except Exception as e:  # noqa: BLE001
            print(f"mef3io-server: cannot serve {preload}: {e}", file=sys.stderr)
            running.stop(0)
            return 1
        announce(f"serving {preload}: {len(info.channel_names)} channels, "
                 f"{info.duration_s:.0f} s", settings.log_format)
    # Everything loaded so far (modules, gRPC, mef3io, numpy) lives as long as
    # the process: keep it out of the garbage collector's full passes, which
    # otherwise scan it all and stall every request for 20-50 ms
    # (docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    running.set_serving()
    log.info("security: TLS %s, bearer tokens %s, DATA_ROOTS %s, HOST_ROOT %s",
             "mutual" if settings.tls_client_ca_file else ("on" if settings.tls_cert_file
                                                           else "off"),
             "required" if settings.auth_tokens_file else "off",
             ":".join(settings.data_roots) or "unset", settings.host_root or "unset")
    if running.http is not None:
        announce(f"web viewer at {running.http.link(preload or '')} "
                 f"({reach(running.http.host)})", settings.log_format)
    if running.metrics is not None:
        announce(f"metrics served at /metrics on port {running.metrics.port} "
                 f"({reach(settings.effective_metrics_bind_address)})", settings.log_format)
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("received signal %d: draining", signum)
        stop.set()

    # Handlers go in before the port is announced, so a signal sent as soon
    # as a client sees the port is a graceful stop, not the default kill.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("mef3io-server listening on port %d (decode: %s, tile cache %.0f MB, "
             "tiles %.3g s)", running.port, running.engine.decoder.kind,
             settings.tile_cache_mb, settings.tile_duration_s)
    announce(f"mef3io-server listening on port {running.port} "
             f"({reach(settings.bind_address)})", settings.log_format)
    _wait_for_signal(stop)
    gc.unfreeze()       # what the drain ends (decode pools) must be collectable again
    running.stop()
    log.info("stopped")
    if getattr(running.engine.decoder, "stuck", 0):
        # A decode pool wedged by a killed worker whose manager thread could
        # not be released keeps a thread Python would join at exit for ever
        # (see ProcessDecoder._end_pool): leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _wait_for_signal(stop: threading.Event, backstop_s: float = 60.0) -> None:
    """Block the main thread until ``stop`` is set by a signal handler.

    The kernel may deliver a signal to any thread (a gRPC one), and Python
    runs handlers only when the main thread runs: the main thread sleeps in
    ``select`` on the signal wakeup descriptor, which the C-level handler
    writes to whichever thread took the signal, so it wakes at once and runs
    the handler -- no periodic wakeups. ``backstop_s``: a timed wake-up all
    the same, in case a handler ran before ``stop`` was looked at.
    """
    import select

    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:                  # not the main thread: poll as before
        os.close(r)
        os.close(w)
        while not stop.wait(0.2):
            pass
        return
    try:
        while not stop.is_set():
            select.select([r], [], [], backstop_s)
            try:
                while os.read(r, 512):
                    pass
            except BlockingIOError:
                pass
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)
