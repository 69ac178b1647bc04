"""``python -m mef3io_server.healthcheck``: ask a server's gRPC health service if it serves.

Exit status 0 when the server answers SERVING, 1 otherwise (NOT_SERVING,
unreachable, timed out), with one line on stderr saying which: the
container HEALTHCHECK runs it. It needs no token (the health service is
open). By default it asks ``localhost:$PORT`` and, when the server has TLS
(``TLS_CERT_FILE`` set in the same environment), trusts that certificate
itself (``--ca`` for a CA) and names ``--server-name`` in the handshake;
for mutual TLS give ``--cert`` and ``--key`` of a client certificate.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, *, service: str = "", timeout: float = 5.0,
          root_certificates: Optional[bytes] = None, private_key: Optional[bytes] = None,
          certificate_chain: Optional[bytes] = None, server_name: Optional[str] = None) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``, ...) of ``service`` at ``address``.

    Raises ``grpc.RpcError`` when the server cannot be asked.
    """
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, creds, options=options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--address", default=None, help="host:port (default: localhost:$PORT, or 50051).")
@click.option("--service", default="", help="Service name to ask about (default: the server).")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--ca", "ca", default=None, envvar="HEALTHCHECK_CA_FILE",
              help="PEM CA to trust [env HEALTHCHECK_CA_FILE; default: TLS_CERT_FILE when set].")
@click.option("--cert", default=None, envvar="HEALTHCHECK_CERT_FILE",
              help="Client certificate (PEM) for mutual TLS [env HEALTHCHECK_CERT_FILE].")
@click.option("--key", default=None, envvar="HEALTHCHECK_KEY_FILE",
              help="Client key (PEM) for mutual TLS [env HEALTHCHECK_KEY_FILE].")
@click.option("--server-name", default=None, envvar="HEALTHCHECK_SERVER_NAME",
              help="Host name the server certificate is checked against "
                   "[env HEALTHCHECK_SERVER_NAME].")
def main(address, service, timeout, ca, cert, key, server_name):
    """Exit 0 when the mef3io-server health service answers SERVING."""
    address = address or f"localhost:{os.environ.get('PORT') or 50051}"
    ca = ca or os.environ.get("TLS_CERT_FILE") or None
    try:
        status = check(address, service=service, timeout=timeout, root_certificates=_read(ca),
                       private_key=_read(key), certificate_chain=_read(cert),
                       server_name=server_name)
    except grpc.RpcError as e:
        click.echo(f"unhealthy: cannot ask {address}: {e.code().name}: {e.details()}", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"unhealthy: {e}", err=True)
        sys.exit(1)
    click.echo(f"{address}: {status}", err=True)
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
