"""Bad input: each gets a clear error_message, and the server keeps serving everyone."""
from __future__ import annotations

import glob
import shutil

import grpc
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server.client import Mef3Client
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

S = 1_000_000


@pytest.fixture(scope="module")
def server():
    from conftest import launch_server

    h = launch_server({"MAX_READ_MB": "8", "MAX_CHANNELS_PER_READ": "3"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = write_session(d / "good.mefd", {"a": random_walk(256 * 60, 1),
                                           "b": random_walk(256 * 60, 2)})
    enc = write_session(d / "enc.mefd", {"a": random_walk(256 * 20, 3)},
                        password1="pw-one", password2="pw-two")
    (d / "plain_dir").mkdir()
    (d / "empty.mefd").mkdir()
    (d / "afile.mefd").write_text("not a session")
    # corrupt copies: metadata (.tmet) and data (.tdat) bytes flipped
    src = write_session(d / "src.mefd", {"a": random_walk(256 * 60, 4)})
    broken = {}
    for ext, off in (("tmet", 1100), ("tdat", 5000)):
        dst = d / f"corrupt_{ext}.mefd"
        shutil.copytree(src, dst)
        f = glob.glob(str(dst / "a.timd" / "*" / f"*.{ext}"))[0]
        data = bytearray(open(f, "rb").read())
        for i in range(off, off + 64):
            data[i] ^= 0xFF
        open(f, "wb").write(bytes(data))
        broken[ext] = dst
    return {"dir": d, "good": good, "enc": enc, **{f"corrupt_{k}": v for k, v in broken.items()}}


@pytest.fixture(scope="module")
def healthy(server, files):
    """A well-behaved client with the good file open; checks the server still serves."""
    c = Mef3Client(server.address, client_id="healthy")
    assert c.open_file(str(files["good"]))["file_opened"]
    ref = direct_read(files["good"], ["a", "b"], T0 + 5 * S, T0 + 9 * S)

    def check():
        r = c.get_signal_range(str(files["good"]), ["a", "b"], T0 + 5 * S, T0 + 9 * S)
        assert r["error_message"] == "", r["error_message"]
        assert np.array_equal(r["array"], ref, equal_nan=True)
        assert c.get_file_info(str(files["good"]))["channel_names"] == ["a", "b"]
    check()
    yield check
    c.shutdown()


@pytest.fixture
def client(server):
    c = Mef3Client(server.address, client_id="troublemaker")
    yield c
    c.shutdown()


def open_error(client, path, **kw) -> str:
    r = client.open_file(str(path), **kw)
    assert r["file_opened"] is False
    assert r["error_message"]
    return r["error_message"]


def read_error(client, path, channels, t0, t1, **kw) -> str:
    r = client.get_signal_range(str(path), channels, t0, t1, **kw)
    assert r["array"] is None and r["error_message"]
    return r["error_message"]


# ---------------------------------------------------------------- paths and files


@pytest.mark.parametrize("kind,needle", [
    ("missing", "no MEF session"),
    ("plain_dir", "not a MEF session"),
    ("afile", "not a directory"),
    ("empty", "no channels"),
    ("empty_path", "empty"),
    ("nul", "NUL"),
    ("long", "limit"),
])
def test_bad_paths(client, healthy, files, kind, needle):
    d = files["dir"]
    path = {"missing": d / "nope.mefd", "plain_dir": d / "plain_dir",
            "afile": d / "afile.mefd", "empty": d / "empty.mefd", "empty_path": "",
            "nul": f"{d}/x\x00.mefd", "long": "/" + "x" * 5000 + ".mefd"}[kind]
    msg = open_error(client, path)
    assert needle in msg, msg
    assert "Traceback" not in msg
    healthy()


def test_corrupt_metadata(client, healthy, files):
    msg = open_error(client, files["corrupt_tmet"])
    assert "corrupt_tmet.mefd" in msg and ("CRC" in msg or "readable" in msg), msg
    healthy()


def test_corrupt_data_fails_the_read_not_the_server(client, healthy, files):
    path = files["corrupt_tdat"]
    assert client.open_file(str(path))["file_opened"]
    msg = read_error(client, path, ["a"], T0, T0 + 60 * S)
    assert "decod" in msg.lower() or "CRC" in msg, msg
    healthy()
    # the undamaged part of the same file still reads
    t0, t1 = T0 + 40 * S, T0 + 50 * S
    r = client.get_signal_range(str(path), ["a"], t0, t1)
    if r["error_message"] == "":
        ref = direct_read(path, ["a"], t0, t1)
        assert np.array_equal(r["array"], ref, equal_nan=True)


def test_read_without_open(client, healthy, files):
    write = files["dir"] / "never_opened.mefd"
    if not write.exists():
        write_session(write, {"a": random_walk(1000)})
    msg = read_error(client, write, ["a"], T0, T0 + S)
    assert "not open" in msg
    info = client.get_file_info(str(write))
    assert info["file_opened"] is False and "not open" in info["error_message"]
    assert "not open" in client.close_file(str(write))["error_message"]
    healthy()


# ---------------------------------------------------------------- reads


def test_unknown_channel(client, healthy, files):
    client.open_file(str(files["good"]))
    msg = read_error(client, files["good"], ["a", "zz9"], T0, T0 + S)
    assert "zz9" in msg and "unknown channel" in msg and "a, b" in msg
    healthy()


@pytest.mark.parametrize("t0,t1", [(T0, T0), (T0 + S, T0), (T0, T0 + 1)])
def test_empty_or_inverted_window(client, healthy, files, t0, t1):
    client.open_file(str(files["good"]))
    msg = read_error(client, files["good"], ["a"], t0, t1)
    assert "window" in msg and str(t0) in msg
    healthy()


def test_read_over_max_read_mb(client, healthy, files):
    client.open_file(str(files["good"]))
    # 2 channels x 5 hours at 256 Hz = 36 MB > MAX_READ_MB=8
    msg = read_error(client, files["good"], ["a", "b"], T0, T0 + 5 * 3600 * S)
    assert "MAX_READ_MB" in msg
    healthy()


def test_absurd_window(client, healthy, files):
    client.open_file(str(files["good"]))
    msg = read_error(client, files["good"], ["a"], -(2**62), 2**62)
    assert "MAX_READ_MB" in msg
    healthy()


def test_too_many_channels(client, healthy, files):
    client.open_file(str(files["good"]))
    msg = read_error(client, files["good"], ["a", "b", "a", "b"], T0, T0 + S)
    assert "MAX_CHANNELS_PER_READ" in msg
    healthy()


def test_bad_n_points(client, healthy, files):
    client.open_file(str(files["good"]))
    msg = read_error(client, files["good"], ["a"], T0, T0 + S, n_points=0)
    assert "n_points" in msg
    healthy()


@pytest.mark.parametrize("cache_fs", [-1.0, 0.0, float("inf"), float("nan"), 10_000.0])
def test_bad_cache_fs(client, healthy, files, cache_fs):
    msg = open_error(client, files["good"], cache_fs=cache_fs)
    assert "cache_fs" in msg
    healthy()


# ---------------------------------------------------------------- passwords


def test_encrypted_needs_password(client, healthy, files):
    msg = open_error(client, files["enc"])
    assert "encrypted" in msg and "pw-" not in msg
    msg = open_error(client, files["enc"], password="wrong")
    assert "encrypted" in msg and "wrong" in msg
    healthy()


def test_encrypted_other_clients_need_their_own_password(server, healthy, files):
    owner = Mef3Client(server.address, client_id="owner")
    other = Mef3Client(server.address, client_id="other")
    try:
        info = owner.open_file(str(files["enc"]), password="pw-two")
        assert info["file_opened"], info["error_message"]
        t0, t1 = T0 + S, T0 + 4 * S
        r = owner.get_signal_range(str(files["enc"]), ["a"], t0, t1)
        ref = direct_read(files["enc"], ["a"], t0, t1, password="pw-two")
        assert np.array_equal(r["array"], ref, equal_nan=True)
        # no session, no password: no data through the owner's reader
        msg = read_error(other, files["enc"], ["a"], t0, t1)
        assert "encrypted" in msg
        assert "encrypted" in open_error(other, files["enc"])
        assert "encrypted" in open_error(other, files["enc"], password="nope")
        msg = read_error(other, files["enc"], ["a"], t0, t1)
        assert "encrypted" in msg
        # the level-1 password opens it too
        assert other.open_file(str(files["enc"]), password="pw-one")["file_opened"]
        r = other.get_signal_range(str(files["enc"]), ["a"], t0, t1)
        assert r["error_message"] == "" and np.array_equal(r["array"], ref, equal_nan=True)
    finally:
        owner.close_file(str(files["enc"]))
        other.close_file(str(files["enc"]))
        owner.shutdown()
        other.shutdown()
    healthy()


# ---------------------------------------------------------------- client ids


@pytest.mark.parametrize("cid", ["x" * 129, "", "y" * 5000])
def test_malformed_client_id(server, healthy, files, cid):
    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        md = (("x-mef3io-client-id", cid),)
        try:
            r = stub.OpenFile(pb2.OpenFileRequest(file_path=str(files["good"])), metadata=md)
        except (ValueError, grpc.RpcError):
            pytest.skip("gRPC itself refuses to send that metadata value")
        assert not r.file_opened and "x-mef3io-client-id" in r.error_message
        chunks = list(stub.GetSignalRange(pb2.SignalRangeRequest(
            file_path=str(files["good"]), channel_names=["a"], start_uutc=T0,
            end_uutc=T0 + S), metadata=md))
        assert len(chunks) == 1 and "x-mef3io-client-id" in chunks[0].error_message
    healthy()


def test_every_error_keeps_grpc_status_ok(server, files):
    """Errors travel in error_message; the call itself succeeds (status OK)."""
    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        r, call = stub.OpenFile.with_call(pb2.OpenFileRequest(file_path="/no/such.mefd"))
        assert call.code() == grpc.StatusCode.OK and r.error_message
        stream = stub.GetSignalRange(pb2.SignalRangeRequest(file_path="/no/such.mefd",
                                                            start_uutc=T0, end_uutc=T0 + S))
        msgs = list(stream)
        assert stream.code() == grpc.StatusCode.OK and len(msgs) == 1 and msgs[0].error_message
