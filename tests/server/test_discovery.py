"""ListRecordings end to end: real sessions in real folders under DATA_ROOTS.

The reference for each entry is mef3io read directly (channels, span, rates)
and the files' sizes on disk.
"""
from __future__ import annotations

import os
import warnings

import mef3io
import pytest

from conftest import T0, random_walk, write_session

from mef3io_server.server.discovery import SummaryCache, find_recordings


def direct_entry(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path))
        infos = [r.info(ch) for ch in r.channels]
        r.close()
    if os.path.isfile(path):
        size = os.path.getsize(path)
    else:
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    rates = [i["sampling_frequency"] for i in infos]
    return {"number_of_channels": len(infos),
            "start_uutc": min(i["start_time"] for i in infos),
            "end_uutc": max(i["end_time"] for i in infos),
            "min_sampling_rate": min(rates), "max_sampling_rate": max(rates),
            "size_bytes": size, "encrypted": False, "error_message": None}


@pytest.fixture
def tree(tmp_path):
    """data/ with sessions at several depths, an archive, an encrypted and a broken one;
    other/ a second root; outside/ a session reached only through a symlink."""
    data, other, outside = tmp_path / "data", tmp_path / "other", tmp_path / "outside"
    for d in (data / "p1" / "nested", other, outside, tmp_path / "staging"):
        d.mkdir(parents=True)
    write_session(data / "p1" / "a.mefd", {"x": random_walk(2560), "y": (random_walk(5120), 512.0)})
    write_session(data / "p1" / "nested" / "b.mefd", {"z": (random_walk(1000), 100.0, T0 + 10**9)})
    write_session(data / "top.mefd", {"x": random_walk(256)})
    write_session(data / "secret.mefd", {"x": random_walk(512), "y": random_walk(512)},
                  password1="pass1", password2="pass2")
    staged = write_session(tmp_path / "staging" / "arch.mefd", {"x": random_walk(768)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mef3io.archive_session(str(staged), str(data / "arch.mefd.tar"))
    (data / "broken.mefd").mkdir()
    (data / "broken.mefd" / "junk.txt").write_text("not MEF")
    (data / "notes").mkdir()
    (data / "notes" / "readme.txt").write_text("no sessions here")
    write_session(outside / "far.mefd", {"x": random_walk(256)})
    os.symlink(outside / "far.mefd", data / "link.mefd")
    write_session(other / "c.mefd", {"x": random_walk(256)})
    return tmp_path


def test_lists_sessions_with_metadata(tree, start_server, client_factory):
    data = tree / "data"
    srv = start_server(DATA_ROOTS=f"{data}:{tree / 'other'}")
    c = client_factory(srv.address)
    found = {os.path.relpath(e["path"], data): e for e in c.list_recordings(str(data))}
    assert sorted(found) == ["arch.mefd.tar", "broken.mefd", "p1/a.mefd", "p1/nested/b.mefd",
                             "secret.mefd", "top.mefd"]      # link.mefd leaves the roots
    for rel in ("arch.mefd.tar", "p1/a.mefd", "p1/nested/b.mefd", "top.mefd"):
        got = dict(found[rel])
        got.pop("path")
        assert got == direct_entry(data / rel), rel
    assert found["p1/a.mefd"]["max_sampling_rate"] == 512.0
    secret = found["secret.mefd"]
    assert secret["encrypted"] and secret["number_of_channels"] == 2
    assert secret["min_sampling_rate"] == 0.0 and secret["error_message"] is None
    assert secret["start_uutc"] == T0
    assert "not a readable MEF" in found["broken.mefd"]["error_message"]

    flat = [os.path.relpath(e["path"], data) for e in c.list_recordings(str(data), recursive=False)]
    assert flat == ["arch.mefd.tar", "broken.mefd", "secret.mefd", "top.mefd"]
    sub = c.list_recordings(str(data / "p1"))
    assert [e["path"] for e in sub] == [str(data / "p1" / "a.mefd"),
                                        str(data / "p1" / "nested" / "b.mefd")]
    everything = [e["path"] for e in c.list_recordings()]
    assert len(everything) == 7 and str(tree / "other" / "c.mefd") in everything


def test_refuses_outside_roots_and_asks_for_a_root(tree, start_server, client_factory):
    srv = start_server(DATA_ROOTS=str(tree / "data"))
    c = client_factory(srv.address)
    for bad in (str(tree / "outside"), str(tree / "data" / ".." / "outside"), "/"):
        with pytest.raises(RuntimeError, match="outside the served roots"):
            c.list_recordings(bad)
    with pytest.raises(RuntimeError, match="not a directory"):
        c.list_recordings(str(tree / "data" / "nope"))
    open_srv = start_server()
    c2 = client_factory(open_srv.address)
    with pytest.raises(RuntimeError, match="DATA_ROOTS.*root"):
        c2.list_recordings()
    assert len(c2.list_recordings(str(tree / "outside"))) == 1   # no roots: any readable dir


def test_host_root_paths_are_the_clients(tree, start_server, client_factory):
    srv = start_server(HOST_ROOT=str(tree), DATA_ROOTS=str(tree / "data"))
    c = client_factory(srv.address)
    paths = [e["path"] for e in c.list_recordings("/data/p1")]
    assert paths == ["/data/p1/a.mefd", "/data/p1/nested/b.mefd"]
    assert [e["path"] for e in c.list_recordings()][:1] == ["/data/arch.mefd.tar"]
    info = c.open_file(paths[0])
    assert info["file_opened"], info["error_message"]


def test_summaries_are_cached_until_the_files_change(tree):
    index = SummaryCache()
    path = str(tree / "data" / "top.mefd")
    first = index.summary(path)
    assert index.summary(path) == first and (index.hits, index.misses) == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(path) as w:          # append one more second
            w.write("x", random_walk(256, seed=9), first.end_uutc, fs=256.0)
    second = index.summary(path)
    assert index.misses == 2 and second.end_uutc == first.end_uutc + 1_000_000
    assert second.size_bytes > first.size_bytes
    assert [os.path.basename(p) for p in find_recordings(str(tree / "data"), True)] == \
        ["arch.mefd.tar", "broken.mefd", "link.mefd", "secret.mefd", "top.mefd", "a.mefd",
         "b.mefd"]


def test_many_sessions_stream_in_pages(tmp_path, start_server, client_factory):
    data = tmp_path / "many"
    data.mkdir()
    for k in range(130):
        (data / f"s{k:03d}.mefd").mkdir()     # empty folders: listed with an error each
    srv = start_server(DATA_ROOTS=str(data))
    c = client_factory(srv.address)
    from mef3io_server import messages
    chunks = list(c.stub.ListRecordings(messages.list_recordings_request(str(data)), **c.call_options()))
    assert len(chunks) >= 2
    entries = [e for ch in chunks for e in messages.recordings_answer(ch)]
    assert [os.path.basename(e["path"]) for e in entries] == [f"s{k:03d}.mefd" for k in range(130)]
    assert all(e["error_message"] for e in entries)


# ------------------------------------------------- hostile listings (issue 19, item 6)


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    """30 000 empty folders and no session: a walk that finds nothing, for seconds."""
    root = tmp_path_factory.mktemp("maze")
    for i in range(30):
        for j in range(1000):
            os.makedirs(root / f"d{i:02d}" / f"e{j:04d}")
    return root


def test_a_walk_stops_when_its_caller_gives_up(maze, start_server):
    import time

    import grpc
    import psutil

    from mef3io_server import messages
    from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

    h = start_server(DATA_ROOTS=str(maze))
    server = psutil.Process(h.proc.pid)
    with grpc.insecure_channel(h.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        calls = [stub.ListRecordings(messages.list_recordings_request(str(maze)), timeout=0.5)
                 for _ in range(16)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as ei:
                list(call)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.0)                    # every caller gave up a while ago
    cpu0 = sum(server.cpu_times()[:2])
    time.sleep(2.0)
    busy = sum(server.cpu_times()[:2]) - cpu0
    assert busy < 0.5, f"the server still worked {busy:.1f} s of CPU in 2 s for nobody"


def test_listing_skips_what_cannot_be_resolved(start_server, client_factory):
    """Without DATA_ROOTS, /proc holds links even root cannot read (a kernel thread's exe)."""
    h = start_server()
    c = client_factory(h.address, timeout=120)
    assert c.list_recordings("/proc") == []
