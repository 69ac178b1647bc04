"""Bearer tokens from AUTH_TOKENS_FILE: right, wrong, missing, malformed, changed while running."""
from __future__ import annotations

import os

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import T0, random_walk, write_session
from mef3io_server.client import Mef3Client, NotAuthenticated
from mef3io_server.healthcheck import check
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.auth import TokenFile, bearer_token

GOOD = "tok-alpha-7f3a9c2e51"
OTHER = "tok-bravo-0b4d6e8f2a77"
NEW = "tok-charlie-55aa33cc11ee99"


def _write(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)          # how an operator (or a secret mount) swaps the file


def _raw_status(address, metadata):
    with grpc.insecure_channel(address) as ch:
        try:
            pb2_grpc.gRPCMef3ServerStub(ch).ListOpenFiles(pb2.ListOpenFilesRequest(),
                                                          metadata=metadata, timeout=10)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


def test_tokens_end_to_end(tmp_path, start_server):
    rec = write_session(tmp_path / "a.mefd", {"c1": random_walk(2560)})
    tokens = tmp_path / "tokens.txt"
    _write(tokens, f"# viewers\n\n  {GOOD}  \n# {NEW} is commented out\n{OTHER}\n")
    h = start_server(AUTH_TOKENS_FILE=tokens)
    assert "bearer tokens required" in h.stderr_text()

    with Mef3Client(h.address, token=GOOD) as c:
        assert c.open_file(str(rec))["file_opened"]
        assert c.get_signal_range(str(rec), ["c1"], *_window())["error_message"] == ""
        assert c.list_open_files() == [str(rec)]
    with Mef3Client(h.address, token=OTHER) as c:   # another identity: GOOD's files unseen
        assert c.list_open_files() == []

    # Missing, wrong, commented-out, malformed: UNAUTHENTICATED with a message saying which.
    with Mef3Client(h.address) as c:
        with pytest.raises(NotAuthenticated, match="requires a bearer token"):
            c.open_file(str(rec))
        with pytest.raises(NotAuthenticated):      # streaming calls too
            c.get_signal_range(str(rec), ["c1"], *_window())
    for bad in ("wrong-token", NEW, GOOD + "x", GOOD[:-1]):
        with Mef3Client(h.address, token=bad) as c:
            with pytest.raises(NotAuthenticated, match="not accepted") as ei:
                c.list_open_files()
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    code, details = _raw_status(h.address, (("authorization", f"Basic {GOOD}"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer <token>" in details
    code, _ = _raw_status(h.address, (("authorization", f"Bearer {GOOD}"),))
    assert code == grpc.StatusCode.OK

    # Health needs no token; reflection does.
    assert check(h.address) == "SERVING"
    with grpc.insecure_channel(h.address) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            list(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The file changes while the server runs: NEW is added, GOOD revoked.
    _write(tokens, f"{OTHER}\n{NEW}\n")
    with Mef3Client(h.address, token=NEW) as c:
        assert c.list_open_files() == []
    with Mef3Client(h.address, token=GOOD) as c:
        with pytest.raises(NotAuthenticated):
            c.list_open_files()
    # Emptied: every call is refused (fails closed), health still answers.
    _write(tokens, "# nobody\n")
    with Mef3Client(h.address, token=OTHER) as c:
        with pytest.raises(NotAuthenticated):
            c.list_open_files()
    assert check(h.address) == "SERVING"

    h.stop()
    log = h.stderr_text()
    assert "unauthenticated" in log            # refused calls are logged (without tokens)
    for t in (GOOD, OTHER, NEW, "wrong-token"):
        assert t not in log


def _window():
    return T0, T0 + 2_000_000


def test_token_file_rules(tmp_path):
    p = tmp_path / "t"
    p.write_text("# c\n\nabc\n  def  \n")
    tf = TokenFile(str(p))
    assert tf.accepts("abc") and tf.accepts("def")
    assert not tf.accepts("# c") and not tf.accepts("") and not tf.accepts("ab")
    p.write_text("ghi-longer\n")
    assert tf.accepts("ghi-longer") and not tf.accepts("abc")
    p.unlink()
    assert not tf.accepts("ghi-longer")        # gone: refuse everything
    p.write_text("back\n")
    assert tf.accepts("back")


def test_bearer_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == ("abc", "")
    assert bearer_token([("authorization", "bearer  abc ")]) == ("abc", "")
    assert bearer_token([])[0] is None
    assert bearer_token([("authorization", "Bearer ")])[0] is None
    assert bearer_token([("authorization", "Token abc")])[0] is None
