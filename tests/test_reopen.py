"""Sessions that survive a move: the clients open again with the same arguments and retry.

On one server a client's session goes when it expires or is pushed out
(``MAX_SESSIONS``), or when the server restarts; behind a balancer also when
the recording moves to another replica. Reads must then stay what this
client asked for (its ``cache_fs``, its password), never be served through
another client's session.
"""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, launch_server, random_walk, write_session
from mef3io_server.aio import AsyncMef3Client
from mef3io_server.client import Mef3Client
from mef3io_server.reopen import OpenedFiles, says_not_open, was_cut_off

N = 256 * 60
W0, W1 = T0 + 10_000_000, T0 + 20_000_000     # a 10 s window


@pytest.fixture
def one_session_server():
    """An in-process server keeping one session at most: each open pushes the last one out."""
    from mef3io_server.server.app import build_server
    from mef3io_server.server.config import Settings

    running = build_server(Settings(port=0, refresh_interval_s=0.0, max_sessions=1))
    yield f"localhost:{running.port}"
    running.stop(0)


@pytest.fixture
def recording(tmp_path):
    return str(write_session(tmp_path / "rec.mefd",
                             {f"c{i}": random_walk(N, i) for i in range(3)}))


def _calls(c, path):
    """Every read about a file, as (name, result) with what is compared."""
    yield "info", lambda: c.get_file_info(path)["cache_fs"]
    yield "signal", lambda: c.get_signal_range(path, None, W0, W1)
    yield "envelope", lambda: c.get_envelope(path)["c1"]["max"]
    yield "records", lambda: c.get_records(path)
    yield "segments", lambda: c.get_segments(path)["c2"]["runs"]


def _same(a, b) -> bool:
    if isinstance(a, dict) and "array" in a:
        return a["fs"] == b["fs"] and np.array_equal(a["array"], b["array"], equal_nan=True)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    return a == b


def test_a_pushed_out_session_is_opened_again_with_its_cache_fs(one_session_server, recording):
    """Client A reads at cache_fs=64 Hz; B's open pushes A's session out while the file
    stays open (for B). Each of A's calls then gets "not open by this client", opens
    again at 64 Hz and answers as before -- not at the recorded 256 Hz through B's
    session, which is what happened without the claim."""
    with Mef3Client(one_session_server) as a, Mef3Client(one_session_server) as b:
        assert a.open_file(recording, cache_fs=64.0)["file_opened"]
        before = {name: call() for name, call in _calls(a, recording)}
        assert before["info"] == 64.0 and before["signal"]["fs"] == 64.0
        for name, call in _calls(a, recording):
            assert b.open_file(recording)["file_opened"]      # A's session is pushed out
            assert _same(call(), before[name]), name
        # B's session went in turn: B opens again too, at its own rate
        assert b.get_signal_range(recording, None, W0, W1)["fs"] == 256.0


def test_the_asyncio_client_opens_again_too(one_session_server, recording):
    async def main():
        async with AsyncMef3Client(one_session_server) as a, \
                AsyncMef3Client(one_session_server) as b:
            assert (await a.open_file(recording, cache_fs=64.0))["file_opened"]
            ref = await a.get_signal_range(recording, ["c0", "c2"], W0, W1)
            assert (await b.open_file(recording))["file_opened"]
            got = await a.get_signal_range(recording, ["c0", "c2"], W0, W1)
            assert got["fs"] == 64.0 and _same(got, ref)
            assert (await b.open_file(recording))["file_opened"]
            assert (await a.get_file_info(recording))["cache_fs"] == 64.0
            assert (await b.open_file(recording))["file_opened"]
            assert np.array_equal((await a.get_envelope(recording))["c0"]["min"],
                                  (await b.get_envelope(recording))["c0"]["min"])
            assert (await b.open_file(recording))["file_opened"]
            assert (await a.get_segments(recording)) == (await b.get_segments(recording))
            assert (await b.open_file(recording))["file_opened"]
            assert (await a.get_records(recording)) == []
    asyncio.run(main())


def test_a_restarted_server_gets_the_file_opened_again_with_its_password(tmp_path):
    """The server restarts (nothing open any more): the next read opens the encrypted
    recording again with the password it was first opened with; exact."""
    path = str(write_session(tmp_path / "locked.mefd",
                             {f"c{i}": random_walk(N, i) for i in range(2)},
                             password1="pw-one", password2="pw-two"))
    ref = direct_read(path, [], W0, W1, password="pw-two")
    server = launch_server({"PORT": "0"})
    port = server.port
    try:
        with Mef3Client(f"localhost:{port}") as c:
            assert c.open_file(path, password="pw-two")["file_opened"]
            assert np.array_equal(c.get_signal_range(path, None, W0, W1)["array"], ref,
                                  equal_nan=True)
            server.stop()
            server = launch_server({"PORT": str(port)})
            got = c.get_signal_range(path, None, W0, W1)
            assert got["error_message"] == ""
            assert np.array_equal(got["array"], ref, equal_nan=True)
            assert c.get_file_info(path)["access_level"] == "level2"
    finally:
        server.stop()


def test_only_files_the_client_opened_are_opened_again(one_session_server, recording):
    """A client that never opened the file, or closed it, gets the server's answer."""
    with Mef3Client(one_session_server) as a, Mef3Client(one_session_server) as b:
        assert a.open_file(recording)["file_opened"]
        a.close_file(recording)
        res = a.get_signal_range(recording, None, W0, W1)
        assert res["array"] is None and says_not_open(res["error_message"])
        assert b.get_file_info(recording)["file_opened"] is False


def test_opened_files_remember_the_last_successful_open():
    opened = OpenedFiles()
    opened.remember("/a.mefd", {"file_opened": True}, cache_fs=64.0, password=None)
    assert "/a.mefd" in opened and opened.open_args("/a.mefd") == {"cache_fs": 64.0,
                                                                  "password": None}
    opened.remember("/a.mefd", {"file_opened": False, "error_message": "gone"}, cache_fs=None)
    assert "/a.mefd" not in opened and opened.open_args("/a.mefd") is None


class _Failed(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_what_counts_as_a_call_cut_off():
    """What the balancers answer when a replica goes away (seen in test_cluster.py)."""
    assert was_cut_off(_Failed(grpc.StatusCode.UNAVAILABLE,
                               "Received http2 header with status: 502"))
    assert was_cut_off(_Failed(grpc.StatusCode.UNKNOWN,
                               "Stream removed (Data frame with END_STREAM flag received)"))
    assert not was_cut_off(_Failed(grpc.StatusCode.UNKNOWN, "Exception iterating responses"))
    assert not was_cut_off(_Failed(grpc.StatusCode.UNAUTHENTICATED, "no token"))
    assert not was_cut_off(RuntimeError("x is not open"))


def _drive(op, answers):
    """Run an operation of the client base by hand: each Unary gets the next of
    ``answers[rpc]`` (a dict answer, or an exception thrown into the operation);
    returns (result or raised exception, the calls seen)."""
    from mef3io_server.client_base import Done
    from mef3io_server.reopen import Pause

    seen, answer, error = [], None, None
    while True:
        try:
            step = op.throw(error) if error is not None else op.send(answer)
        except StopIteration as done:
            return Done(done.value).value, seen
        except Exception as e:  # noqa: BLE001 - what the operation raised
            return e, seen
        seen.append("pause" if isinstance(step, Pause) else step)
        answer, error = None, None
        if not isinstance(step, Pause):
            got = answers[step].pop(0)
            if isinstance(got, BaseException):
                error = got
            else:
                answer = got


def _op(kind):
    """An operation making one call ``kind`` and returning its answer."""
    def op(*_, **__):
        return (yield kind)
    return op


NOT_OPEN = {"error_message": "/r.mefd is not open by this client here (...): open it again"}
OK = {"error_message": "", "value": 7}


def test_a_moved_ring_gets_a_few_rounds_not_one():
    """The ring changed between the re-open and the call (a lost replica came back):
    the second attempt finds no session either; a third one is made."""
    from mef3io_server.reopen import OpenedFiles, reopened

    opened = OpenedFiles()
    opened.remember("/r.mefd", {"file_opened": True}, cache_fs=64.0)
    answers = {"read": [NOT_OPEN, NOT_OPEN, OK], "open": [{"file_opened": True}] * 2}
    result, seen = _drive(reopened(opened, "/r.mefd", _op("read"), _op("open")), answers)
    assert result == OK and seen == ["read", "open", "read", "open", "read"]


def test_rounds_are_bounded_and_files_not_opened_here_are_left_alone():
    from mef3io_server.reopen import MAX_RETRIES, OpenedFiles, reopened

    opened = OpenedFiles()
    opened.remember("/r.mefd", {"file_opened": True})
    answers = {"read": [NOT_OPEN] * 10, "open": [{"file_opened": True}] * 10}
    result, seen = _drive(reopened(opened, "/r.mefd", _op("read"), _op("open")), answers)
    assert result == NOT_OPEN and seen.count("open") == MAX_RETRIES
    result, seen = _drive(reopened(OpenedFiles(), "/r.mefd", _op("read"), _op("open")),
                          {"read": [NOT_OPEN]})
    assert result == NOT_OPEN and seen == ["read"]
