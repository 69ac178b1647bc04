"""Encrypted recordings: the golden enc_both session, with each password level, none, a wrong one."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from conftest import direct_read
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.config import Settings
from mef3io_server.server.engine import Engine
from mef3io_server.server.errors import PasswordRequired


@pytest.fixture
def enc(golden):
    case = next(c for c in json.loads((golden / "manifest.json").read_text())["cases"]
                if c["name"] == "enc_both")
    ch = case["channels"]["ch1"]
    return golden / "enc_both.mefd", case["password1"], case["password2"], ch


def test_encrypted_golden_end_to_end(enc, start_server, client_factory):
    path, pw1, pw2, ch = enc
    t0, t1 = ch["start_time"], ch["end_time"]
    h = start_server(LOG_LEVEL="DEBUG")
    p = str(path)
    none, wrong, one, two, reader = (client_factory(h.address) for _ in range(5))

    # Nobody has it open: no password, then a wrong one.
    r = none.open_file(p)
    assert not r["file_opened"] and "a password is needed" in r["error_message"]
    r = wrong.open_file(p, password="not-" + pw1)
    assert not r["file_opened"] and "password given is wrong" in r["error_message"]
    assert h.stderr_text().count("enc_both") >= 2     # the calls were logged

    # Level 1 opens it and reads exactly what mef3io reads.
    r = one.open_file(p, password=pw1)
    assert r["file_opened"], r["error_message"]
    assert r["encrypted"] and r["access_level"] == "level1"
    ref = direct_read(path, ["ch1"], t0, t1, password=pw1)
    got = one.get_signal_range(p, ["ch1"], t0, t1)
    assert got["error_message"] == "" and np.array_equal(got["array"], ref, equal_nan=True)

    # While it is open: no password and a wrong one are still refused ...
    r = none.open_file(p)
    assert not r["file_opened"] and "a password is needed" in r["error_message"]
    r = wrong.open_file(p, password=pw2 + "x")
    assert not r["file_opened"] and "password given is wrong" in r["error_message"]
    # ... and so are their reads through level 1's open reader, and a reader that never opened.
    for c in (none, wrong, reader):
        got = c.get_signal_range(p, ["ch1"], t0, t1)
        assert got["array"] is None and "encrypted" in got["error_message"]
        info = c.get_file_info(p)
        assert not info["file_opened"] and "encrypted" in info["error_message"]
        with pytest.raises(RuntimeError, match="encrypted"):
            c.get_envelope(p)

    # Level 2 joins the open recording and reports its own level.
    r = two.open_file(p, password=pw2)
    assert r["file_opened"] and r["access_level"] == "level2", r["error_message"]
    got = two.get_signal_range(p, ["ch1"], t0, t1)
    assert np.array_equal(got["array"], ref, equal_nan=True)
    assert one.get_file_info(p)["access_level"] == "level1"

    # Level 1 closes; level 2 still reads; the others are still refused.
    one.close_file(p)
    assert np.array_equal(two.get_signal_range(p, ["ch1"], t0, t1)["array"], ref, equal_nan=True)
    assert one.get_signal_range(p, ["ch1"], t0, t1)["array"] is None

    # A call without a client id would share the default session: refused for encrypted files.
    with grpc.insecure_channel(h.address) as ch_:
        resp = pb2_grpc.gRPCMef3ServerStub(ch_).OpenFile(
            pb2.OpenFileRequest(file_path=p, password=pw1))
    assert not resp.file_opened and "client id" in resp.error_message

    h.stop()
    log = h.stderr_text()
    assert "OpenFile" in log and "GetSignalRange" in log
    for secret in (pw1, pw2, "not-" + pw1, pw2 + "x"):
        assert secret not in log


def test_passwords_kept_only_while_open(enc):
    """A second password is checked without registering a reader; all go on close."""
    path, pw1, pw2, _ = enc
    eng = Engine(Settings(port=0))
    eng.start()
    try:
        eng.open_file("a", str(path), password=pw1)
        eng.open_file("b", str(path), password=pw2)
        with pytest.raises(PasswordRequired, match="wrong"):
            eng.open_file("c", str(path), password="nope")
        assert len(eng.versions.registered()) == 1                 # the probes left nothing behind
        rec = eng.sessions.recording(eng.paths.resolve_recording(str(path)))
        assert rec.password == pw1 and "pass" not in repr(rec.source)
        eng.close_file("a", str(path))
        assert rec.password == pw1                    # b still reads through it
        eng.close_file("b", str(path))
        assert rec.closed and rec.password == "" and not eng.versions.registered()
    finally:
        eng.close()


def test_process_decoder_reads_encrypted(enc):
    """Decode workers get the password with each job (they open their own readers)."""
    path, pw1, _, ch = enc
    eng = Engine(Settings(port=0, use_process_pool=True, reader_processes=1,
                          prefetch_processes=1))
    eng.start()
    try:
        eng.open_file("a", str(path), password=pw1)
        t0, t1 = ch["start_time"], ch["end_time"]
        read = eng.read_signal("a", str(path), ["ch1"], t0, t1)
        rows = np.concatenate([r for _, _, _, r in read.chunks], axis=1)
        assert np.array_equal(rows, direct_read(path, ["ch1"], t0, t1, password=pw1),
                              equal_nan=True)
    finally:
        eng.close()
