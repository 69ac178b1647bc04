"""DATA_ROOTS hold when mef3io opens each file (issue 19, item 3).

mef3io opens a session's ``.tdat`` files again at every read. A session
folder inside a root whose channel or segment folders (or files) lead to a
recording outside must never be served, nor one whose folders are swapped
for such links after it was opened or after a harmless call.
"""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session

SEC = 1_000_000


@pytest.fixture
def layout(tmp_path):
    """root/ served; outside/secret.mefd not. Both recordings have channel "a" of the
    same length and layout, with different values."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = write_session(outside / "secret.mefd", {"a": random_walk(256 * 60, 99) + 5000})
    return root, outside, secret


def _session_linking(root, secret, name, what):
    """``root/<name>.mefd`` holding ``secret``'s ``what`` through a symlink."""
    fake = write_session(root / f"{name}.mefd", {"a": random_walk(256 * 60, 1)})
    if what == "channel folder":
        shutil.rmtree(fake / "a.timd")
        os.symlink(secret / "a.timd", fake / "a.timd")
    elif what == "segment folder":
        seg = next((fake / "a.timd").glob("*.segd"))
        shutil.rmtree(seg)
        os.symlink(next((secret / "a.timd").glob("*.segd")), seg)
    else:                                         # the data file alone
        tdat = next(fake.rglob("*.tdat"))
        tdat.unlink()
        os.symlink(next(secret.rglob("*.tdat")), tdat)
    return fake


def _never_secret(res, secret, t0, t1):
    """The answer is a refusal or not the outside recording's values."""
    if res["error_message"]:
        return
    assert not np.array_equal(res["array"], direct_read(secret, ["a"], t0, t1), equal_nan=True)


@pytest.mark.parametrize("what", ["channel folder", "segment folder", "data file"])
def test_a_session_whose_insides_lead_out_is_refused(layout, start_server, client_factory,
                                                     what):
    root, _, secret = layout
    fake = _session_linking(root, secret, "fake", what)
    h = start_server(DATA_ROOTS=str(root))
    c = client_factory(h.address)
    opened = c.open_file(str(fake))
    assert not opened["file_opened"]
    assert "outside the served roots" in opened["error_message"], opened["error_message"]
    _never_secret(c.get_signal_range(str(fake), ["a"], T0, T0 + SEC), secret, T0, T0 + SEC)
    (entry,) = c.list_recordings(str(root))
    assert "outside the served roots" in entry["error_message"]
    assert entry["number_of_channels"] == 0


def test_folders_swapped_after_opening_are_not_followed(layout, start_server, client_factory):
    root, _, secret = layout
    real = write_session(root / "real.mefd", {"a": random_walk(256 * 60, 1)})
    h = start_server(DATA_ROOTS=str(root), REFRESH_INTERVAL_S=1)
    c = client_factory(h.address)
    assert c.open_file(str(real))["file_opened"]
    want = direct_read(real, ["a"], T0 + 30 * SEC, T0 + 40 * SEC)
    assert np.array_equal(c.get_signal_range(str(real), ["a"], T0, T0 + SEC)["array"],
                          direct_read(real, ["a"], T0, T0 + SEC))
    # Swap the channel folder for a link to the outside recording's, then read a window
    # not read before (nothing cached): the data read is the one checked at open ...
    os.rename(real / "a.timd", root / "kept.timd")
    os.symlink(secret / "a.timd", real / "a.timd")
    res = c.get_signal_range(str(real), ["a"], T0 + 30 * SEC, T0 + 40 * SEC)
    if not res["error_message"]:
        assert np.array_equal(res["array"], want)
    # ... and once the change is noticed, the recording is refused, never served.
    time.sleep(2.5)
    for k in range(5):
        t0 = T0 + (40 + 2 * k) * SEC
        _never_secret(c.get_signal_range(str(real), ["a"], t0, t0 + SEC), secret, t0,
                      t0 + SEC)
    assert not c.open_file(str(real))["file_opened"]


def test_a_session_swapped_right_after_a_harmless_call_is_refused(layout, start_server,
                                                                  client_factory):
    root, outside, secret = layout
    real = write_session(root / "p.mefd", {"a": random_walk(256 * 60, 1)})
    h = start_server(DATA_ROOTS=str(root))
    c = client_factory(h.address)
    assert "not open" in c.get_file_info(str(real))["error_message"]   # resolves the path
    os.rename(real, outside / "p-away.mefd")
    os.symlink(secret, real)                                          # within a second
    opened = c.open_file(str(real))
    assert not opened["file_opened"] and "outside the served roots" in opened["error_message"]
    _never_secret(c.get_signal_range(str(real), ["a"], T0, T0 + SEC), secret, T0, T0 + SEC)


@pytest.mark.parametrize("pool", ["false", "true"])
def test_pinned_recordings_read_exactly_with_either_decoder(layout, start_server,
                                                            client_factory, pool):
    """Inside the roots, with legitimate links between folders of the roots, reads are
    what mef3io reads of the files (decode worker processes follow the pins too)."""
    root, _, _ = layout
    real = write_session(root / "store" / "r.mefd", {f"c{i}": random_walk(256 * 60, i)
                                                     for i in range(4)})
    os.symlink(real, root / "alias.mefd")                 # a link inside the roots
    h = start_server(DATA_ROOTS=str(root), USE_PROCESS_POOL=pool)
    c = client_factory(h.address)
    assert c.open_file(str(root / "alias.mefd"))["file_opened"]
    for t0 in (T0, T0 + 17 * SEC, T0 + 50 * SEC):
        res = c.get_signal_range(str(root / "alias.mefd"), ["c0", "c3"], t0, t0 + 10 * SEC)
        assert np.array_equal(res["array"], direct_read(real, ["c0", "c3"], t0, t0 + 10 * SEC),
                              equal_nan=True)
    from mef3io_server.server.pinning import views_parent

    views = [d for d in os.listdir(views_parent())
             if d.startswith(f"mef3io-server-pins-{h.proc.pid}-")]
    assert len(views) == 1                                # the views of this server
    assert c.close_file(str(root / "alias.mefd"))["error_message"] == ""
    h.stop()
    assert not os.path.exists(os.path.join(views_parent(), views[0]))


def test_links_inside_the_roots_are_followed_and_pins_are_bounded(layout):
    """Engine level: a channel folder linked to another session's inside the roots reads
    exactly; past the descriptor budget an open is refused, and nothing stays held."""
    from mef3io_server.server.config import Settings
    from mef3io_server.server.engine import Engine
    from mef3io_server.server.errors import ResourceLimit

    root, _, _ = layout
    other = write_session(root / "other.mefd", {"a": random_walk(256 * 60, 7)})
    linked = write_session(root / "linked.mefd", {"a": random_walk(256 * 60, 1)})
    shutil.rmtree(linked / "a.timd")
    os.symlink(other / "a.timd", linked / "a.timd")
    engine = Engine(Settings(data_roots=(str(root),)))
    try:
        engine.open_file("c", str(linked))
        read = engine.read_signal("c", str(linked), ["a"], T0, T0 + 5 * SEC)
        got = np.concatenate([rows for *_, rows in read.chunks], axis=1)
        assert np.array_equal(got, direct_read(other, ["a"], T0, T0 + 5 * SEC))
        held = engine.pinner.held
        assert held >= 5                          # the session's folders and files
        engine.pinner.max_fds = held + 2          # room for less than another session
        with pytest.raises(ResourceLimit, match="RLIMIT_NOFILE"):
            engine.open_file("c", str(other))
        assert engine.pinner.held == held
        engine.close_file("c", str(linked))
        assert engine.pinner.held == 0
    finally:
        engine.close()
