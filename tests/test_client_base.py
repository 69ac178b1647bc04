"""What both clients share (client_base): times in every form, one exception hierarchy,
raise_errors, windows outside the data, addresses. Every test runs against a real server
with the synchronous and the asyncio client, which must behave alike.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import warnings

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk

from mef3io_server.aio import AsyncMef3Client
from mef3io_server.client import Mef3Client
from mef3io_server.client_base import resolve_address
from mef3io_server.exceptions import (InvalidArgument, Mef3Error, OpenFailed, ReadFailed,
                                      RequestRefused, ServerUnreachable, TimeSpecError,
                                      WindowOutsideData, WindowWarning)

S = 1_000_000
HOUR = 3600 * S


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from conftest import write_session

    d = tmp_path_factory.mktemp("client_base")
    return str(write_session(d / "hour.mefd", {f"c{i}": random_walk(256 * 3600, i)
                                               for i in range(2)}))


class _Blocking:
    """An AsyncMef3Client whose coroutines are run to completion on its own loop."""

    def __init__(self, **kw):
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._make(kw))

    @staticmethod
    async def _make(kw):
        return AsyncMef3Client(**kw)

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        async def call(*a, **k):        # awaited from a coroutine of this file, as users do
            return await attr(*a, **k)

        return lambda *a, **k: self._loop.run_until_complete(call(*a, **k))

    def close(self):
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request):
    made = []

    def make(address, **kw):
        c = Mef3Client(address, **kw) if request.param == "sync" else _Blocking(address=address,
                                                                               **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_times_in_every_form_the_cli_takes(make_client, shared_server, recording):
    c = make_client(shared_server.address)
    assert c.open_file(recording)["file_opened"]
    a, b = T0 + 600 * S, T0 + 610 * S
    ref = direct_read(recording, ["c0"], a, b)
    start = dt.datetime.fromtimestamp(a / S, tz=dt.timezone.utc)
    forms = [
        (start.isoformat(), (start + dt.timedelta(seconds=10)).isoformat()),  # ISO 8601
        (start.replace(tzinfo=None), start.replace(tzinfo=None) + dt.timedelta(seconds=10)),
        (start.astimezone(dt.timezone(dt.timedelta(hours=5))), b),             # aware, mixed
        (np.datetime64(a, "us"), np.datetime64(b, "us")),
        ("+10m", "+10m10s"),                                                   # offsets
        (dt.timedelta(minutes=10), np.timedelta64(610, "s")),
        (str(a), float(b)),
    ]
    for t0, t1 in forms:
        res = c.get_signal_range(recording, ["c0"], t0, t1)
        assert res["start_uutc"] == a and res["end_uutc"] == b, (t0, t1)
        assert np.array_equal(res["array"], ref, equal_nan=True), (t0, t1)
    env = c.get_envelope(recording, ["c0"], "+10m", start + dt.timedelta(minutes=5))
    assert env["c0"]["start_uutc"][0] <= a + 10 * S and env["c0"]["end_uutc"][-1] >= a + 290 * S
    assert c.get_records(recording, None, start, "+20m") == []
    with pytest.raises(TimeSpecError, match="cannot read the time") as e:
        c.get_signal_range(recording, ["c0"], "yesterday", b)
    assert isinstance(e.value, ValueError) and e.value.path == recording


def test_errors_are_one_hierarchy_with_status_and_the_servers_message(make_client,
                                                                      shared_server,
                                                                      recording, tmp_path):
    c = make_client(shared_server.address)
    missing = str(tmp_path / "nothing.mefd")
    # The published shapes by default...
    info = c.open_file(missing)
    assert info["file_opened"] is False and "nothing.mefd" in info["error_message"]
    assert c.open_file(recording)["file_opened"]
    res = c.get_signal_range(recording, ["nope"], T0, T0 + S)
    assert res["array"] is None and res["shape"] is None and "nope" in res["error_message"]
    # ...and what always raised raises a RequestRefused, still a RuntimeError.
    with pytest.raises(RuntimeError) as e:
        c.get_envelope(recording, ["nope"])
    assert isinstance(e.value, RequestRefused) and isinstance(e.value, Mef3Error)
    assert e.value.status == grpc.StatusCode.OK and e.value.rpc == "GetEnvelope"
    assert e.value.path == recording and "nope" in e.value.server_message
    for call in (lambda: c.get_records(missing), lambda: c.get_segments(missing)):
        with pytest.raises(RequestRefused):
            call()


def test_raise_errors_turns_every_failed_answer_into_an_exception(make_client, shared_server,
                                                                  recording, tmp_path):
    c = make_client(shared_server.address, raise_errors=True)
    missing = str(tmp_path / "nothing.mefd")
    with pytest.raises(OpenFailed, match="nothing.mefd") as e:
        c.open_file(missing)
    assert e.value.rpc == "OpenFile" and e.value.status == grpc.StatusCode.OK
    assert c.open_file(recording)["file_opened"]
    with pytest.raises(ReadFailed, match="nope") as e:
        c.get_signal_range(recording, ["nope"], T0, T0 + S)
    assert isinstance(e.value, RequestRefused) and e.value.path == recording
    with pytest.raises(RequestRefused):
        c.get_file_info(missing)
    res = c.get_signal_range(recording, ["c1"], T0, T0 + S)
    assert res["error_message"] == "" and res["shape"] == (2 // 2, 256)


def test_unreachable_server_raises_the_same_for_both_clients(make_client):
    c = make_client("localhost:1", timeout=5)
    with pytest.raises(ServerUnreachable, match="cannot reach mef3io-server at localhost:1") as e:
        c.list_open_files()
    assert isinstance(e.value, ConnectionError) and isinstance(e.value, grpc.RpcError)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.rpc == "ListOpenFiles"


def test_a_window_outside_the_data_is_said(make_client, shared_server, recording):
    c = make_client(shared_server.address)
    assert c.open_file(recording)["file_opened"]
    # Seconds typed for microseconds: 1970, no data at all.
    with pytest.warns(WindowWarning, match=r"holds no data.*looks like seconds") as w:
        res = c.get_signal_range(recording, ["c0"], T0 // S, T0 // S + 10 * S)
    assert np.isnan(res["array"]).all()    # the protocol's answer is kept: NaN
    assert w[0].filename == __file__       # said where the user's code asked
    # A day asked of an hour: 23 h are NaN.
    with pytest.warns(WindowWarning, match="ends 23h after the data"):
        res = c.get_signal_range(recording, ["c0"], T0, T0 + 24 * HOUR, n_points=100)
    # Inside the data, or the last few seconds past its end: nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.get_signal_range(recording, ["c0"], T0 + HOUR - 5 * S, T0 + HOUR + 2 * S)
    strict = make_client(shared_server.address, raise_errors=True)
    assert strict.open_file(recording)["file_opened"]
    with pytest.raises(WindowOutsideData, match="holds no data") as e:
        strict.get_signal_range(recording, None, "+2h", "+2h10s")
    assert isinstance(e.value, ValueError) and isinstance(e.value, InvalidArgument)


def test_addresses_get_the_default_port_and_the_environment_default(monkeypatch):
    monkeypatch.delenv("MEF3IO_ADDRESS", raising=False)
    assert resolve_address(None) == "localhost:50051"
    assert resolve_address("localhost") == "localhost:50051"
    assert resolve_address("::1") == "[::1]:50051"
    assert resolve_address("[::1]:7") == "[::1]:7"
    assert resolve_address("unix:/tmp/s") == "unix:/tmp/s"
    monkeypatch.setenv("MEF3IO_ADDRESS", "example:9")
    assert resolve_address(None) == "example:9"
    with Mef3Client() as c:
        assert c.address == "example:9"
    with pytest.raises(InvalidArgument, match="host:port"):
        resolve_address("localhost:http")


def test_list_recordings_reports_progress_as_entries_arrive(make_client, shared_server,
                                                            tmp_path):
    from conftest import write_session

    for i in range(3):
        write_session(tmp_path / f"r{i}.mefd", {"a": random_walk(2560, i)})
    c = make_client(shared_server.address)
    seen: list = []
    found = c.list_recordings(str(tmp_path), progress=seen.append)
    assert len(found) == 3 and seen and seen[-1] == 3 and seen == sorted(seen)
