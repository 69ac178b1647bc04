"""Hostile input against a live server (issue 6, part 6), with hypothesis.

Every RPC's fields are fuzzed: huge, negative and int64-limit times, n_points
0/1/2/2^62, NaN/inf/absurd cache_fs, many and huge channel names, 10 MB
strings, non-UTF-8 paths (raw bytes through an identity serializer), malformed
client ids. Each call must be answered within its deadline, either with an
error (``error_message``, a gRPC status the transport owns:
RESOURCE_EXHAUSTED for messages over the 4 MB receive limit, or
INVALID_ARGUMENT for a request protobuf cannot parse, answered by the call
observer and naming the RPC) or with correct data (compared with mef3io
where it is small enough to check). After each test the server still serves
an exact read.
"""
from __future__ import annotations

import os
import re

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import T0, direct_read, launch_server, random_walk, write_session
from mef3io_server import messages
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

pytestmark = pytest.mark.slow

FS = 256.0
SEC = 1_000_000
I64 = 2**63 - 1
CALL_TIMEOUT = 30.0          # "answered within a bounded time"
TRANSPORT_CODES = {grpc.StatusCode.RESOURCE_EXHAUSTED}
CID = "fuzzer"
# FUZZ_EXAMPLES=1000 FUZZ_RANDOM=1 for the long form (CI: 60, derandomized).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = write_session(tmp_path_factory.mktemp("fuzz") / "fz.mefd",
                         {"a": random_walk(int(60 * FS), 1), "b": random_walk(int(60 * FS), 2)})
    server = launch_server({"TILE_CACHE_MB": 64, "MAX_READ_MB": 256})
    channel = grpc.insecure_channel(server.address, options=messages.CHANNEL_OPTIONS)
    stub = pb2_grpc.gRPCMef3ServerStub(channel)
    resp = stub.OpenFile(messages.open_file_request(str(path)),
                         metadata=((messages.CLIENT_ID_KEY, CID),),
                         timeout=CALL_TIMEOUT)
    assert resp.error_message == ""
    yield server, channel, stub, path
    channel.close()
    assert server.proc.poll() is None, "the server died during fuzzing"
    server.stop()


def still_serving(live) -> None:
    server, _, stub, path = live
    assert server.proc.poll() is None
    md = ((messages.CLIENT_ID_KEY, CID),)
    stub.OpenFile(messages.open_file_request(str(path)), metadata=md, timeout=CALL_TIMEOUT)
    asm = messages.SignalAssembler()
    for chunk in stub.GetSignalRange(messages.signal_request(str(path), ["a", "b"], T0 + SEC,
                                                         T0 + 3 * SEC),
                                     metadata=md, timeout=CALL_TIMEOUT):
        asm.feed(chunk)
    res = asm.result()
    assert res["error_message"] == ""
    assert np.array_equal(res["array"], direct_read(path, ["a", "b"], T0 + SEC, T0 + 3 * SEC))


def answered(fn):
    """Run one call; a gRPC status is fine only when the transport owns it."""
    try:
        return fn()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.INTERNAL and e.details() == "Invalid metadata":
            return None     # the client library refused to SEND it (e.g. a non-ASCII id)
        assert e.code() in TRANSPORT_CODES, (e.code(), e.details())
        return None


# ---------------------------------------------------------------- strategies

times = st.one_of(
    st.integers(-2**63, I64),
    st.sampled_from([0, -1, 1, I64, -2**63, I64 - 1, -2**63 + 1, T0, T0 + 60 * SEC]),
    st.integers(T0 - 100 * SEC, T0 + 200 * SEC),
    st.integers(I64 - 10 * SEC, I64),
    st.integers(-2**63, -2**63 + 10 * SEC),
)
n_points = st.one_of(st.none(), st.sampled_from([0, 1, 2, 3, 2**62, I64, -1, -2**63]),
                     st.integers(-10, 5000), st.integers(-2**63, I64))
names = st.one_of(st.sampled_from(["a", "b", "", " a", "A", "a\x00", "ä", "../a"]),
                  st.text(max_size=40))
channel_lists = st.one_of(
    st.lists(names, max_size=6),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=5000),
    st.builds(lambda n: [f"ch{i:010d}" for i in range(n)], st.sampled_from([4097, 150_000])),
)
BIG = "x" * (10 * 2**20)
paths = st.one_of(st.just("GOOD"), st.sampled_from(["", "/", "/nonexistent.mefd", ".mefd",
                                                    "/etc/passwd", "GOOD/../GOOD", "GOOD\x00x",
                                                    "~/x.mefd", "C:\\x.mefd", BIG[:5000]]),
                  st.text(max_size=200))
client_ids = st.one_of(st.none(), st.sampled_from(["", " ", "x" * 129, "x" * 128, "é", "a\tb",
                                                   "\x7f", CID]),
                       st.text(max_size=200))


def md_of(cid):
    return () if cid is None else ((messages.CLIENT_ID_KEY, cid),)


def resolve(path_choice, good):
    return str(good) if path_choice == "GOOD" else path_choice.replace("GOOD", str(good))


def stream(call_fn) -> list:
    """Every message of a stream (answered within CALL_TIMEOUT or failing)."""
    return answered(lambda: list(call_fn())) or []


# ---------------------------------------------------------------- tests

@FUZZ
@given(path=paths, chans=channel_lists, t0=times, t1=times, npts=n_points)
@example(path="GOOD", chans=["a"], t0=I64 - 10 * SEC, t1=I64, npts=None)
@example(path="GOOD", chans=["a"], t0=-2**63, t1=-2**63 + SEC, npts=None)
@example(path="GOOD", chans=["a", "b"], t0=-2**63, t1=I64, npts=None)
@example(path="GOOD", chans=["a", "b"], t0=-2**63, t1=I64, npts=1000)
@example(path="GOOD", chans=[], t0=T0 - SEC, t1=T0 + 61 * SEC, npts=2**62)
@example(path="GOOD", chans=["a"], t0=T0, t1=T0 + 60 * SEC, npts=1)
@example(path="GOOD", chans=["a"], t0=T0, t1=T0 + 60 * SEC, npts=2)
@example(path="GOOD", chans=["a"], t0=T0, t1=T0 + 60 * SEC, npts=0)
@example(path="GOOD", chans=["b"], t0=T0 + 59 * SEC, t1=T0 + 59 * SEC + 1, npts=None)
@example(path="GOOD", chans=["a"], t0=I64 - 1, t1=I64, npts=None)
@example(path="GOOD", chans=["a"] * 4096, t0=T0, t1=T0 + SEC, npts=None)
def test_get_signal_range(live, path, chans, t0, t1, npts):
    server, _, stub, good = live
    req = pb2.SignalRangeRequest(file_path=resolve(path, good), channel_names=chans,
                                 start_uutc=t0, end_uutc=t1)
    if npts is not None:
        req.n_points = npts
    msgs = stream(lambda: stub.GetSignalRange(req, metadata=md_of(CID), timeout=CALL_TIMEOUT))
    errors = [m.error_message for m in msgs if m.error_message]
    if errors or not msgs:
        assert len(errors) <= 1 and (not msgs or msgs[-1].error_message)
        return
    asm = messages.SignalAssembler()
    for m in msgs:
        asm.feed(m)
    arr = asm.result()["array"]
    assert arr is not None and arr.dtype == np.float32
    assert arr.shape[0] == (len(chans) if chans else 2)
    if npts is not None and npts >= 1:
        assert arr.shape[1] <= npts
    elif arr.size <= 10_000_000:
        ref = direct_read(good, chans or ["a", "b"], t0, t1)
        assert np.array_equal(arr, ref, equal_nan=True)


@FUZZ
@given(path=paths, cache_fs=st.one_of(st.none(), st.floats(), st.sampled_from(
    [0.0, -0.0, -1.0, 1e-300, 5e-324, 1e300, float("nan"), float("inf"), -float("inf"), 128.0,
     256.0, 256.0000001])), mixed=st.booleans(),
       password=st.one_of(st.none(), st.text(max_size=50), st.just("p" * 5000)),
       cid=client_ids)
def test_open_info_close(live, path, cache_fs, mixed, password, cid):
    server, _, stub, good = live
    fp = resolve(path, good)
    req = pb2.OpenFileRequest(file_path=fp, allow_mixed_rates=mixed)
    if cache_fs is not None:
        req.cache_fs = cache_fs
    if password is not None:
        req.password = password
    md = md_of(cid)
    resp = answered(lambda: stub.OpenFile(req, metadata=md, timeout=CALL_TIMEOUT))
    if resp is not None and resp.file_opened:
        assert resp.error_message == ""
        assert list(resp.channel_names) == ["a", "b"]
        if cache_fs is not None:
            assert np.isfinite(cache_fs) and cache_fs > 0
    elif resp is not None:
        assert resp.error_message
    info = answered(lambda: stub.FileInfo(pb2.FileInfoRequest(file_path=fp), metadata=md,
                                          timeout=CALL_TIMEOUT))
    assert info is None or info.error_message or info.channel_names
    if cid != CID:
        answered(lambda: stub.CloseFile(pb2.FileInfoRequest(file_path=fp), metadata=md,
                                        timeout=CALL_TIMEOUT))
    answered(lambda: stub.ListOpenFiles(pb2.ListOpenFilesRequest(), metadata=md,
                                        timeout=CALL_TIMEOUT))


@FUZZ
@given(path=paths, chans=channel_lists, t0=st.one_of(st.none(), times),
       t1=st.one_of(st.none(), times))
@example(path="GOOD", chans=["a"] * 5000, t0=None, t1=None)
@example(path="GOOD", chans=[], t0=-2**63, t1=I64)
@example(path="GOOD", chans=[], t0=I64, t1=None)
def test_get_envelope(live, path, chans, t0, t1):
    server, _, stub, good = live
    req = pb2.EnvelopeRequest(file_path=resolve(path, good), channel_names=chans)
    if t0 is not None:
        req.start_uutc = t0
    if t1 is not None:
        req.end_uutc = t1
    msgs = stream(lambda: stub.GetEnvelope(req, metadata=md_of(CID), timeout=CALL_TIMEOUT))
    for m in msgs:
        if m.error_message:
            assert m is msgs[-1]
        else:
            assert len(m.start_uutc) == len(m.end_uutc) == len(m.min) == len(m.max)


def raw_string_field(value: bytes, field: int = 1) -> bytes:
    """A protobuf length-delimited field holding arbitrary bytes (maybe not UTF-8)."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(field << 3 | 2) + varint(len(value)) + value


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300),
                     st.sampled_from([b"\xff\xfe.mefd", b"/tmp/\xc3\x28.mefd", b"\x80", b"\xed\xa0\x80"])))
def test_non_utf8_paths(live, raw):
    server, channel, stub, good = live
    md = md_of(CID)
    for method, resp_type, streaming in (
            ("OpenFile", pb2.FileInfoResponse, False), ("FileInfo", pb2.FileInfoResponse, False),
            ("CloseFile", pb2.FileInfoResponse, False),
            ("GetSignalRange", pb2.SignalChunk, True), ("GetEnvelope", pb2.ChannelEnvelope, True)):
        full = "/" + pb2.DESCRIPTOR.services_by_name["gRPCMef3Server"].full_name + "/" + method
        body = raw_string_field(raw)
        if method == "GetSignalRange":
            body += bytes([0x18, 0x01, 0x20, 0x02])       # start_uutc=1, end_uutc=2
        if streaming:
            call = channel.unary_stream(full, request_serializer=lambda b: b,
                                        response_deserializer=resp_type.FromString)
            try:
                list(call(body, metadata=md, timeout=CALL_TIMEOUT))
            except grpc.RpcError as e:
                # protobuf refuses invalid UTF-8 in a string field: answered as such.
                assert e.code() in TRANSPORT_CODES | {grpc.StatusCode.INVALID_ARGUMENT}, \
                    e.code()
                assert e.code() != grpc.StatusCode.INVALID_ARGUMENT \
                    or f"the {method} request could not be parsed" in e.details()
        else:
            call = channel.unary_unary(full, request_serializer=lambda b: b,
                                       response_deserializer=resp_type.FromString)
            try:
                resp = call(body, metadata=md, timeout=CALL_TIMEOUT)
                assert resp.error_message or method != "OpenFile" or resp.file_opened is False
            except grpc.RpcError as e:
                assert e.code() in TRANSPORT_CODES | {grpc.StatusCode.INVALID_ARGUMENT}, \
                    e.code()


def test_oversized_requests(live):
    """10 MB strings and millions of channel names: refused by size, the server lives."""
    server, _, stub, good = live
    md = md_of(CID)
    for req_fn in (
            lambda: stub.OpenFile(pb2.OpenFileRequest(file_path=BIG), metadata=md,
                                  timeout=CALL_TIMEOUT),
            lambda: list(stub.GetSignalRange(pb2.SignalRangeRequest(
                file_path=str(good), channel_names=["a"] * 2_000_000, start_uutc=T0,
                end_uutc=T0 + SEC), metadata=md, timeout=CALL_TIMEOUT)),
            lambda: list(stub.GetEnvelope(pb2.EnvelopeRequest(
                file_path=str(good), channel_names=[BIG]), metadata=md, timeout=CALL_TIMEOUT))):
        with pytest.raises(grpc.RpcError) as e:
            req_fn()
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under the 4 MB limit: answered with a clear error from our code.
    many = [f"c{i:07d}" for i in range(350_000)]      # ~3.5 MB of names
    msgs = list(stub.GetSignalRange(pb2.SignalRangeRequest(
        file_path=str(good), channel_names=many, start_uutc=T0, end_uutc=T0 + SEC),
        metadata=md, timeout=CALL_TIMEOUT))
    assert len(msgs) == 1 and "channels" in msgs[0].error_message
    msgs = list(stub.GetEnvelope(pb2.EnvelopeRequest(file_path=str(good), channel_names=many),
                                 metadata=md, timeout=CALL_TIMEOUT))
    assert len(msgs) == 1 and msgs[0].error_message
    # A million VALID names (3 MB): refused by MAX_CHANNELS_PER_READ, not served a million times.
    for call in (stub.GetEnvelope(pb2.EnvelopeRequest(file_path=str(good),
                                                      channel_names=["a"] * 1_000_000),
                                  metadata=md, timeout=CALL_TIMEOUT),
                 stub.GetSignalRange(pb2.SignalRangeRequest(
                     file_path=str(good), channel_names=["a"] * 1_000_000, start_uutc=T0,
                     end_uutc=T0 + SEC), metadata=md, timeout=CALL_TIMEOUT)):
        msgs = list(call)
        assert len(msgs) == 1 and "MAX_CHANNELS_PER_READ" in msgs[0].error_message
    still_serving(live)


def test_zz_still_serving_after_fuzzing(live):
    still_serving(live)
    # Every hostile call was refused by our checks, none by an unexpected exception.
    # (grpc's own log of requests protobuf could not parse is not ours.)
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d )", live[0].stderr_text())
    ours = [r for r in records if " ERROR mef3io_server" in r or "internal error" in r]
    assert ours == [], "\n".join(ours)[:6000]
