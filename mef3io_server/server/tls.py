"""TLS for the gRPC port: ``TLS_CERT_FILE``, ``TLS_KEY_FILE``, ``TLS_CLIENT_CA_FILE``.

* Certificate and key (PEM) turn TLS on; without them the port is plaintext,
  as the published server's.
* ``TLS_CLIENT_CA_FILE`` (PEM, one or more CA certificates) adds mutual TLS:
  a client must present a certificate signed by one of them, or the
  handshake fails.
* The files are re-read when they change (size, mtime or inode), at the next
  handshake, so a renewed certificate is used without a restart.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

import grpc

from .config import ConfigError, Settings

log = logging.getLogger("mef3io_server.tls")


def _read_pem(variable: str, path: str, marker: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(variable, path, f"cannot be read ({e.strerror})") from None
    if b"-----BEGIN" not in data or marker.encode() not in data:
        raise ConfigError(variable, path, f"is not a PEM file holding a {marker.lower()}")
    return data


def _stamp(paths) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class _CertificateFiles:
    """The PEM files, read again when they change (the dynamic credentials' fetcher)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._paths = [p for p in (settings.tls_cert_file, settings.tls_key_file,
                                   settings.tls_client_ca_file) if p]
        self._seen = _stamp(self._paths)
        self.initial = self._config()

    def _config(self) -> grpc.ServerCertificateConfiguration:
        s = self.settings
        cert = _read_pem("TLS_CERT_FILE", s.tls_cert_file, "CERTIFICATE")
        key = _read_pem("TLS_KEY_FILE", s.tls_key_file, "PRIVATE KEY")
        ca = (_read_pem("TLS_CLIENT_CA_FILE", s.tls_client_ca_file, "CERTIFICATE")
              if s.tls_client_ca_file else None)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> Optional[grpc.ServerCertificateConfiguration]:
        """A new configuration when the files changed, else None (keep the current one)."""
        stamp = _stamp(self._paths)
        if stamp == self._seen:
            return None
        with self._lock:
            if stamp == self._seen:
                return None
            self._seen = stamp
            try:
                config = self._config()
            except ConfigError as e:
                log.error("TLS files changed but cannot be used (%s); keeping the previous "
                          "certificate", e)
                return None
            log.info("TLS certificate files changed: using the new ones")
            return config


def server_credentials(settings: Settings) -> Optional[grpc.ServerCredentials]:
    """The gRPC server credentials the settings ask for, or None for plaintext.

    Raises :class:`ConfigError` naming the variable whose file is not usable PEM.
    """
    if not settings.tls_cert_file:
        return None
    files = _CertificateFiles(settings)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch,
        require_client_authentication=bool(settings.tls_client_ca_file))
