"""``SignalRangeRequest.dtype = "int32"``: the stored MEF sample values on the wire.

End to end through a real server: every int32 read equals what
``mef3io.Reader.read_raw`` returns for the window (gaps as MEF's NaN sentinel
-2^31), for generated recordings (gaps, segments, a segment off the grid,
several chunks) and every golden session; bad combinations are refused with a
message naming the problem, and the float32 default is unchanged.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import T0, direct_read, golden_cases, launch_server, random_walk, write_session
from mef3io_server.client import Mef3Client

S = 1_000_000
SENTINEL = -2**31


def direct_raw(path, channels, t0, t1, password="") -> np.ndarray:
    """What mef3io's ``read_raw`` gives, one channel at a time, sentinel where not valid."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path), password=password, warn_declarations=False)
        try:
            rows = []
            for ch in channels or r.channels:
                raw = r.read_raw(ch, int(t0), int(t1))
                s = raw["samples"].astype(np.int32)
                s[raw["valid"] == 0] = SENTINEL
                rows.append(s)
            return np.vstack(rows)
        finally:
            r.close()


@pytest.fixture(scope="module")
def server():
    # Small chunks: a read of a few seconds streams in several int32 chunks.
    h = launch_server({"TILE_DURATION_S": "1", "CHUNK_BYTES": "8192"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("stored")
    gap = random_walk(256 * 20, 1)
    gap[256 * 5:256 * 7] = np.nan
    return {
        "gaps": write_session(d / "gaps.mefd", {"a": gap, "b": random_walk(256 * 20, 2)}),
        "offgrid": write_session(d / "offgrid.mefd", {
            "x": [(random_walk(256 * 10, 3), 256.0, T0),
                  (random_walk(256 * 10, 4), 256.0, T0 + 12 * S + 1000)]}),
        # counts beyond float32's exact integers: only int32 carries them unchanged
        "big": write_session(d / "big.mefd", {"a": random_walk(256 * 4, 5) * 1e5 + 5e7},
                             precision=0),
    }


WINDOWS = [(0, 20 * S), (-3 * S, 2 * S), (4 * S + 1234, 8 * S + 777), (19 * S, 25 * S),
           (30 * S, 31 * S)]


@pytest.mark.parametrize("name", ["gaps", "offgrid", "big"])
@pytest.mark.parametrize("window", WINDOWS)
def test_int32_equals_read_raw(server, recordings, name, window):
    path = str(recordings[name])
    t0, t1 = T0 + window[0], T0 + window[1]
    with Mef3Client(server.address) as c:
        assert c.open_file(path)["file_opened"]
        res = c.get_signal_range(path, None, t0, t1, dtype="int32")
        assert res["error_message"] == ""
        assert res["dtype"] == "int32" and res["array"].dtype == np.int32
        expected = direct_raw(path, res["channel_names"], t0, t1)
        np.testing.assert_array_equal(res["array"], expected)
        # the same window as values: NaN exactly where the sentinel is
        values = c.get_signal_range(path, None, t0, t1)["array"]
        assert values.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(values), res["array"] == SENTINEL)
        np.testing.assert_array_equal(values, direct_read(path, None, t0, t1))


def test_int32_is_exact_where_float32_is_not(server, recordings):
    path = str(recordings["big"])
    with Mef3Client(server.address) as c:
        c.open_file(path)
        raw = c.get_signal_range(path, ["a"], T0, T0 + 4 * S, dtype="int32")["array"]
    assert np.abs(raw).max() > 2**24          # float32 cannot hold every such count
    assert not np.array_equal(raw.astype(np.float32).astype(np.int64), raw.astype(np.int64))


@pytest.mark.parametrize("name,case", golden_cases() or [pytest.param(
    "none", None, marks=pytest.mark.skip(reason="../shared/golden is not beside this checkout"))])
def test_int32_golden(server, name, case):
    from conftest import GOLDEN

    path = str(GOLDEN / f"{name}.mefd")
    pw = case["password"] or ""
    chans = case["channels"]
    t0 = min(c["start_time"] for c in chans.values()) - S // 2
    t1 = max(c["end_time"] for c in chans.values()) + S // 2
    with Mef3Client(server.address) as c:
        assert c.open_file(path, password=pw or None)["file_opened"]
        res = c.get_signal_range(path, list(chans), t0, t1, dtype="int32")
        np.testing.assert_array_equal(res["array"], direct_raw(path, list(chans), t0, t1, pw))


def test_refusals_name_the_problem(server, recordings):
    path = str(recordings["gaps"])
    with Mef3Client(server.address) as c:
        c.open_file(path)
        res = c.get_signal_range(path, None, T0, T0 + S, n_points=10, dtype="int32")
        assert res["array"] is None and "n_points" in res["error_message"]
        with pytest.raises(ValueError, match="dtype"):
            c.get_signal_range(path, None, T0, T0 + S, dtype="float64")
        # a hand-made request with an unknown dtype: refused by the server
        from mef3io_server import messages
        req = messages.signal_request(path, None, T0, T0 + S)
        req.dtype = "int16"
        chunks = list(c.stub.GetSignalRange(req, **c.call_options()))
        assert "dtype" in chunks[0].error_message and "int16" in chunks[0].error_message
        # the server keeps serving
        assert c.get_signal_range(path, None, T0, T0 + S, dtype="int32")["array"].shape == (2, 256)
    with Mef3Client(server.address) as c:
        c.open_file(path, cache_fs=64.0)
        res = c.get_signal_range(path, None, T0, T0 + S, dtype="int32")
        assert res["array"] is None and "cache_fs" in res["error_message"]


def test_int32_through_worker_processes(recordings):
    h = launch_server({"USE_PROCESS_POOL": "true", "READER_PROCESSES": "1",
                       "PREFETCH_PROCESSES": "1", "CHUNK_BYTES": "8192"})
    try:
        path = str(recordings["gaps"])
        with Mef3Client(h.address) as c:
            c.open_file(path)
            res = c.get_signal_range(path, None, T0 - S, T0 + 9 * S, dtype="int32")
        np.testing.assert_array_equal(res["array"],
                                      direct_raw(path, ["a", "b"], T0 - S, T0 + 9 * S))
    finally:
        h.stop()


def test_int32_through_the_asyncio_client(server, recordings):
    import asyncio

    from mef3io_server.aio import AsyncMef3Client

    path = str(recordings["gaps"])

    async def read():
        async with AsyncMef3Client(server.address) as c:
            await c.open_file(path)
            return await c.get_signal_range(path, ["b", "a"], T0 + 4 * S, T0 + 8 * S,
                                            dtype="int32")

    res = asyncio.run(read())
    assert res["dtype"] == "int32"
    np.testing.assert_array_equal(res["array"], direct_raw(path, ["b", "a"], T0 + 4 * S,
                                                           T0 + 8 * S))
