"""Logs: one line per call (text or JSON) on stderr, never a password or a token."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time

import grpc
import pytest

from conftest import T0, random_walk, write_session
from mef3io_server.client import Mef3Client, NotAuthenticated
from mef3io_server.healthcheck import check
from mef3io_server.server.logs import configure_logging

TOKEN = "s3cr3t-token-9d8c7b6a5f"
WRONG_TOKEN = "guessed-token-1a2b3c4d"


def _stopped_log(h) -> str:
    h.stop()
    return h.stderr_text()


def test_json_call_lines_without_secrets(golden, tmp_path, start_server):
    case = next(c for c in json.loads((golden / "manifest.json").read_text())["cases"]
                if c["name"] == "enc_both")
    pw1, pw2 = case["password1"], case["password2"]
    enc = str(golden / "enc_both.mefd")
    t0 = case["channels"]["ch1"]["start_time"]
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    h = start_server(LOG_FORMAT="json", LOG_LEVEL="DEBUG", AUTH_TOKENS_FILE=tokens)

    with Mef3Client(h.address, client_id="viewer-7", token=TOKEN) as c:
        assert c.open_file(enc, password=pw1)["file_opened"]
        res = c.get_signal_range(enc, ["ch1"], t0, t0 + 2_000_000)
        assert res["array"].shape == (1, 512)
    with Mef3Client(h.address, client_id="viewer-8", token=TOKEN) as c:
        assert not c.open_file(enc, password=pw2 + "-wrong")["file_opened"]
        assert c.open_file(enc, password=pw2)["file_opened"]
    with Mef3Client(h.address, token=WRONG_TOKEN) as c:
        with pytest.raises(NotAuthenticated):
            c.open_file(enc, password=pw1)
    assert check(h.address) == "SERVING"

    text = _stopped_log(h)
    for secret in (pw1, pw2, pw2 + "-wrong", TOKEN, WRONG_TOKEN, "Bearer"):
        assert secret not in text, secret
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    other = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert not other, other
    calls = [r["call"] for r in records if "call" in r]
    read = next(c for c in calls if c["rpc"] == "GetSignalRange")
    identity = "token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]   # the token unnamed
    assert read == {"rpc": "GetSignalRange", "identity": identity, "client": "viewer-7",
                    "file": enc, "start_uutc": t0, "end_uutc": t0 + 2_000_000, "channels": 1,
                    "bytes": 512 * 4, "duration_ms": read["duration_ms"], "outcome": "ok"}
    assert read["duration_ms"] > 0
    outcomes = [(c["rpc"], c.get("client"), c["outcome"]) for c in calls]
    assert ("OpenFile", "viewer-8", "error") in outcomes
    assert ("OpenFile", "viewer-8", "ok") in outcomes
    assert any(o[0] == "OpenFile" and o[2] == "unauthenticated" for o in outcomes)
    assert ("Check", "", "ok") in outcomes                       # health, at DEBUG
    wrong = next(c for c in calls if c.get("client") == "viewer-8" and c["outcome"] == "error")
    assert "password given is wrong" in wrong["error"]


def test_text_lines_and_level(tmp_path, start_server):
    rec = write_session(tmp_path / "t.mefd", {"c1": random_walk(2560), "c2": random_walk(2560)})
    h = start_server(LOG_FORMAT="text")
    with Mef3Client(h.address, client_id="ward-3") as c:
        c.open_file(str(rec))
        c.get_signal_range(str(rec), ["c1", "c2"], T0, T0 + 1_000_000)
    text = _stopped_log(h)
    line = next(ln for ln in text.splitlines() if "GetSignalRange" in ln)
    assert re.search(rf"INFO mef3io_server.calls: GetSignalRange client=ward-3 file={rec} "
                     rf"window=\[{T0}, {T0 + 1_000_000}\) channels=2 bytes=2048 "
                     r"duration_ms=[0-9.]+ outcome=ok$", line), line
    assert "Check client" not in text                           # health only at DEBUG

    quiet = start_server(LOG_LEVEL="WARNING")
    with Mef3Client(quiet.address) as c:
        c.open_file(str(rec))
    text = _stopped_log(quiet)
    assert "OpenFile" not in text and "listening on port" in text


def test_logging_goes_to_stderr_only():
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        configure_logging("INFO", "json")
        handlers = logging.getLogger().handlers
        assert len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler
        assert handlers[0].stream is sys.stderr
    finally:
        logging.getLogger().handlers[:] = saved[0]
        logging.getLogger().setLevel(saved[1])


def test_control_characters_cannot_forge_log_lines(tmp_path, start_server):
    h = start_server(LOG_FORMAT="text")
    with Mef3Client(h.address, client_id="ward-4") as c:
        r = c.open_file("/nowhere\n2026-01-01 00:00:00,000 INFO forged: line.mefd")
        assert not r["file_opened"]
    text = _stopped_log(h)
    assert not any(ln.startswith("2026-01-01") for ln in text.splitlines())
    assert "file=/nowhere?2026-01-01" in text


def test_token_less_calls_cannot_flood_the_log(tmp_path, start_server):
    from mef3io_server import messages
    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
    from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    h = start_server(AUTH_TOKENS_FILE=tokens)
    time.sleep(0.5)
    before = len(h.stderr_text())
    long_path = "/" + "p" * 4000 + ".mefd"
    with grpc.insecure_channel(h.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        for i in range(400):
            try:
                stub.OpenFile(pb2.OpenFileRequest(file_path=long_path), timeout=10,
                              metadata=messages.call_metadata(f"c{i}"))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
    text = _stopped_log(h)
    added = text[before:]
    assert len(added) < 4000, f"{len(added)} bytes of log for 400 refused calls"
    assert "refused 1 call(s) without an accepted bearer token" in added
    assert long_path not in added


def test_json_lines_escape_separators_and_direction_overrides(start_server):
    h = start_server(LOG_FORMAT="json")
    tricky = "/no\u2028where/\u202eevil\u2029.mefd"
    with Mef3Client(h.address, client_id="ward-5") as c:
        assert not c.open_file(tricky)["file_opened"]
    text = _stopped_log(h)
    for ch in ("\u2028", "\u2029", "\u202e"):
        assert ch not in text
    lines = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    call = next(r["call"] for r in lines if r.get("call", {}).get("rpc") == "OpenFile")
    assert call["outcome"] == "error" and "?where/?evil?.mefd" in call["error"]
