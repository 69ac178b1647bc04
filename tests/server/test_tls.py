"""TLS and mutual TLS on the gRPC port, with certificates made in the test."""
from __future__ import annotations

import datetime
import ipaddress
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, launch_server, random_walk, write_session
from mef3io_server.client import Mef3Client, NotAuthenticated, ServerUnreachable
from mef3io_server.healthcheck import check

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer=None, issuer_key=None, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return b.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost, a client certificate, and a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    out = {}

    def save(name, data: bytes):
        out[name] = d / name
        out[name].write_bytes(data)

    ca_key = _key()
    ca = _cert("test CA", ca_key, ca=True)
    srv_key, cli_key, other_key = _key(), _key(), _key()
    save("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    save("server.pem", _cert("localhost", srv_key, ca, ca_key, server=True)
         .public_bytes(serialization.Encoding.PEM))
    save("server.key", _pem_key(srv_key))
    save("client.pem", _cert("viewer-1", cli_key, ca, ca_key).public_bytes(
        serialization.Encoding.PEM))
    save("client.key", _pem_key(cli_key))
    other = _cert("other CA", other_key, ca=True)
    save("other_ca.pem", other.public_bytes(serialization.Encoding.PEM))
    save("other_client.pem", _cert("intruder", cli_key, other, other_key).public_bytes(
        serialization.Encoding.PEM))
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write_session(tmp_path_factory.mktemp("rec") / "tls.mefd",
                         {"c1": random_walk(5120), "c2": random_walk(5120, 3)})


def _read_ok(client: Mef3Client, path) -> None:
    info = client.open_file(str(path))
    assert info["file_opened"], info["error_message"]
    res = client.get_signal_range(str(path), ["c1", "c2"], T0, T0 + 4_000_000)
    assert np.array_equal(res["array"], direct_read(path, ["c1", "c2"], T0, T0 + 4_000_000),
                          equal_nan=True)


def test_tls_server(pki, recording, start_server):
    h = start_server(TLS_CERT_FILE=pki["server.pem"], TLS_KEY_FILE=pki["server.key"])
    assert "TLS on" in h.stderr_text()
    with Mef3Client(h.address, root_certificates=str(pki["ca.pem"])) as c:   # a path
        _read_ok(c, recording)
    with Mef3Client(h.address, root_certificates=pki["ca.pem"].read_bytes()) as c:  # bytes
        _read_ok(c, recording)

    # A plaintext client fails with a clear error (still a grpc.RpcError).
    with Mef3Client(h.address) as c:
        with pytest.raises(ServerUnreachable, match="root_certificates") as ei:
            c.open_file(str(recording))
        assert isinstance(ei.value, grpc.RpcError) and isinstance(ei.value, ConnectionError)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ServerUnreachable):
            c.get_signal_range(str(recording), ["c1"], T0, T0 + 1_000_000)

    # A client trusting another CA fails too, with the TLS hint.
    with Mef3Client(h.address, root_certificates=pki["other_ca.pem"]) as c:
        with pytest.raises(ServerUnreachable, match="uses TLS"):
            c.list_open_files()

    # Health over TLS, as the container's probe does it.
    assert check(h.address, root_certificates=pki["ca.pem"].read_bytes()) == "SERVING"


def test_mutual_tls(pki, recording, start_server):
    h = start_server(TLS_CERT_FILE=pki["server.pem"], TLS_KEY_FILE=pki["server.key"],
                     TLS_CLIENT_CA_FILE=pki["ca.pem"])
    assert "TLS mutual" in h.stderr_text()
    with Mef3Client(h.address, root_certificates=pki["ca.pem"], private_key=pki["client.key"],
                    certificate_chain=pki["client.pem"]) as c:
        _read_ok(c, recording)
    for kw in ({}, {"private_key": pki["client.key"],
                    "certificate_chain": pki["other_client.pem"]}):
        with Mef3Client(h.address, root_certificates=pki["ca.pem"], **kw) as c:
            with pytest.raises(ServerUnreachable):
                c.list_open_files()


def test_tls_with_tokens_unauthenticated_is_clear(pki, recording, start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("tls-token-123456\n")
    h = start_server(TLS_CERT_FILE=pki["server.pem"], TLS_KEY_FILE=pki["server.key"],
                     AUTH_TOKENS_FILE=tokens)
    with Mef3Client(h.address, root_certificates=pki["ca.pem"]) as c:
        with pytest.raises(NotAuthenticated, match="bearer token"):
            c.open_file(str(recording))
    with Mef3Client(h.address, root_certificates=pki["ca.pem"], token="tls-token-123456") as c:
        _read_ok(c, recording)


@pytest.mark.parametrize("var", ["TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_bad_pem_stops_start_up_naming_the_variable(pki, tmp_path, var):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file\n")
    env = {"TLS_CERT_FILE": pki["server.pem"], "TLS_KEY_FILE": pki["server.key"], var: junk}
    h = launch_server(env, expect_port=False)
    assert h.proc.wait(60) != 0
    for _ in range(100):                    # the reader thread may lag the exit a little
        if var in h.stderr_text():
            break
        time.sleep(0.05)
    assert var in h.stderr_text() and "PEM" in h.stderr_text()


def test_tls_client_against_plaintext_server(pki, start_server):
    h = start_server()
    with Mef3Client(h.address, root_certificates=pki["ca.pem"]) as c:
        with pytest.raises(ServerUnreachable, match="uses TLS"):
            c.list_open_files()


def test_renewed_certificate_is_used_without_restart(pki, tmp_path, start_server):
    """The server's files are replaced by a certificate from another CA: new handshakes use it."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki["server.pem"].read_bytes())
    key.write_bytes(pki["server.key"].read_bytes())
    h = start_server(TLS_CERT_FILE=cert, TLS_KEY_FILE=key)
    with Mef3Client(h.address, root_certificates=pki["ca.pem"]) as c:
        assert c.list_open_files() == []

    new_ca_key, new_key = _key(), _key()
    new_ca = _cert("renewal CA", new_ca_key, ca=True)
    renewed = _cert("localhost", new_key, new_ca, new_ca_key, server=True)
    for path, data in ((key, _pem_key(new_key)),
                       (cert, renewed.public_bytes(serialization.Encoding.PEM))):
        tmp = path.with_suffix(".new")
        tmp.write_bytes(data)
        tmp.replace(path)
    new_ca_pem = new_ca.public_bytes(serialization.Encoding.PEM)
    with Mef3Client(h.address, root_certificates=new_ca_pem) as c:
        assert c.list_open_files() == []
    with Mef3Client(h.address, root_certificates=pki["ca.pem"]) as c:
        with pytest.raises(ServerUnreachable):
            c.list_open_files()
    assert "TLS certificate files changed" in h.stderr_text()
