"""Faults (issue 6, part 5): corrupt blocks and killed decode workers.

* A ``.tdat`` with flipped bytes: every window either reads exactly what
  mef3io reads, or fails with an error naming the channel and the window --
  never other values. The intact channel and the intact stretches still read.
* ``USE_PROCESS_POOL=true``: decode workers SIGKILLed between reads; the pool
  is rebuilt and reads stay exact (the soak does this under load).
"""
from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import psutil
import pytest

from conftest import T0, direct_read, random_walk, write_session

FS = 256.0
SEC = 1_000_000


def flip_bytes(path, channel: str, fraction: float = 0.5, n: int = 64) -> None:
    tdat = next(path.rglob(f"{channel}.timd/*.segd/*.tdat"))
    data = bytearray(tdat.read_bytes())
    at = int(len(data) * fraction)
    for i in range(at, at + n):
        data[i] ^= 0xFF
    tdat.write_bytes(bytes(data))


def mef3io_or_error(path, chans, t0, t1):
    try:
        return direct_read(path, chans, t0, t1), None
    except Exception as e:  # noqa: BLE001
        return None, e


@pytest.mark.parametrize("pool", ["false", "true"])
def test_corrupt_block_fails_naming_channel_and_time_never_garbage(
        tmp_path, start_server, client_factory, pool):
    path = write_session(tmp_path / "bad.mefd", {"a": random_walk(int(100 * FS), 1),
                                                 "b": random_walk(int(100 * FS), 2)})
    flip_bytes(path, "a")
    server = start_server(USE_PROCESS_POOL=pool, TILE_DURATION_S=10)
    c = client_factory(server.address)
    assert c.open_file(str(path))["error_message"] == ""
    failed = ok = 0
    for s in range(0, 100, 10):
        t0, t1 = T0 + s * SEC, T0 + (s + 10) * SEC
        ref, ref_err = mef3io_or_error(path, ["a", "b"], t0, t1)
        res = c.get_signal_range(str(path), ["a", "b"], t0, t1)
        if ref_err is None:
            assert res["error_message"] == "", res["error_message"]
            assert np.array_equal(res["array"], ref, equal_nan=True)
            ok += 1
        else:
            msg = res["error_message"]
            assert res["array"] is None and msg
            assert "channel a" in msg and "CRC" in msg, msg
            a, b = map(int, re.search(r"in \[(-?\d+), (-?\d+)\) uUTC", msg).groups())
            assert a < t1 and b > t0, (msg, t0, t1)    # the window that failed overlaps ours
            failed += 1
        # The intact channel reads exactly, whatever happened to "a".
        res_b = c.get_signal_range(str(path), ["b"], t0, t1)
        assert np.array_equal(res_b["array"], direct_read(path, ["b"], t0, t1), equal_nan=True)
    assert failed >= 1 and ok >= 5
    # A read spanning the damage fails too, and the server still serves.
    res = c.get_signal_range(str(path), ["a"], T0, T0 + 100 * SEC)
    assert res["array"] is None and "channel a" in res["error_message"]
    assert c.get_signal_range(str(path), ["b"], T0, T0 + SEC)["error_message"] == ""


def shift_index_entry(path, channel: str, entry: int, by_us: int) -> None:
    """Move one ``.tidx`` entry's start time by ``by_us`` (its CRC left as it was)."""
    import struct

    tidx = next(path.rglob(f"{channel}.timd/*.segd/*.tidx"))
    raw = bytearray(tidx.read_bytes())
    at = 1024 + 56 * entry + 8                 # universal header, then 56-byte entries
    (t,) = struct.unpack_from("<q", raw, at)   # stored negated: subtracting moves it later
    struct.pack_into("<q", raw, at, t - by_us)
    tidx.write_bytes(bytes(raw))


@pytest.mark.parametrize("by_s", [200, -200])
def test_an_index_out_of_order_never_turns_data_into_nan(tmp_path, start_server,
                                                         client_factory, by_s):
    """One block's start time moved out of order (issue 19, item 8): every window is what
    mef3io reads, whichever windows were read before."""
    path = write_session(tmp_path / "idx.mefd", {"a": random_walk(int(600 * FS), 1),
                                                 "b": random_walk(int(600 * FS), 2)},
                         block_length=256)
    shift_index_entry(path, "a", 300, by_s * SEC)
    server = start_server()
    windows = [(T0 + s * SEC, T0 + (s + 10) * SEC) for s in range(0, 600, 10)]
    for name, order in (("forward", windows), ("backward", windows[::-1])):
        c = client_factory(server.address, client_id=name)
        assert c.open_file(str(path))["error_message"] == ""
        for t0, t1 in order:
            res = c.get_signal_range(str(path), ["a", "b"], t0, t1)
            assert res["error_message"] == ""
            assert np.array_equal(res["array"], direct_read(path, ["a", "b"], t0, t1),
                                  equal_nan=True), (name, (t0 - T0) // SEC)
        c.close_file(str(path))
    server.stop()
    assert "the block index of channel(s) a is not in time order" in server.stderr_text()


def _decode_workers(server_pid: int) -> list:
    return [p for p in psutil.Process(server_pid).children(recursive=True)
            if p.ppid() != server_pid]


def test_killed_decode_workers_are_replaced(tmp_path, start_server, client_factory):
    path = write_session(tmp_path / "k.mefd", {"a": random_walk(int(300 * FS), 1)})
    server = start_server(USE_PROCESS_POOL="true", TILE_CACHE_MB=1, PREFETCH_AHEAD_WINDOWS=0,
                          PREFETCH_BEHIND_WINDOWS=0)
    c = client_factory(server.address)
    c.open_file(str(path))
    killed = 0
    for s in range(0, 300, 30):
        workers = _decode_workers(server.proc.pid)
        if workers:
            workers[s % len(workers)].send_signal(signal.SIGKILL)
            killed += 1
            time.sleep(0.2)
        t0, t1 = T0 + s * SEC, T0 + (s + 30) * SEC
        res = c.get_signal_range(str(path), ["a"], t0, t1)
        assert res["error_message"] == "", res["error_message"]
        assert np.array_equal(res["array"], direct_read(path, ["a"], t0, t1), equal_nan=True)
    assert killed >= 5
    assert "rebuilding the pool" in server.stderr_text()
    # Workers stay up between reads (they used to exit 0.5 s after starting).
    time.sleep(1.5)
    before = {p.pid for p in _decode_workers(server.proc.pid)}
    time.sleep(1.5)
    assert before and before == {p.pid for p in _decode_workers(server.proc.pid)}


def test_decode_workers_exit_with_the_server(tmp_path, start_server, client_factory):
    path = write_session(tmp_path / "x.mefd", {"a": random_walk(int(30 * FS), 1)})
    server = start_server(USE_PROCESS_POOL="true")
    c = client_factory(server.address)
    c.open_file(str(path))
    assert c.get_signal_range(str(path), ["a"], T0, T0 + 10 * SEC)["error_message"] == ""
    kids = psutil.Process(server.proc.pid).children(recursive=True)
    assert kids
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    gone, alive = psutil.wait_procs(kids, timeout=20)
    assert alive == []
