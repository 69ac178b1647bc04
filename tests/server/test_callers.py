"""Sessions belong to the authenticated identity, not to a client id (issue 19, item 4).

A client id is a name tag anyone may send. With tokens on, the holder of
another token who sends the same client id gets sessions of its own: it
cannot read what the first unlocked, nor close its sessions, nor see its open
files; the log names the identity (the token's name), never the token.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, start_with_tokens, two_clients, write_session

SEC = 1_000_000
TOK1, TOK2 = "tok-ward-one-0d7c1e5a93", "tok-ward-two-b7f4a10e62"
PW1, PW2 = "level-one-pw", "level-two-pw"


@pytest.fixture
def enc(tmp_path):
    return write_session(tmp_path / "enc.mefd",
                         {"a": random_walk(256 * 30), "b": random_walk(256 * 30, 1)},
                         password1=PW1, password2=PW2)


def test_a_client_id_grants_nothing_of_another_identity(enc, tmp_path, start_server):
    h = start_with_tokens(start_server, tmp_path, f"{TOK1}\n{TOK2}\n")
    path = str(enc)
    with two_clients(h.address, ("ward-3", TOK1), ("ward-3", TOK2)) as (one, two):
        assert one.open_file(path, password=PW1)["file_opened"]
        want = direct_read(enc, ["a"], T0, T0 + SEC, password=PW1)
        assert np.array_equal(one.get_signal_range(path, ["a"], T0, T0 + SEC)["array"], want)

        # Same client id, other token: no read without its own password ...
        refused = two.get_signal_range(path, ["a"], T0, T0 + SEC)
        assert "encrypted: open it yourself with its password" in refused["error_message"]
        assert "encrypted" in two.get_file_info(path)["error_message"]
        # ... no closing the other's session, no seeing its files.
        assert "not open by this client" in two.close_file(path)["error_message"]
        assert two.list_open_files() == []
        assert one.list_open_files() == [path]
        assert np.array_equal(one.get_signal_range(path, ["a"], T0, T0 + SEC)["array"], want)

        # With its own password it has a session of its own, closed on its own.
        assert two.open_file(path, password=PW2)["file_opened"]
        assert two.list_open_files() == [path]
        assert two.close_file(path)["error_message"] == ""
        assert np.array_equal(one.get_signal_range(path, ["a"], T0, T0 + SEC)["array"], want)


def test_logs_name_the_identity_never_the_token(enc, tmp_path, start_server):
    h = start_with_tokens(start_server, tmp_path,
                          f"# name token\nneurology-viewer {TOK1}\n{TOK2}\n")
    path = str(enc)
    with two_clients(h.address, ("ward-3", TOK1), ("ward-3", TOK2)) as (one, two):
        assert one.open_file(path, password=PW1)["file_opened"]
        assert one.get_signal_range(path, ["a"], T0, T0 + SEC)["error_message"] == ""
        assert two.get_signal_range(path, ["a"], T0, T0 + SEC)["error_message"]
    h.stop()
    log = h.stderr_text()
    reads = [ln for ln in log.splitlines() if "GetSignalRange" in ln]
    assert any("identity=neurology-viewer client=ward-3" in ln and "outcome=ok" in ln
               for ln in reads), reads
    import hashlib

    unnamed = "token-" + hashlib.sha256(TOK2.encode()).hexdigest()[:8]
    assert any(f"identity={unnamed} client=ward-3" in ln and "outcome=error" in ln
               for ln in reads), reads
    for secret in (TOK1, TOK2, PW1, PW2):
        assert secret not in log
