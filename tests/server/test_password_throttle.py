"""Online password guessing is slowed per identity and file (issue 19, item 10)."""
from __future__ import annotations

import re
import time

import pytest

from conftest import random_walk, start_with_tokens, two_clients, write_session
from mef3io_server.server.errors import PasswordRequired

GUESSER, OWNER = "tok-guesser-6a1f0c9e2d", "tok-owner-b35e7a0d41"
PW1, PW2 = "right-level-one", "right-level-two"


@pytest.fixture
def enc(tmp_path):
    return write_session(tmp_path / "locked.mefd", {"a": random_walk(256 * 10)},
                         password1=PW1, password2=PW2)


@pytest.mark.parametrize("already_open", [False, True], ids=["closed", "open"])
def test_guessing_is_slowed_and_logged(enc, tmp_path, start_server, already_open):
    h = start_with_tokens(start_server, tmp_path, f"{GUESSER}\n{OWNER}\n")
    path = str(enc)
    with two_clients(h.address, ("owner", OWNER), ("guess", GUESSER)) as (owner, guesser):
        if already_open:   # a second client's password is checked by a probe open
            assert owner.open_file(path, password=PW1)["file_opened"]
        checked = throttled = 0
        end = time.monotonic() + 20
        while checked < 7 and time.monotonic() < end:
            answer = guesser.open_file(path, password=f"guess-{checked + throttled}")
            assert not answer["file_opened"]
            if "password given is wrong" in answer["error_message"]:
                checked += 1
                if checked == 6:
                    first_failures = time.monotonic()
            else:
                assert re.search(r"wrong passwords were given for it in a row: try again in "
                                 r"\d+ s", answer["error_message"]), answer["error_message"]
                throttled += 1
        # 5 failures cost nothing, the 6th 1 s, the 7th 2 s, ...: the 7th is checked a
        # second after the 6th at the earliest, and every try meanwhile is refused.
        assert checked == 7 and throttled > checked
        # (The server's second starts when it records the 6th failure, before its
        # answer travels back to be timed here: a few milliseconds are allowed.)
        assert time.monotonic() - first_failures >= 0.95
        # While the guesser waits, the right password is refused unchecked too ...
        assert "try again in" in guesser.open_file(path, password=PW1)["error_message"]
        # ... and another identity is not held up by the guesser's failures.
        assert owner.open_file(path, password=PW2)["file_opened"]
        assert owner.close_file(path)["error_message"] == ""
    h.stop()
    log = h.stderr_text()
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln and "wrong password for" in ln]
    assert len(warnings) == checked, warnings
    for secret in (PW1, PW2, "guess-1", GUESSER, OWNER):
        assert secret not in log


def test_throttle_rules_with_a_clock():
    from mef3io_server.server.callers import Caller
    from mef3io_server.server.password_throttle import PasswordThrottle

    now = [100.0]
    t = PasswordThrottle(clock=lambda: now[0])
    a, b = Caller("alice", "x"), Caller("bob", "x")
    for _ in range(PasswordThrottle.FREE_FAILURES):
        t.check(a, "/f", "f")
        t.failed(a, "/f", "f")
    t.check(a, "/f", "f")                   # the 5th failure imposes no wait yet
    t.failed(a, "/f", "f")                  # the 6th: 1 s
    with pytest.raises(PasswordRequired, match="6 wrong passwords .* try again in 1 s"):
        t.check(a, "/f", "f")
    t.check(b, "/f", "f")                   # another identity
    t.check(a, "/g", "g")                   # another file
    t.check(Caller("alice", "other-client-id"), "/h", "h")
    with pytest.raises(PasswordRequired):   # a new client id is the same identity
        t.check(Caller("alice", "other-client-id"), "/f", "f")
    now[0] += 1.01
    t.check(a, "/f", "f")
    t.failed(a, "/f", "f")                  # the 7th: 2 s
    now[0] += 1.5
    with pytest.raises(PasswordRequired):
        t.check(a, "/f", "f")
    now[0] += 0.6
    t.succeeded(a, "/f")                    # a right password clears the count
    t.failed(a, "/f", "f")
    t.check(a, "/f", "f")
    # Without tokens, the guesser is the address: client ids do not matter.
    c1, c2 = Caller("", "id-1", "ipv4:10.0.0.7"), Caller("", "id-2", "ipv4:10.0.0.7")
    for _ in range(PasswordThrottle.FREE_FAILURES + 1):
        t.failed(c1, "/f", "f")
    with pytest.raises(PasswordRequired):
        t.check(c2, "/f", "f")
    t.check(Caller("", "id-1", "ipv4:10.0.0.8"), "/f", "f")
