"""Running the HTTP side (:mod:`.http_app`) under uvicorn, in the server's own process.

``HTTP_PORT`` turns it on (off when unset), on ``HTTP_BIND_ADDRESS`` (default:
``BIND_ADDRESS``). With ``TLS_CERT_FILE``/``TLS_KEY_FILE`` it serves HTTPS
with the same certificate as the gRPC port, and with ``TLS_CLIENT_CA_FILE``
it requires client certificates too. The socket is bound before uvicorn
starts, so a port in use stops start-up with a message naming the variable.
uvicorn's event loop runs on a thread of its own; engine calls run on its
worker threads, never on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from typing import Optional

import uvicorn

from .config import Settings

log = logging.getLogger("mef3io_server.http")


def _bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (``::`` also takes IPv4 where it can)."""
    addr = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and addr == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((addr, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {addr}:{port} for the web viewer (HTTP_PORT, "
                      f"HTTP_BIND_ADDRESS): {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving ``app`` on a thread; :meth:`close` stops it."""

    def __init__(self, app, settings: Settings):
        self.settings = settings
        host = settings.effective_http_bind_address
        self._sock = _bound_socket(host, settings.http_port)
        self.port = self._sock.getsockname()[1]
        self.host = host
        self.scheme = "https" if settings.tls_cert_file else "http"
        kwargs = {}
        if settings.tls_cert_file:
            kwargs.update(ssl_certfile=settings.tls_cert_file,
                          ssl_keyfile=settings.tls_key_file)
            if settings.tls_client_ca_file:
                kwargs.update(ssl_ca_certs=settings.tls_client_ca_file,
                              ssl_cert_reqs=ssl.CERT_REQUIRED)
        # uvicorn's own start-up lines ("Started server process") would read as a
        # second process; its warnings and errors still reach the log.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, **kwargs)
        self._server = uvicorn.Server(config)
        self._started = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            self.close()
            raise OSError(f"the web viewer's HTTP server did not start: {self._error}")

    def _run(self) -> None:
        async def serve():
            task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
            while not self._server.started and not task.done():
                await asyncio.sleep(0.01)
            self._started.set()
            await task
        try:
            asyncio.run(serve())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            log.exception("the HTTP server stopped")
        finally:
            self._started.set()

    def link(self, path: str = "") -> str:
        """The viewer's address as a browser on this machine reaches it (``path``: a
        recording to open)."""
        from urllib.parse import quote

        host = self.host
        if host in ("::", "0.0.0.0", "localhost"):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        url = f"{self.scheme}://{host}:{self.port}/"
        return url + (f"#path={quote(path, safe='/')}" if path else "")

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        try:
            self._sock.close()
        except OSError:
            pass
