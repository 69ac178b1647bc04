"""Recordings that change under a running server (issue 6, parts 1 and 2).

Real server subprocesses (``REFRESH_INTERVAL_S=0.2``), real sessions written and
appended to by ``mef3io.Writer``; every served value is compared exactly with
a direct mef3io read of the files as they are at that moment.

* growing: an in-segment append, a new segment, a new channel;
* changed or vanished: deleted, moved away and back, ``.tdat`` truncated,
  replaced by different data at the same path.
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session

FS = 256.0
SEC = 1_000_000
REFRESH = 0.2


def append(path: Path, channels: dict, start_uutc: int, *, new_segment=False, fs=FS) -> None:
    """Append ``channels`` (name -> samples) to the session at ``path`` with mef3io.Writer."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=False, units="uV") as w:
            for name, data in channels.items():
                w.write(name, np.asarray(data, dtype=float), start_uutc, fs=fs, precision=2,
                        new_segment=new_segment)


def wait_refresh() -> None:
    """Let the server's re-check interval pass (the server notices on the next call)."""
    time.sleep(REFRESH * 2.5)


def read_exact(client, path, chans, t0, t1):
    res = client.get_signal_range(str(path), chans, t0, t1)
    assert res["error_message"] == "", res["error_message"]
    ref = direct_read(path, chans, t0, t1)
    assert res["array"].shape == ref.shape
    assert np.array_equal(res["array"], ref, equal_nan=True)
    return res["array"]


@pytest.fixture
def server(request, start_server, tmp_path):
    """The server; with DATA_ROOTS where a test is run ``CONFINED_TOO`` (recordings are
    then read through pinned views, see mef3io_server.server.pinning, pinned anew as
    they change)."""
    confined = getattr(request, "param", "unconfined") != "unconfined"
    roots = {"DATA_ROOTS": str(tmp_path)} if confined else {}
    return start_server(REFRESH_INTERVAL_S=REFRESH, TILE_DURATION_S=10, **roots)


#: Run a test without DATA_ROOTS and with them.
CONFINED_TOO = pytest.mark.parametrize("server", ["unconfined", "in DATA_ROOTS"],
                                       indirect=True)


@CONFINED_TOO
def test_append_in_segment_is_seen_and_old_tail_tile_not_stale(tmp_path, server, client_factory):
    path = write_session(tmp_path / "grow.mefd", {"a": random_walk(int(55 * FS), 1),
                                                  "b": random_walk(int(55 * FS), 2)})
    c = client_factory(server.address)
    info = c.open_file(str(path))
    assert info["error_message"] == ""
    end0 = info["end_uutc"]
    # Cache the tile holding the tail: [50 s, 60 s) is half data, half beyond the end.
    before = read_exact(c, path, ["a", "b"], T0 + 45 * SEC, T0 + 60 * SEC)
    assert np.isnan(before[:, -int(4 * FS):]).all()

    append(path, {"a": random_walk(int(20 * FS), 3), "b": random_walk(int(20 * FS), 4)},
           T0 + 55 * SEC)
    wait_refresh()
    info2 = c.get_file_info(str(path))
    assert info2["end_uutc"] > end0
    assert info2["end_uutc"] == T0 + 75 * SEC
    after = read_exact(c, path, ["a", "b"], T0 + 45 * SEC, T0 + 75 * SEC)
    assert not np.isnan(after[:, int(10 * FS):]).any()    # the old tail tile was not reused
    # Data before the append is unchanged (tiles kept) and still exact.
    read_exact(c, path, ["a", "b"], T0, T0 + 30 * SEC)


def test_repeated_appends_while_reading(tmp_path, server, client_factory):
    """A writer appending every step while a viewer reads the live end: always exact."""
    path = write_session(tmp_path / "live.mefd", {"x": random_walk(int(12 * FS), 5)})
    c = client_factory(server.address)
    c.open_file(str(path))
    end = T0 + 12 * SEC
    for step in range(6):
        read_exact(c, path, ["x"], end - 8 * SEC, end + 2 * SEC)
        append(path, {"x": random_walk(int(3 * FS), 10 + step)}, end)
        end += 3 * SEC
        wait_refresh()
        assert c.get_file_info(str(path))["end_uutc"] == end
    read_exact(c, path, ["x"], T0, end)


@CONFINED_TOO
def test_new_segment_and_new_channel_appear(tmp_path, server, client_factory):
    path = write_session(tmp_path / "seg.mefd", {"a": random_walk(int(30 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    read_exact(c, path, ["a"], T0, T0 + 40 * SEC)
    # A new segment after a gap.
    append(path, {"a": random_walk(int(10 * FS), 2)}, T0 + 50 * SEC, new_segment=True)
    wait_refresh()
    info = c.get_file_info(str(path))
    assert info["end_uutc"] == T0 + 60 * SEC
    read_exact(c, path, ["a"], T0 + 20 * SEC, T0 + 60 * SEC)
    # A new channel.
    append(path, {"b": random_walk(int(60 * FS), 3)}, T0)
    wait_refresh()
    info = c.get_file_info(str(path))
    assert info["channel_names"] == ["a", "b"]
    read_exact(c, path, ["a", "b"], T0, T0 + 60 * SEC)


def test_deleted_then_back(tmp_path, server, client_factory):
    path = write_session(tmp_path / "del.mefd", {"a": random_walk(int(30 * FS), 1)})
    keep = tmp_path / "keep"
    c = client_factory(server.address)
    c.open_file(str(path))
    read_exact(c, path, ["a"], T0, T0 + 20 * SEC)
    shutil.copytree(path, keep)
    shutil.rmtree(path)
    wait_refresh()
    res = c.get_signal_range(str(path), ["a"], T0, T0 + 20 * SEC)
    assert res["array"] is None and str(path) in res["error_message"]
    info = c.get_file_info(str(path))
    assert info["error_message"]       # no longer open: no stale metadata either
    shutil.copytree(keep, path)
    assert c.open_file(str(path))["error_message"] == ""
    read_exact(c, path, ["a"], T0, T0 + 30 * SEC)


@CONFINED_TOO
def test_moved_away_and_back(tmp_path, server, client_factory):
    path = write_session(tmp_path / "mv.mefd", {"a": random_walk(int(30 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    read_exact(c, path, ["a"], T0, T0 + 20 * SEC)
    path.rename(tmp_path / "elsewhere")
    wait_refresh()
    res = c.get_signal_range(str(path), ["a"], T0, T0 + 20 * SEC)
    assert res["array"] is None and res["error_message"]
    (tmp_path / "elsewhere").rename(path)
    assert c.open_file(str(path))["error_message"] == ""
    read_exact(c, path, ["a"], T0, T0 + 30 * SEC)


def _tdat(path: Path, channel: str) -> Path:
    return next(path.rglob(f"{channel}.timd/*.segd/*.tdat"))


@CONFINED_TOO
def test_truncated_tdat(tmp_path, server, client_factory):
    """A ``.tdat`` cut short: errors or exact data (what mef3io reads now), never stale."""
    path = write_session(tmp_path / "cut.mefd", {"a": random_walk(int(60 * FS), 1),
                                                 "b": random_walk(int(60 * FS), 2)})
    c = client_factory(server.address)
    c.open_file(str(path))
    read_exact(c, path, ["a", "b"], T0, T0 + 60 * SEC)
    tdat = _tdat(path, "a")
    original = tdat.read_bytes()
    tdat.write_bytes(original[:len(original) // 2])
    wait_refresh()
    res = c.get_signal_range(str(path), ["a", "b"], T0, T0 + 60 * SEC)
    try:
        ref = direct_read(path, ["a", "b"], T0, T0 + 60 * SEC)
    except Exception:  # noqa: BLE001 - mef3io refuses the damaged file: so must we
        ref = None
    if ref is None or res["array"] is None:
        assert res["array"] is None and res["error_message"]
    else:
        assert np.array_equal(res["array"], ref, equal_nan=True)
    # The untouched channel still reads (possibly after re-opening).
    c.open_file(str(path))
    res_b = c.get_signal_range(str(path), ["b"], T0, T0 + 60 * SEC)
    if res_b["array"] is not None:
        assert np.array_equal(res_b["array"], direct_read(path, ["b"], T0, T0 + 60 * SEC),
                              equal_nan=True)
    # Restored: reopen works and is exact.
    tdat.write_bytes(original)
    wait_refresh()
    c.open_file(str(path))
    read_exact(c, path, ["a", "b"], T0, T0 + 60 * SEC)


@CONFINED_TOO
def test_replaced_with_different_data(tmp_path, server, client_factory):
    path = write_session(tmp_path / "rep.mefd", {"a": random_walk(int(40 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    old = read_exact(c, path, ["a"], T0, T0 + 40 * SEC)
    # Same name, same span, different values: only the cache key epoch tells them apart.
    write_session(path, {"a": random_walk(int(40 * FS), 99)})
    wait_refresh()
    new = read_exact(c, path, ["a"], T0, T0 + 40 * SEC)
    assert not np.array_equal(old, new, equal_nan=True)
    # Replaced by a shorter recording with another channel set.
    write_session(path, {"z": random_walk(int(20 * FS), 7)})
    wait_refresh()
    info = c.get_file_info(str(path))
    assert info["channel_names"] == ["z"] and info["end_uutc"] == T0 + 20 * SEC
    res = c.get_signal_range(str(path), ["a"], T0, T0 + 10 * SEC)
    assert res["array"] is None and "unknown channel" in res["error_message"]
    read_exact(c, path, ["z"], T0, T0 + 20 * SEC)


def test_readers_never_fail_while_a_writer_appends(tmp_path, server, client_factory):
    """Concurrent readers across re-opens caused by appends: no errors, always exact."""
    import threading

    path = write_session(tmp_path / "busy.mefd", {"a": random_walk(int(30 * FS), 1),
                                                  "b": random_walk(int(30 * FS), 2)})
    errors: list[str] = []
    results: list[tuple[int, int, np.ndarray]] = []
    stop = threading.Event()

    def reader(i):
        c = client_factory(server.address)
        c.open_file(str(path))
        k = 0
        while not stop.is_set():
            t0 = T0 + ((i * 7 + k * 3) % 25) * SEC
            res = c.get_signal_range(str(path), ["a", "b"], t0, t0 + 5 * SEC)
            if res["error_message"]:
                errors.append(res["error_message"])
            else:
                results.append((t0, t0 + 5 * SEC, res["array"]))
            k += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    end = T0 + 30 * SEC
    try:
        for step in range(5):
            append(path, {"a": random_walk(int(2 * FS), 20 + step),
                          "b": random_walk(int(2 * FS), 40 + step)}, end)
            end += 2 * SEC
            time.sleep(REFRESH * 1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(results) > 10
    # Data before the first append never changed: every read must equal mef3io's.
    for t0, t1, arr in results[::max(1, len(results) // 20)]:
        assert np.array_equal(arr, direct_read(path, ["a", "b"], t0, t1), equal_nan=True)


def test_append_noticed_without_any_call(tmp_path, server, client_factory):
    """The background refresher re-checks open recordings; no request needs to trigger it."""
    path = write_session(tmp_path / "bg.mefd", {"a": random_walk(int(20 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 20 * SEC)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "appended" not in server.stderr_text():
        time.sleep(0.1)
    assert "changed on disk (appended)" in server.stderr_text()
    assert c.get_file_info(str(path))["end_uutc"] == T0 + 25 * SEC


def test_whole_envelope_follows_an_append(tmp_path, server, client_factory):
    """The server keeps whole-channel envelopes encoded for the next asker; after an
    append the envelope is the new block index, never the one kept from before."""
    import mef3io

    path = write_session(tmp_path / "env.mefd", {"a": random_walk(int(40 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))

    def direct_envelope():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mef3io.Reader(str(path), warn_declarations=False)
            try:
                return r.block_envelope("a")
            finally:
                r.close()

    for _ in range(2):                       # the second answer comes from the kept bytes
        got = c.get_envelope(str(path))["a"]
        want = direct_envelope()
        for k in ("start_uutc", "end_uutc", "min", "max"):
            assert np.array_equal(got[k], want[k], equal_nan=True)
    n_before = len(got["start_uutc"])
    append(path, {"a": random_walk(int(30 * FS), 2)}, T0 + 40 * SEC)
    wait_refresh()
    assert c.get_file_info(str(path))["end_uutc"] == T0 + 70 * SEC
    got = c.get_envelope(str(path))["a"]
    want = direct_envelope()
    assert len(got["start_uutc"]) > n_before
    for k in ("start_uutc", "end_uutc", "min", "max"):
        assert np.array_equal(got[k], want[k], equal_nan=True)
