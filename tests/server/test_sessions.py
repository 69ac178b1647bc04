"""Sessions: one per (client id, file), closing, expiry, MAX_SESSIONS, ListOpenFiles.

End to end against a real server, plus engine-level checks of what a client
cannot see (the reader closed, the file's tiles gone from the shared cache).
"""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.client import Mef3Client
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.config import Settings
from mef3io_server.server.engine import Engine
from mef3io_server.server.errors import NotOpen

S = 1_000_000


@pytest.fixture
def rec(write_recording):
    return write_recording("sess", {"a": random_walk(256 * 30, 1), "b": random_walk(256 * 30, 2)})


@pytest.fixture
def three(write_recording):
    return [write_recording(f"f{i}", {"a": random_walk(256 * 5, i)}) for i in range(3)]


def read_ok(client, path, t0=T0, t1=T0 + 2 * S, password="") -> bool:
    r = client.get_signal_range(str(path), ["a"], t0, t1)
    if r["error_message"]:
        return False
    assert np.array_equal(r["array"], direct_read(path, ["a"], t0, t1, password=password),
                          equal_nan=True)
    return True


def anonymous_stub(address):
    ch = grpc.insecure_channel(address)
    return ch, pb2_grpc.gRPCMef3ServerStub(ch)


def wait_for(pred, timeout=10.0, step=0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------- end to end


def test_close_leaves_other_clients_alone(start_server, client_factory, rec):
    h = start_server()
    a = client_factory(h.address, client_id="alice")
    b = client_factory(h.address, client_id="bob")
    assert a.open_file(str(rec))["file_opened"]
    assert b.open_file(str(rec))["file_opened"]
    assert a.list_open_files() == [str(rec)]
    closed = a.close_file(str(rec))
    assert closed["error_message"] == ""
    assert b.list_open_files() == [str(rec)], "bob's session keeps the file open"
    assert read_ok(b, rec)
    assert read_ok(a, rec), "a read needs the file open by any client"
    # alice's session is gone: closing again says so
    again = a.close_file(str(rec))
    assert "not open" in again["error_message"]
    b.close_file(str(rec))
    assert b.list_open_files() == []
    r = a.get_signal_range(str(rec), ["a"], T0, T0 + S)
    assert r["array"] is None and "not open" in r["error_message"]


def test_reopen_refreshes_not_duplicates(start_server, client_factory, rec):
    h = start_server()
    a = client_factory(h.address, client_id="alice")
    for _ in range(3):
        assert a.open_file(str(rec))["file_opened"]
    assert a.list_open_files() == [str(rec)]
    a.close_file(str(rec))       # one close ends the one session
    assert a.list_open_files() == []


def test_list_open_files_in_opening_order(start_server, client_factory, three):
    h = start_server()
    a = client_factory(h.address, client_id="alice")
    for p in three[::-1]:
        assert a.open_file(str(p))["file_opened"]
    assert a.list_open_files() == [str(p) for p in three[::-1]]
    a.close_file(str(three[1]))
    assert a.list_open_files() == [str(three[2]), str(three[0])]


def test_session_ttl_expires_without_traffic(start_server, client_factory, rec, three):
    h = start_server(SESSION_TTL_S="1")
    a = client_factory(h.address, client_id="short-lived")
    assert a.open_file(str(rec))["file_opened"]
    # the default session (no metadata) never expires
    ch, stub = anonymous_stub(h.address)
    try:
        assert stub.OpenFile(pb2.OpenFileRequest(file_path=str(three[0]))).file_opened
        # no traffic at all: the sweeper alone must end alice's session
        time.sleep(2.5)
        paths = list(stub.ListOpenFiles(pb2.ListOpenFilesRequest()).file_paths)
        assert paths == [str(three[0])]
        chunks = list(stub.GetSignalRange(pb2.SignalRangeRequest(
            file_path=str(three[0]), channel_names=["a"], start_uutc=T0, end_uutc=T0 + S)))
        assert not chunks[0].error_message and chunks[0].shape == [1, 256]
    finally:
        ch.close()


def test_activity_keeps_session_alive(start_server, client_factory, rec):
    h = start_server(SESSION_TTL_S="1")
    a = client_factory(h.address, client_id="busy")
    assert a.open_file(str(rec))["file_opened"]
    for _ in range(5):               # 2 s in all, never 1 s idle
        time.sleep(0.4)
        assert read_ok(a, rec)
    assert a.list_open_files() == [str(rec)]


def test_max_sessions_closes_least_recently_used(start_server, client_factory, three):
    h = start_server(MAX_SESSIONS="2")
    a = client_factory(h.address, client_id="a")
    b = client_factory(h.address, client_id="b")
    c = client_factory(h.address, client_id="c")
    assert a.open_file(str(three[0]))["file_opened"]
    assert b.open_file(str(three[1]))["file_opened"]
    assert read_ok(a, three[0])          # a is now more recent than b
    assert c.open_file(str(three[2]))["file_opened"]
    assert c.list_open_files() == [str(three[0]), str(three[2])]
    # b's session is gone: a bare read says so (b's client itself would open it again)
    ch, stub = anonymous_stub(h.address)
    try:
        (chunk,) = stub.GetSignalRange(pb2.SignalRangeRequest(
            file_path=str(three[1]), channel_names=["a"], start_uutc=T0, end_uutc=T0 + S),
            metadata=(("x-mef3io-client-id", "b"),))
        assert "not open" in chunk.error_message
    finally:
        ch.close()
    assert read_ok(a, three[0])


def test_a_session_flood_pushes_out_only_the_flooders_own(tmp_path, write_recording,
                                                           start_server):
    """MAX_SESSIONS under a flood of one token: the flooder loses its own least recently
    used sessions, never another identity's unlocked session nor the preloaded one."""
    from mef3io_server import messages

    plain = write_recording("plain", {"a": random_walk(256 * 5)})
    enc = write_recording("enc", {"a": random_walk(256 * 5, 3)}, password1="p-one",
                          password2="p-two")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-flood-1a2b3c4d5e\ntok-ward-9f8e7d6c5b\n")
    h = start_server(args=(str(plain),), AUTH_TOKENS_FILE=tokens, MAX_SESSIONS=5)
    with Mef3Client(h.address, client_id="ward", token="tok-ward-9f8e7d6c5b") as victim:
        assert victim.open_file(str(enc), password="p-one")["file_opened"]
        assert read_ok(victim, enc, password="p-one")
        ch, stub = anonymous_stub(h.address)
        try:
            ids = [f"flood-{i}" for i in range(300)]
            for cid in ids:
                r = stub.OpenFile(pb2.OpenFileRequest(file_path=str(plain)), timeout=10,
                                  metadata=messages.call_metadata(cid, "tok-flood-1a2b3c4d5e"))
                assert r.file_opened, r.error_message
            assert read_ok(victim, enc, password="p-one")   # still unlocked: no password again
            for cid in ids:                           # the flooder goes away
                stub.CloseFile(pb2.FileInfoRequest(file_path=str(plain)), timeout=10,
                               metadata=messages.call_metadata(cid, "tok-flood-1a2b3c4d5e"))
        finally:
            ch.close()
        # The preloaded recording is still open (its session never goes).
        assert victim.list_open_files() == [str(plain), str(enc)]
        assert read_ok(victim, plain)


def test_sessions_are_per_file(start_server, client_factory, three):
    h = start_server()
    a = client_factory(h.address, client_id="a")
    a.open_file(str(three[0]))
    a.open_file(str(three[1]))
    a.close_file(str(three[0]))
    assert a.list_open_files() == [str(three[1])]


def test_default_session_shared_by_anonymous_callers(start_server, rec):
    h = start_server()
    ch1, s1 = anonymous_stub(h.address)
    ch2, s2 = anonymous_stub(h.address)
    try:
        assert s1.OpenFile(pb2.OpenFileRequest(file_path=str(rec))).file_opened
        # a second anonymous caller closes the same (shared) session
        r = s2.CloseFile(pb2.FileInfoRequest(file_path=str(rec)))
        assert not r.error_message
        assert list(s1.ListOpenFiles(pb2.ListOpenFilesRequest()).file_paths) == []
    finally:
        ch1.close()
        ch2.close()


# ---------------------------------------------------------------- engine level


@pytest.fixture
def engine():
    e = Engine(Settings(tile_duration_s=1.0, session_ttl_s=60.0, max_sessions=3,
                        prefetch_ahead_windows=0, prefetch_behind_windows=0))
    yield e
    e.close()


def read_all(engine, cid, path, t0, t1, chans=("a",)):
    r = engine.read_signal(cid, str(path), list(chans), t0, t1)
    return np.concatenate([rows for _, _, _, rows in r.chunks], axis=1)


def tiles_of(engine, path) -> int:
    import os

    real = os.path.realpath(str(path))
    return sum(1 for k in engine.cache.keys() if k[0][0] == real)


def test_last_session_closes_reader_and_evicts_tiles(engine, rec, three):
    engine.open_file("a", str(rec))
    engine.open_file("b", str(rec))
    engine.open_file("a", str(three[0]))
    got = read_all(engine, "a", rec, T0, T0 + 5 * S)
    assert np.array_equal(got, direct_read(rec, ["a"], T0, T0 + 5 * S), equal_nan=True)
    read_all(engine, "a", three[0], T0, T0 + 3 * S)
    recording = engine.sessions.recording(str(rec))
    assert tiles_of(engine, rec) >= 5 and tiles_of(engine, three[0]) >= 3
    assert engine.close_file("a", str(rec)) is True      # b still has it
    assert not recording.closed and tiles_of(engine, rec) >= 5
    assert engine.close_file("b", str(rec)) is False
    assert recording.closed
    assert tiles_of(engine, rec) == 0
    assert tiles_of(engine, three[0]) >= 3, "other files' tiles stay"
    accounted, held = engine.cache.held_bytes()
    assert engine.cache.current_bytes == accounted == held
    with pytest.raises(NotOpen):
        read_all(engine, "a", rec, T0, T0 + S)


def test_expiry_with_injected_clock(rec):
    now = [0.0]
    e = Engine(Settings(session_ttl_s=10.0), clock=lambda: now[0])
    try:
        e.open_file("a", str(rec))
        e.open_file("", str(rec))          # default session
        now[0] = 5.0
        e.open_file("b", str(rec))
        now[0] = 12.0
        assert e.sweep()[1] == 1           # a expired, b (7 s idle) and default stay
        assert e.sessions.session("a", str(rec)) is None
        now[0] = 100.0
        assert e.sweep()[1] == 1           # b expired; the default session never does
        assert e.list_open_files() == [str(rec)]
        e.close_file("", str(rec))
        assert e.list_open_files() == []
    finally:
        e.close()


def test_max_sessions_evicts_lru_and_closes_file(engine, three, rec):
    for i, p in enumerate(three):
        engine.open_file(f"c{i}", str(p))
    first = engine.sessions.recording(str(three[0]))
    engine.open_file("c9", str(rec))          # a 4th session: c0's (LRU) goes
    assert engine.sessions.session_count() == 3
    assert first.closed
    assert str(three[0]) not in engine.list_open_files()


def test_probe_and_failed_opens_leave_no_recordings_behind(engine, write_recording):
    """Password probes and refused opens must not pile up registered recordings."""
    import gc

    from mef3io_server.server.errors import BadRequest, PasswordRequired

    enc = write_recording("enc", {"a": random_walk(2000)}, password1="one", password2="two")
    plain = write_recording("plain", {"a": random_walk(2000)})
    engine.open_file("owner", str(enc), password="two")
    for i in range(5):
        engine.open_file(f"guest{i}", str(enc), password="one")   # probe-opens the file
        with pytest.raises(PasswordRequired):
            engine.open_file(f"bad{i}", str(enc), password="three")
        with pytest.raises(BadRequest):
            engine.open_file("x", str(plain), cache_fs=10_000.0)   # refused after opening
    gc.collect()
    live = [r for r in engine.versions.registered() if not r.closed]
    assert len(live) == 1
    registered = engine.versions.registered()
    assert len(registered) <= 1, f"{len(registered)} recordings still registered"


def test_close_after_recording_deleted_with_host_root(tmp_path):
    """CloseFile of a session whose files vanished still finds it (HOST_ROOT paths too)."""
    import shutil

    from conftest import write_session

    root = tmp_path / "host"
    (root / "data").mkdir(parents=True)
    write_session(root / "data" / "gone.mefd", {"a": random_walk(1000)})
    e = Engine(Settings(host_root=str(root), refresh_interval_s=3600.0))
    try:
        e.open_file("a", "/data/gone.mefd")
        e.open_file("b", "/data/gone.mefd")
        assert e.list_open_files() == ["/data/gone.mefd"]
        shutil.rmtree(root / "data" / "gone.mefd")
        assert e.close_file("a", "/data/gone.mefd") is True
        assert e.close_file("b", "/data/gone.mefd") is False
        assert e.list_open_files() == []
    finally:
        e.close()


def test_open_racing_last_close_never_yields_a_dead_session(engine, rec):
    """An open that waited while the file's last session closed gets a live session.

    Deterministic: y's open is held inside its validate step (after it looked
    up the open file) while x closes the last session and the file closes.
    """
    import os
    import threading

    path = os.path.realpath(str(rec))
    engine.sessions.open("x", path, str(rec))
    first = engine.sessions.recording(path)
    inside, release = threading.Event(), threading.Event()
    box = {}

    def hold(_rec):
        inside.set()
        release.wait(30)

    def open_y():
        box["y"] = engine.sessions.open("y", path, str(rec), validate=hold)

    t = threading.Thread(target=open_y)
    t.start()
    assert inside.wait(30)
    engine.sessions.close("x", path)          # the last session: the file closes
    assert first.closed
    release.set()
    t.join(30)
    _, rec_y = box["y"]
    assert not rec_y.closed, "y was handed a closed recording"
    assert engine.list_open_files() == [str(rec)]
    got = read_all(engine, "y", rec, T0, T0 + S)
    assert np.array_equal(got, direct_read(rec, ["a"], T0, T0 + S), equal_nan=True)


def test_two_fresh_opens_share_one_recording(engine, rec):
    """Two opens racing on a closed file end with one open recording, not two."""
    import os
    import threading

    path = os.path.realpath(str(rec))
    engine.sessions.open("x", path, str(rec))
    inside, release = threading.Event(), threading.Event()
    box = {}

    def hold(_rec):
        inside.set()
        release.wait(30)

    t = threading.Thread(target=lambda: box.setdefault(
        "y", engine.sessions.open("y", path, str(rec), validate=hold)))
    t.start()
    assert inside.wait(30)
    engine.sessions.close("x", path)          # file closes; its per-path lock goes too
    _, rec_z = engine.sessions.open("z", path, str(rec))   # a fresh open, new lock
    release.set()
    t.join(30)
    _, rec_y = box["y"]
    assert rec_y is rec_z and not rec_y.closed
    engine.sessions.close("z", path)
    assert engine.list_open_files() == [str(rec)], "y's session must keep the file open"
    engine.sessions.close("y", path)
    assert engine.list_open_files() == [] and rec_y.closed


# ------------------------------------------------- the registry's listing callback

class _Opened:
    """What the registry needs of a recording: no MEF files involved."""
    encrypted = False
    access_level = "full"

    def __init__(self, path, password=""):
        self.path = path


def test_recordings_are_announced_once_listed_and_not_when_refused():
    from mef3io_server.server.errors import ResourceLimit
    from mef3io_server.server.sessions import SessionRegistry
    seen, closed = [], []
    reg = SessionRegistry(_Opened, closed.append, max_sessions=1,
                          on_recording_listed=lambda r: seen.append(
                              (r.path, reg.recording(r.path) is r)))
    _, first = reg.open("alice", "/d/a.mefd", "a.mefd")
    reg.open("alice", "/d/a.mefd", "a.mefd")          # the same session again: no new listing
    assert seen == [("/d/a.mefd", True)]                # listed when announced
    reg.open("alice", "/d/b.mefd", "b.mefd")           # pushes alice's a.mefd out
    assert seen[-1] == ("/d/b.mefd", True) and closed == [first]
    reg.close("alice", "/d/b.mefd")
    reg.open("bob", "/d/c.mefd", "c.mefd", protected=True)
    with pytest.raises(ResourceLimit):                 # nothing can go: never announced
        reg.open("carol", "/d/e.mefd", "e.mefd")
    assert [p for p, _ in seen] == ["/d/a.mefd", "/d/b.mefd", "/d/c.mefd"]
    newer = _Opened("/d/c.mefd")
    assert reg.replace_recording(reg.recording("/d/c.mefd"), newer)
    assert seen[-1] == ("/d/c.mefd", True) and reg.recording("/d/c.mefd") is newer
    assert not reg.replace_recording(first, _Opened("/d/a.mefd"))   # not listed: nothing
    assert len(seen) == 4
