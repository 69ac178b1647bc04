"""envelope_codec writes exactly the protobuf runtime's bytes and reads any ChannelEnvelope."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mef3io_server import envelope_codec as ec
from mef3io_server.protobuf_encoding import varint_bytes
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2

int64s = hnp.arrays(np.int64, st.integers(0, 60), elements=st.one_of(
    st.integers(-2**63, 2**63 - 1), st.integers(1_500_000_000_000_000, 1_800_000_000_000_000),
    st.integers(0, 300)))
texts = st.text(max_size=20)


def pb_message(path, name, s, e, lo, hi, err=None):
    m = pb2.ChannelEnvelope(file_path=path, channel_name=name, start_uutc=s.tolist(),
                            end_uutc=e.tolist(), min=lo.tolist(), max=hi.tolist())
    if err is not None:
        m.error_message = err
    return m


@settings(max_examples=60, deadline=None)
@given(texts, texts, int64s, st.data())
def test_encode_is_byte_identical_to_protobuf_and_decodes_back(path, name, s, data):
    n = s.size
    floats = hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True, allow_infinity=True))
    lo, hi = data.draw(floats), data.draw(floats)
    e = s[::-1].copy()
    err = data.draw(st.one_of(st.none(), texts.filter(bool)))
    raw = ec.encode(path, name, s, e, lo, hi, err or "")
    assert raw == pb_message(path, name, s, e, lo, hi, err).SerializeToString()
    got = ec.decode(raw)
    assert got["file_path"] == path and got["channel_name"] == name
    assert got["error_message"] == (err or "")
    assert np.array_equal(got["start_uutc"], s) and np.array_equal(got["end_uutc"], e)
    assert np.array_equal(got["min"].view(np.int64), lo.view(np.int64))   # NaN bits too
    assert np.array_equal(got["max"].view(np.int64), hi.view(np.int64))


def test_decode_reads_unpacked_fields_from_other_writers():
    # Hand-built: start_uutc = 3 as two unpacked varints, min = 5 as one unpacked double.
    raw = (b"\x12\x01a" + b"\x18" + varint_bytes(7) + b"\x18" + varint_bytes(2**40)
           + b"\x29" + np.array([1.5]).tobytes() + b"\x38\x05")   # + unknown field 7
    got = ec.decode(raw)
    assert got["channel_name"] == "a"
    assert got["start_uutc"].tolist() == [7, 2**40] and got["min"].tolist() == [1.5]
    assert got["end_uutc"].size == 0 and got["max"].size == 0


def test_truncated_input_is_an_error():
    raw = ec.encode("p", "c", np.array([1_600_000_000_000_000]), (), (), ())
    try:
        ec.decode(raw[:-1])
    except ValueError as e:
        assert "truncated" in str(e)
    else:
        raise AssertionError("a truncated message decoded")


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.int64, st.integers(1, 80),
                  elements=st.integers(2**49, 2**56 - 1)), st.integers(0, 2**49 - 1))
def test_eight_byte_varints_fast_path_is_exact(s, small):
    """Times of this era are 8-byte varints; they take a word-at-a-time path both ways.
    Bytes equal protobuf's; decoding equals protobuf's parse; a shorter value among
    them (another length) falls back to the general path."""
    raw = ec.encode("p", "c", s, s, s.astype(float), s.astype(float))
    assert raw == pb_message("p", "c", s, s, s.astype(float), s.astype(float)).SerializeToString()
    assert np.array_equal(ec.decode(raw)["start_uutc"], s)
    assert np.array_equal(ec.decode_varints(ec.encode_varints(s)), s)
    mixed = np.concatenate([s, [small]])
    assert np.array_equal(ec.decode_varints(ec.encode_varints(mixed)), mixed)
    assert list(pb2.ChannelEnvelope.FromString(
        ec.encode("p", "c", mixed, mixed, mixed.astype(float), mixed.astype(float))).start_uutc) \
        == mixed.tolist()
