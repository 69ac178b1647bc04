"""The new client methods against the published mef3io-server 3.1.0: a clear error, not a trace.

Runs only where the published server is installed for comparison
(``../ref/venv``, or ``$MEF3IO_REF_PYTHON``).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from conftest import ROOT

from mef3io_server.aio import AsyncMef3Client
from mef3io_server.client import Mef3Client, ServerUnsupported

REF_PYTHON = Path(os.environ.get("MEF3IO_REF_PYTHON", ROOT.parent.parent / "ref" / "venv" / "bin"
                                 / "python"))


@pytest.fixture
def published_server(tmp_path):
    if not REF_PYTHON.exists():
        pytest.skip(f"the published mef3io-server is not installed at {REF_PYTHON}")
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(REF_PYTHON), "-m", "mef3io_server.server"], env=env,
                            cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"localhost:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=60)
    except grpc.FutureTimeoutError:
        proc.kill()
        pytest.fail("the published server did not start")
    finally:
        channel.close()
    yield f"localhost:{port}"
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_new_calls_say_the_server_is_older(published_server, tmp_path):
    with Mef3Client(published_server) as c:
        assert isinstance(c.list_open_files(), list)        # the old calls work
        with pytest.raises(ServerUnsupported, match="ListRecordings"):
            c.list_recordings(str(tmp_path))
        with pytest.raises(ServerUnsupported, match="GetRecords"):
            c.get_records(str(tmp_path / "x.mefd"))
        with pytest.raises(ServerUnsupported, match="GetSegments"):
            c.get_segments(str(tmp_path / "x.mefd"))

    async def main():
        async with AsyncMef3Client(published_server) as c:
            assert isinstance(await c.list_open_files(), list)
            with pytest.raises(ServerUnsupported, match="GetSegments"):
                await c.get_segments(str(tmp_path / "x.mefd"))
    asyncio.run(main())
