"""AsyncMef3Client end to end: every method against a real server, many reads at once.

Reads are compared exactly with mef3io read directly; the other answers with
what the synchronous client gets for the same calls (both parse with messages.py).
"""
from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk

from mef3io_server.aio import AsyncMef3Client
from mef3io_server.client import Mef3Client


@pytest.fixture
def recording(write_recording):
    x = random_walk(256 * 60, seed=1)
    x[3000:3400] = np.nan
    return write_recording("aio", {f"ch{i}": random_walk(256 * 60, seed=i) if i else x
                                   for i in range(4)})


def test_every_sync_method_has_a_coroutine():
    # (call_options is no call: the keyword arguments for calling .stub directly,
    # the same plain method on both clients.)
    public = [n for n, _ in inspect.getmembers(Mef3Client, inspect.isfunction)
              if not n.startswith("_") and n != "call_options"]
    assert not inspect.iscoroutinefunction(AsyncMef3Client.call_options)
    assert {"get_records", "get_segments", "list_recordings", "get_signal_range"} <= set(public)
    for name in public:
        assert inspect.iscoroutinefunction(getattr(AsyncMef3Client, name)), name
        sync_params = list(inspect.signature(getattr(Mef3Client, name)).parameters)
        assert list(inspect.signature(getattr(AsyncMef3Client, name)).parameters) == \
            sync_params, name


def test_twenty_concurrent_reads_are_exact(recording, shared_server):
    path = str(recording)
    windows = [(T0 + k * 2_500_000, T0 + k * 2_500_000 + 1_000_000 + k * 37_000, [f"ch{k % 4}"])
               for k in range(19)] + [(T0, T0 + 60_000_000, None)]

    async def main():
        async with AsyncMef3Client(shared_server.address) as c:
            info = await c.open_file(path)
            assert info["file_opened"], info["error_message"]
            return await asyncio.gather(*(c.get_signal_range(path, ch, a, b)
                                          for a, b, ch in windows))

    results = asyncio.run(main())
    assert len(results) == 20
    for (a, b, ch), res in zip(windows, results):
        assert res["error_message"] == ""
        assert np.array_equal(res["array"], direct_read(recording, ch, a, b), equal_nan=True)
    assert results[-1]["channel_names"] == ["ch0", "ch1", "ch2", "ch3"]


def test_answers_match_the_sync_client(recording, shared_server, tmp_path):
    path = str(recording)
    a, b = T0 + 5_000_000, T0 + 25_000_000
    with Mef3Client(shared_server.address) as s:
        s.open_file(path)
        want = {"info": s.get_file_info(path), "env": s.get_envelope(path, ["ch0"]),
                "rec": s.get_records(path), "seg": s.get_segments(path),
                "ls": s.list_recordings(str(tmp_path)),
                "pts": s.get_signal_range(path, ["ch1"], a, b, n_points=500)}

    async def main():
        c = AsyncMef3Client(shared_server.address)
        try:
            info = await c.open_file(path)
            got = {"info": await c.get_file_info(path),
                   "env": await c.get_envelope(path, ["ch0"]),
                   "rec": await c.get_records(path), "seg": await c.get_segments(path),
                   "ls": await c.list_recordings(str(tmp_path)),
                   "pts": await c.get_signal_range(path, ["ch1"], a, b, n_points=500)}
            assert path in await c.list_open_files()
            closed = await c.close_file(path)
            assert closed["error_message"] == ""
            again = await c.close_file(path)        # our session is gone
            assert "not open by this client" in again["error_message"]
            return info, got
        finally:
            await c.shutdown()

    info, got = asyncio.run(main())
    assert info["file_opened"]
    assert got["info"] == want["info"]
    assert got["env"].keys() == want["env"].keys()
    for k in ("start_uutc", "end_uutc", "min", "max"):
        assert np.array_equal(got["env"]["ch0"][k], want["env"]["ch0"][k])
    assert got["rec"] == want["rec"] == []
    assert got["seg"] == want["seg"] and len(got["seg"]["ch0"]["gaps"]) == 1
    assert got["ls"] == want["ls"] and len(got["ls"]) == 1
    assert got["pts"]["array"].shape == (1, 500)
    assert np.array_equal(got["pts"]["array"], want["pts"]["array"], equal_nan=True)


def test_errors_come_back_like_the_sync_client(recording, shared_server):
    async def main():
        async with AsyncMef3Client(shared_server.address) as c:
            res = await c.get_signal_range(str(recording), None, T0, T0 + 1_000_000)
            assert res["array"] is None and "OpenFile" in res["error_message"]
            with pytest.raises(RuntimeError, match="OpenFile"):
                await c.get_records(str(recording))
            with pytest.raises(RuntimeError, match="OpenFile"):
                await c.get_segments(str(recording))
            bad = await c.open_file(str(recording) + "x")
            assert not bad["file_opened"] and bad["error_message"]
    asyncio.run(main())
