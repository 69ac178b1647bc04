"""The routing key: the clients name the recording in the metadata of every call about it."""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from conftest import T0, random_walk
from mef3io_server import routing
from mef3io_server.aio import AsyncMef3Client
from mef3io_server.client import Mef3Client


class MetadataLog(grpc.ServerInterceptor):
    """Records (RPC name, metadata dict) of every call the server receives."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def intercept_service(self, continuation, details):
        with self._lock:
            self.calls.append((details.method.rsplit("/", 1)[-1],
                               dict(details.invocation_metadata or ())))
        return continuation(details)

    def of(self, rpc: str) -> list[dict]:
        return [md for name, md in self.calls if name == rpc]


@pytest.fixture
def logged_server():
    from mef3io_server.server.app import build_server
    from mef3io_server.server.config import Settings

    log = MetadataLog()
    running = build_server(Settings(port=0, refresh_interval_s=0.0), interceptors=[log])
    yield f"localhost:{running.port}", log
    running.stop(0)


FILE_RPCS = ("OpenFile", "FileInfo", "GetSignalRange", "GetEnvelope", "GetRecords",
             "GetSegments", "CloseFile")


def _every_call(c, path):
    c.open_file(path)
    c.get_file_info(path)
    c.get_signal_range(path, None, T0, T0 + 1_000_000)
    c.get_envelope(path)
    c.get_records(path)
    c.get_segments(path)
    c.close_file(path)
    c.list_open_files()


async def _every_call_async(c, path):
    await c.open_file(path)
    await c.get_file_info(path)
    await c.get_signal_range(path, None, T0, T0 + 1_000_000)
    await c.get_envelope(path)
    await c.get_records(path)
    await c.get_segments(path)
    await c.close_file(path)
    await c.list_open_files()


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_every_call_about_a_recording_carries_its_path(tmp_path, logged_server, kind):
    """The routing key on every per-file call (percent-encoded: a space and a non-ASCII
    letter in the name), none on ListOpenFiles; the session claim on reads only."""
    from conftest import write_session

    path = str(write_session(tmp_path / "pätient 1.mefd", {"a": random_walk(2560)}))
    address, log = logged_server
    if kind == "sync":
        with Mef3Client(address) as c:
            _every_call(c, path)
    else:
        async def main():
            async with AsyncMef3Client(address) as c:
                await _every_call_async(c, path)
        asyncio.run(main())
    expected = routing.routing_value(path)
    assert "p%C3%A4tient%201.mefd" in expected and expected.isascii()
    for rpc in FILE_RPCS:
        seen = log.of(rpc)
        assert seen and all(md.get(routing.ROUTING_KEY) == expected for md in seen), rpc
        claimed = rpc not in ("OpenFile", "CloseFile")
        assert all((routing.SESSION_REQUIRED_KEY in md) == claimed for md in seen), rpc
    assert all(routing.ROUTING_KEY not in md for md in log.of("ListOpenFiles"))


def test_the_key_is_the_normalised_path():
    assert routing.routing_value("/data//p1.mefd/") == "/data/p1.mefd"
    assert routing.routing_value("/data/./x/../p1.mefd") == "/data/p1.mefd"
    assert routing.routing_value("/data/p 1#.mefd") == "/data/p%201%23.mefd"


def test_a_read_of_a_file_opened_by_another_client_carries_no_claim(tmp_path, logged_server):
    """A client that did not open the file reads it through others' sessions, as before."""
    from conftest import write_session

    path = str(write_session(tmp_path / "shared.mefd", {"a": random_walk(2560)}))
    address, log = logged_server
    with Mef3Client(address) as opener, Mef3Client(address) as reader:
        assert opener.open_file(path)["file_opened"]
        res = reader.get_signal_range(path, None, T0, T0 + 1_000_000)
        assert res["error_message"] == "" and res["shape"] == (1, 256)
    reads = log.of("GetSignalRange")
    assert len(reads) == 1 and routing.SESSION_REQUIRED_KEY not in reads[0]
