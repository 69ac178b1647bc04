"""Change notifications on open recordings (issue 21): ``CHANGE_NOTIFICATIONS``.

Real server subprocesses with ``REFRESH_INTERVAL_S=3600``: polling would see
nothing for an hour, so a change seen within seconds was notified. Real
sessions, written and appended to by ``mef3io.Writer``. Then the rules that
decide between notifications and polling (file system types, watch limits,
symbolic links), and watches going away with their recordings.
"""
from __future__ import annotations

import errno
import os
import shutil
import time

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from test_growing import FS, SEC, append

from mef3io_server.server import change_signals as cs
from mef3io_server.server.change_signals import ChangeSignals, fs_type_of, notifications_trusted
from mef3io_server.server.changes import ChangeWatcher
from mef3io_server.server.config import Settings
from mef3io_server.server.engine import Engine

pytestmark = pytest.mark.skipif(cs.INotify is None, reason="inotify is Linux only")

HOUR = 3600


def wait_for(pred, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def inotify_watches(pid: int) -> int:
    """Inotify watches process ``pid`` holds, from /proc/<pid>/fdinfo."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


# ---------------------------------------------------------------- real servers


def test_append_is_notified_while_polling_is_hourly(tmp_path, start_server, client_factory):
    server = start_server(REFRESH_INTERVAL_S=HOUR, CHANGE_NOTIFICATIONS="auto")
    path = write_session(tmp_path / "grow.mefd", {"a": random_walk(int(20 * FS), 1),
                                                  "b": random_walk(int(20 * FS), 2)})
    c = client_factory(server.address)
    assert c.open_file(str(path))["end_uutc"] == T0 + 20 * SEC
    c.get_signal_range(str(path), ["a"], T0, T0 + 10 * SEC)
    append(path, {"a": random_walk(int(5 * FS), 3), "b": random_walk(int(5 * FS), 4)},
           T0 + 20 * SEC)
    # No call is made: the refresher acts on the notification by itself.
    assert wait_for(lambda: "changed on disk (appended)" in server.stderr_text()), \
        server.stderr_text()
    assert c.get_file_info(str(path))["end_uutc"] == T0 + 25 * SEC
    res = c.get_signal_range(str(path), ["a", "b"], T0 + 15 * SEC, T0 + 25 * SEC)
    assert np.array_equal(res["array"], direct_read(path, ["a", "b"], T0 + 15 * SEC,
                                                    T0 + 25 * SEC), equal_nan=True)


def test_new_segment_folder_is_watched_too(tmp_path, start_server, client_factory):
    """An append in a new segment makes folders after the open; a later append
    into them alone is notified through the watches placed on them."""
    server = start_server(REFRESH_INTERVAL_S=HOUR)
    path = write_session(tmp_path / "seg.mefd", {"a": random_walk(int(20 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 30 * SEC, new_segment=True)
    assert wait_for(lambda: c.get_file_info(str(path))["end_uutc"] == T0 + 35 * SEC)
    append(path, {"a": random_walk(int(5 * FS), 3)}, T0 + 35 * SEC)
    assert wait_for(lambda: server.stderr_text().count("changed on disk") >= 2)
    assert c.get_file_info(str(path))["end_uutc"] == T0 + 40 * SEC


def test_replaced_session_is_notified(tmp_path, start_server, client_factory):
    server = start_server(REFRESH_INTERVAL_S=HOUR)
    path = write_session(tmp_path / "rep.mefd", {"a": random_walk(int(20 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    before = c.get_signal_range(str(path), ["a"], T0, T0 + 10 * SEC)["array"]
    write_session(path, {"a": random_walk(int(20 * FS), 99)})
    assert wait_for(lambda: "changed on disk (replaced)" in server.stderr_text()), \
        server.stderr_text()
    after = c.get_signal_range(str(path), ["a"], T0, T0 + 10 * SEC)["array"]
    assert not np.array_equal(before, after)
    assert np.array_equal(after, direct_read(path, ["a"], T0, T0 + 10 * SEC), equal_nan=True)


def test_session_written_anew_keeps_being_notified(tmp_path, start_server, client_factory):
    """Deleted and written again at once: the new folders are watched after the
    re-open, so an append to the new session is notified too."""
    server = start_server(REFRESH_INTERVAL_S=HOUR)
    path = write_session(tmp_path / "anew.mefd", {"a": random_walk(int(20 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    shutil.rmtree(path)
    write_session(path, {"a": random_walk(int(20 * FS), 7)})
    assert wait_for(lambda: "changed on disk (replaced)" in server.stderr_text()), \
        server.stderr_text()
    append(path, {"a": random_walk(int(5 * FS), 8)}, T0 + 20 * SEC)
    assert wait_for(lambda: "changed on disk (appended)" in server.stderr_text()), \
        server.stderr_text()
    assert c.get_file_info(str(path))["end_uutc"] == T0 + 25 * SEC


def test_deleted_session_is_notified(tmp_path, start_server, client_factory):
    server = start_server(REFRESH_INTERVAL_S=HOUR)
    path = write_session(tmp_path / "gone.mefd", {"a": random_walk(int(20 * FS), 1)})
    c = client_factory(server.address)
    c.open_file(str(path))
    assert str(path) in c.list_open_files()
    shutil.rmtree(path)
    # The refresher drops it without any read asking.
    assert wait_for(lambda: str(path) not in c.list_open_files())


def test_off_polls_and_notifies_nothing(tmp_path, start_server, client_factory):
    hourly = start_server(REFRESH_INTERVAL_S=HOUR, CHANGE_NOTIFICATIONS="off")
    polled = start_server(REFRESH_INTERVAL_S=0.2, CHANGE_NOTIFICATIONS="off")
    path = write_session(tmp_path / "off.mefd", {"a": random_walk(int(20 * FS), 1)})
    ch, cp = client_factory(hourly.address), client_factory(polled.address)
    ch.open_file(str(path))
    cp.open_file(str(path))
    assert inotify_watches(hourly.proc.pid) == 0
    append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 20 * SEC)
    assert wait_for(lambda: "changed on disk (appended)" in polled.stderr_text())
    time.sleep(1.5)     # the notified path would have acted within ~0.2 s
    assert "changed on disk" not in hourly.stderr_text()
    assert ch.get_file_info(str(path))["end_uutc"] == T0 + 20 * SEC


def test_watches_go_with_the_last_close(tmp_path, start_server, client_factory):
    server = start_server(REFRESH_INTERVAL_S=HOUR)
    a = write_session(tmp_path / "a.mefd", {"x": random_walk(int(10 * FS), 1)})
    b = write_session(tmp_path / "b.mefd", {"x": random_walk(int(10 * FS), 2)})
    c1 = client_factory(server.address, client_id="one")
    c2 = client_factory(server.address, client_id="two")
    pid = server.proc.pid
    assert inotify_watches(pid) == 0
    c1.open_file(str(a))       # (watches are placed just after the open answers)
    assert wait_for(lambda: inotify_watches(pid) >= 4, 5)
    with_a = inotify_watches(pid)
    assert with_a == 4         # the parent, the session, its channel and segment folders
    c2.open_file(str(a))
    c2.open_file(str(b))
    assert wait_for(lambda: inotify_watches(pid) > with_a, 5)   # b's own folders
    c2.close_file(str(b))
    assert wait_for(lambda: inotify_watches(pid) == with_a, 5)
    c1.close_file(str(a))
    assert inotify_watches(pid) == with_a     # c2 still has a open
    c2.close_file(str(a))
    assert wait_for(lambda: inotify_watches(pid) == 0, 5)


# ---------------------------------------------------------------- the rules


MOUNTINFO = "\n".join([
    "22 27 0:21 / /proc rw,relatime - proc proc rw",
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    "40 27 0:50 / /data rw,relatime shared:7 - nfs4 server:/export rw,vers=4.2",
    "41 40 0:51 / /data/local rw,relatime - xfs /dev/vdb rw",
    "42 27 0:52 / /mnt/my\\040disk rw - fuse.sshfs host:/x rw",
    "43 27 0:53 / /mnt/cifs rw - cifs //h/s rw",
    "44 27 0:54 / /mnt/p9 rw - 9p tag rw",
    "45 27 0:55 / /mnt/ceph rw - ceph 1.2.3.4:/ rw",
    "46 27 0:56 / /mnt/fb rw - fuseblk /dev/sdc1 rw",
    "47 27 0:57 / /tmp rw - tmpfs tmpfs rw",
])


@pytest.mark.parametrize("path, fs, trusted", [
    ("/home/x/r.mefd", "ext4", True),
    ("/data/r.mefd", "nfs4", False),
    ("/data", "nfs4", False),
    ("/data/local/r.mefd", "xfs", True),        # a local mount inside a network one
    ("/data/localx/r.mefd", "nfs4", False),     # a prefix of a name is not a parent
    ("/mnt/my disk/r.mefd", "fuse.sshfs", False),
    ("/mnt/cifs/r.mefd", "cifs", False),
    ("/mnt/p9/r.mefd", "9p", False),
    ("/mnt/ceph/r.mefd", "ceph", False),
    ("/mnt/fb/r.mefd", "fuseblk", False),
    ("/tmp/r.mefd.tar", "tmpfs", True),
])
def test_file_system_decides(path, fs, trusted):
    assert fs_type_of(path, MOUNTINFO) == fs
    assert notifications_trusted(fs) is trusted


def test_unknown_file_system_is_not_trusted():
    assert fs_type_of("/x", "") is None
    assert notifications_trusted(None) is False


def test_network_file_system_is_polled(tmp_path):
    path = write_session(tmp_path / "n.mefd", {"a": random_walk(100, 1)})
    nfs = f"27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 0:50 / {tmp_path} rw - nfs h:/e rw"
    signals = ChangeSignals(lambda p: None, mountinfo=lambda: nfs)
    try:
        assert signals.watch(str(path)) is False
        assert signals.watch_count() == 0
        local = ChangeSignals(lambda p: None, mountinfo=lambda: "27 1 254:0 / / rw - ext4 x rw")
        try:
            assert local.watch(str(path)) is True
            assert local.watch_count() >= 3
        finally:
            local.close()
    finally:
        signals.close()


def test_symlinked_channel_folder_is_polled(tmp_path):
    path = write_session(tmp_path / "s.mefd", {"a": random_walk(100, 1)})
    elsewhere = tmp_path / "elsewhere.timd"
    (path / "a.timd").rename(elsewhere)
    (path / "a.timd").symlink_to(elsewhere)
    signals = ChangeSignals(lambda p: None)
    try:
        assert signals.watch(str(path)) is False
        assert signals.watch_count() == 0
    finally:
        signals.close()


_REAL_INOTIFY = cs.INotify


class _Limited:
    """An inotify that refuses watches past ``room`` (``max_user_watches``)."""

    def __init__(self, room: int):
        self.real = _REAL_INOTIFY()
        self.room = room

    def add_watch(self, path, mask):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        return self.real.add_watch(path, mask)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_watch_limit_falls_back_to_polling(tmp_path):
    """Over the limit, a session's partial watches are removed and it is polled;
    one that fits is still notified."""
    small = write_session(tmp_path / "small.mefd", {"a": random_walk(100, 1)})
    big = write_session(tmp_path / "big.mefd", {f"c{i}": random_walk(100, i) for i in range(8)})
    limited = _Limited(room=5)
    signals = ChangeSignals(lambda p: None, inotify_factory=lambda: limited)
    try:
        assert signals.watch(str(small)) is True      # parent, session, channel, segment
        held = signals.watch_count()
        assert signals.watch(str(big)) is False
        assert signals.watch_count() == held
        assert signals.watched() == [str(small)]
    finally:
        signals.close()


def test_engine_polls_when_watches_run_out(tmp_path, monkeypatch):
    """Through the engine: a recording that cannot be watched is polled every
    REFRESH_INTERVAL_S, and its append is seen."""
    monkeypatch.setattr(cs, "INotify", lambda: _Limited(room=0))
    eng = Engine(Settings(port=0, refresh_interval_s=0.2, change_notifications="auto"))
    eng.start()
    try:
        path = write_session(tmp_path / "lim.mefd", {"a": random_walk(int(20 * FS), 1)})
        eng.open_file("c", str(path))
        eng.changes.settled()
        assert eng.changes.notified(str(path)) is False
        append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 20 * SEC)
        assert wait_for(lambda: eng.sessions.recording(str(path)).end_uutc == T0 + 25 * SEC)
    finally:
        eng.close()


def test_engine_watches_follow_versions_and_close(tmp_path):
    """A re-open after a change keeps the path watched; the last close unwatches it."""
    eng = Engine(Settings(port=0, refresh_interval_s=HOUR, change_notifications="auto"))
    eng.start()
    try:
        path = write_session(tmp_path / "v.mefd", {"a": random_walk(int(20 * FS), 1)})
        eng.open_file("c", str(path))
        eng.changes.settled()
        assert eng.changes.notified(str(path))
        first = eng.sessions.recording(str(path))
        append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 20 * SEC)
        assert wait_for(lambda: eng.sessions.recording(str(path)) is not first)
        eng.changes.settled()
        assert eng.changes.signals.watched() == [str(path)]
        assert eng.changes.notified(str(path))
        eng.close_file("c", str(path))
        assert eng.changes.signals.watched() == []
        assert eng.changes.signals.watch_count() == 0
        assert not eng.changes.notified(str(path))
    finally:
        eng.close()


def test_request_on_dirty_recording_checks_before_reading(tmp_path):
    """Without the refresher (never started), a read after an append sees it:
    the notification marked the recording dirty, and the read checks first."""
    eng = Engine(Settings(port=0, refresh_interval_s=HOUR, change_notifications="auto"))
    try:
        path = write_session(tmp_path / "d.mefd", {"a": random_walk(int(20 * FS), 1)})
        eng.open_file("c", str(path))
        eng.changes.settled()
        eng.changes.refreshed(eng.sessions.recording(str(path)), force=True)  # the open's check
        append(path, {"a": random_walk(int(5 * FS), 2)}, T0 + 20 * SEC)
        assert wait_for(lambda: str(path) in eng.changes._dirty, 5)
        time.sleep(ChangeWatcher.SIGNAL_GAP_S)
        assert eng.recording("c", str(path)).end_uutc == T0 + 25 * SEC
        # Clean again: a request does not check (no stat) until the next event.
        rec = eng.sessions.recording(str(path))
        checked = rec.last_checked
        eng.recording("c", str(path))
        assert rec.last_checked == checked
    finally:
        eng.close()


def test_off_places_no_watch(tmp_path):
    eng = Engine(Settings(port=0, refresh_interval_s=0.5, change_notifications="off"))
    try:
        path = write_session(tmp_path / "o.mefd", {"a": random_walk(100, 1)})
        eng.open_file("c", str(path))
        assert eng.changes.signals is None
        assert not eng.changes.notified(str(path))
    finally:
        eng.close()


def test_tar_session_watched_as_a_file(tmp_path):
    tar = tmp_path / "t.mefd.tar"
    tar.write_bytes(b"\0" * 1024)
    seen = []
    signals = ChangeSignals(seen.append)
    try:
        assert signals.watch(str(tar)) is True
        assert signals.watch_count() == 2        # the file and its folder
        with open(tar, "ab") as f:
            f.write(b"\0" * 512)
        assert wait_for(lambda: str(tar) in seen, 5)
    finally:
        signals.close()


def test_unrelated_file_beside_the_session_is_no_change(tmp_path):
    path = write_session(tmp_path / "q.mefd", {"a": random_walk(100, 1)})
    seen = []
    signals = ChangeSignals(seen.append)
    try:
        assert signals.watch(str(path))
        (tmp_path / "other.txt").write_text("x")
        (path / "note.txt").write_text("x")      # inside the session: a change
        assert wait_for(lambda: str(path) in seen, 5)
        assert set(seen) == {str(path)}
    finally:
        signals.close()


def test_safety_net_interval_grows_with_check_cost():
    """Unchanged notified recordings are re-checked every 30 x REFRESH_INTERVAL_S,
    or every 1000 x what their check costs when that is longer."""
    from types import SimpleNamespace

    w = ChangeWatcher(2.0, None, None, None, None, None, time.monotonic)
    assert w.safety_interval(SimpleNamespace(check_cost_s=0.001)) == 60.0
    assert w.safety_interval(SimpleNamespace(check_cost_s=0.1)) == pytest.approx(100.0)
