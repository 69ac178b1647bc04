"""protobuf_encoding: varints and field keys as the protobuf runtime writes them."""
from __future__ import annotations

import pytest

from mef3io_server.protobuf_encoding import LEN, VARINT, field_key, read_varint, varint_bytes
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -2**63])
def test_varints_are_the_runtimes_and_read_back(value):
    # SignalRangeRequest.start_uutc is int64, field 3: the runtime writes key + varint
    # (and nothing for 0, proto3's default).
    wire = pb2.SignalRangeRequest(start_uutc=value).SerializeToString()
    assert wire == (field_key(3, VARINT) + varint_bytes(value) if value else b"")
    assert varint_bytes(0) == b"\x00"
    got, end = read_varint(memoryview(varint_bytes(value)), 0)
    assert end == len(varint_bytes(value)) and got == value % 2**64


def test_length_delimited_key_and_bad_varints():
    assert pb2.SignalRangeRequest(file_path="ab").SerializeToString() == \
        field_key(1, LEN) + varint_bytes(2) + b"ab"
    with pytest.raises(ValueError, match="truncated"):
        read_varint(memoryview(b"\x80\x80"), 0)
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        read_varint(memoryview(b"\xff" * 11), 0)
