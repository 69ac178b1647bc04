"""GetRecords end to end: a real server, sessions written by mef3io.Writer, golden sessions.

The reference is mef3io itself: ``Reader.records(level="all")`` read directly
(with the level-2 password for encrypted sessions), sorted by time.
"""
from __future__ import annotations

import warnings

import mef3io
import pytest

from conftest import T0, random_walk

from mef3io_server import messages

SESSION_NOTES = [
    {"time": T0 + 1_000_000, "text": "start of test"},
    {"time": T0 + 500_000, "type": "EDFA", "text": "arousal", "duration": 3_000_000},
    {"time": T0 + 7_000_000, "type": "SyLg", "text": "amplifier restarted"},
]
CHANNEL_NOTES = {
    "a": [{"time": T0 + 2_000_000, "text": "artifact on a"},
          {"time": T0 + 1_000_000, "text": "same time as a session note"}],
    "b": [{"time": T0 + 3_000_000, "text": "electrode b loose"}],
}


def write_annotated(path, password1="", password2="", extra=()):
    """A 10 s two-channel session with session- and channel-level records."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, password1=password1,
                           password2=password2) as w:
            for i, name in enumerate(("a", "b", "c")):
                w.write(name, random_walk(2560, seed=i), T0, fs=256.0)
            w.write_annotations(SESSION_NOTES + list(extra))
            for ch, notes in CHANNEL_NOTES.items():
                w.write_annotations(notes, channel=ch)
    return path


def direct_records(path, password=""):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path), password=password)
        try:
            recs = r.records(level="all")
        finally:
            r.close()
    order = {"session": 0, "channel": 1, "segment": 2}
    return sorted(recs, key=lambda d: (d["time"], order[d["level"]], d["channel"] or "",
                                       d["segment"] if d["segment"] is not None else -1))


def same(served, direct):
    """Served dicts carry exactly what mef3io read, field by field."""
    assert len(served) == len(direct)
    for s, d in zip(served, direct):
        assert s["time_uutc"] == d["time"]
        assert s["type"] == d["type"]
        assert s["text"] == d.get("text")
        assert s["channel"] == d["channel"]
        assert s["level"] == d["level"]
        assert s["segment"] == d["segment"]
        assert s["duration_us"] == d.get("duration")
        assert s["locked"] is False


def test_records_match_mef3io_in_time_order(tmp_path, shared_server, client_factory):
    path = write_annotated(tmp_path / "notes.mefd")
    c = client_factory(shared_server.address)
    assert c.open_file(str(path))["file_opened"]
    served = c.get_records(str(path))
    direct = direct_records(path)
    assert len(direct) == 6
    same(served, direct)
    assert [r["time_uutc"] for r in served] == sorted(r["time_uutc"] for r in served)
    edfa = [r for r in served if r["type"] == "EDFA"][0]
    assert edfa["duration_us"] == 3_000_000 and edfa["channel"] is None


def test_channels_and_window_select(tmp_path, shared_server, client_factory):
    path = write_annotated(tmp_path / "notes.mefd")
    c = client_factory(shared_server.address)
    c.open_file(str(path))
    only_a = c.get_records(str(path), channels=["a"])
    same(only_a, [d for d in direct_records(path) if d["channel"] in (None, "a")])
    # [T0 + 1.5 s, T0 + 3 s): the EDFA (0.5 s + 3 s) overlaps, the note at 2 s is in,
    # the note at exactly 3 s is not (half-open).
    win = c.get_records(str(path), start_uutc=T0 + 1_500_000, end_uutc=T0 + 3_000_000)
    assert [(r["time_uutc"], r["type"]) for r in win] == [(T0 + 500_000, "EDFA"),
                                                          (T0 + 2_000_000, "Note")]


def test_golden_with_annotations(golden, shared_server, client_factory):
    path = golden / "with_annotations.mefd"
    c = client_factory(shared_server.address)
    assert c.open_file(str(path))["file_opened"]
    served = c.get_records(str(path))
    direct = direct_records(path)
    assert direct, "the golden session has records"
    same(served, direct)


@pytest.mark.parametrize("first_level", [1, 2])
def test_level1_password_reports_locked_records(tmp_path, shared_server, client_factory,
                                                first_level):
    path = write_annotated(tmp_path / f"secret{first_level}.mefd", password1="pass1",
                           password2="pass2")
    direct = direct_records(path, "pass2")
    full = client_factory(shared_server.address)
    low = client_factory(shared_server.address)
    # Both orders of opening: the shared reader has its first opener's access,
    # yet each client sees what its own password opens.
    if first_level == 1:
        assert low.open_file(str(path), password="pass1")["file_opened"]
        assert full.open_file(str(path), password="pass2")["file_opened"]
    else:
        assert full.open_file(str(path), password="pass2")["file_opened"]
        assert low.open_file(str(path), password="pass1")["file_opened"]
    same(full.get_records(str(path)), direct)
    locked = low.get_records(str(path))
    assert [(r["time_uutc"], r["type"], r["channel"], r["level"]) for r in locked] == \
        [(d["time"], d["type"], d["channel"], d["level"]) for d in direct]
    assert all(r["locked"] and r["text"] is None and r["duration_us"] is None for r in locked)
    # No password at all: the server refuses, as for a signal read.
    nobody = client_factory(shared_server.address)
    with pytest.raises(RuntimeError, match="encrypted"):
        nobody.get_records(str(path))


def test_many_records_stream_in_several_messages(tmp_path, shared_server, client_factory):
    extra = [{"time": T0 + 4_000_000 + k * 1000, "text": f"spike {k}"} for k in range(2500)]
    path = write_annotated(tmp_path / "busy.mefd", extra=extra)
    c = client_factory(shared_server.address)
    c.open_file(str(path))
    chunks = list(c.stub.GetRecords(messages.records_request(str(path)), **c.call_options()))
    assert len(chunks) >= 3 and not any(ch.error_message for ch in chunks)
    served = [r for ch in chunks for r in messages.records_answer(ch)]
    same(served, direct_records(path))
    assert len(served) == 2506


def test_errors_are_clear(tmp_path, shared_server, client_factory):
    path = write_annotated(tmp_path / "notes.mefd")
    c = client_factory(shared_server.address)
    with pytest.raises(RuntimeError, match="OpenFile"):
        c.get_records(str(path))
    c.open_file(str(path))
    with pytest.raises(RuntimeError, match="unknown channel"):
        c.get_records(str(path), channels=["nope"])
    with pytest.raises(RuntimeError, match="inverted"):
        c.get_records(str(path), start_uutc=T0 + 10, end_uutc=T0)
    assert len(c.get_records(str(path))) == 6    # still serving


def test_records_written_later_are_served(tmp_path, start_server, client_factory):
    """Records are read once per open recording; a change on disk re-reads them."""
    path = write_annotated(tmp_path / "live.mefd")
    srv = start_server(REFRESH_INTERVAL_S="0")
    c = client_factory(srv.address)
    c.open_file(str(path))
    assert len(c.get_records(str(path))) == 6
    assert len(c.get_records(str(path), ["a"], T0, T0 + 2_500_000)) == 4    # from the index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path)) as w:
            w.write_annotations([{"time": T0 + 9_000_000, "text": "added later"}], channel="c")
    served = c.get_records(str(path))
    same(served, direct_records(path))
    assert served[-1]["text"] == "added later" and served[-1]["channel"] == "c"
