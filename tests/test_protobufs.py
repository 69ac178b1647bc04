"""The generated protobuf code is fresh, and the published messages match PROTOCOL.md."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor as FD

from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2

ROOT = Path(__file__).resolve().parent.parent

S, B, BY = FD.TYPE_STRING, FD.TYPE_BOOL, FD.TYPE_BYTES
D, F, I64 = FD.TYPE_DOUBLE, FD.TYPE_FLOAT, FD.TYPE_INT64
ONE, OPT, REP = "singular", "optional", "repeated"

#: PROTOCOL.md, "Messages": name -> number, type, label. Fixed facts.
PUBLISHED = {
    "OpenFileRequest": {"file_path": (1, S, ONE), "cache_fs": (2, D, OPT),
                        "allow_mixed_rates": (3, B, OPT)},
    "FileInfoRequest": {"file_path": (1, S, ONE)},
    "FileInfoResponse": {
        "file_path": (1, S, ONE), "file_opened": (2, B, ONE),
        "number_of_channels": (3, I64, OPT), "channel_names": (4, S, REP),
        "channel_sampling_rates": (5, F, REP), "start_uutc": (6, I64, OPT),
        "end_uutc": (7, I64, OPT), "duration_s": (8, D, OPT),
        "channel_start_uutc": (9, I64, REP), "channel_end_uutc": (10, I64, REP),
        "channel_served_sampling_rates": (11, D, REP), "cache_fs": (12, D, OPT),
        "error_message": (99, S, OPT)},
    "SignalRangeRequest": {"file_path": (1, S, ONE), "channel_names": (2, S, REP),
                           "start_uutc": (3, I64, ONE), "end_uutc": (4, I64, ONE),
                           "n_points": (5, I64, OPT)},
    "SignalChunk": {"file_path": (1, S, ONE), "array_bytes": (2, BY, ONE), "dtype": (3, S, ONE),
                    "shape": (4, I64, REP), "start_uutc": (5, I64, ONE),
                    "end_uutc": (6, I64, ONE), "fs": (7, D, ONE), "channel_names": (8, S, REP),
                    "error_message": (99, S, OPT)},
    "ListOpenFilesRequest": {},
    "ListOpenFilesResponse": {"file_paths": (1, S, REP), "error_message": (99, S, OPT)},
    "EnvelopeRequest": {"file_path": (1, S, ONE), "channel_names": (2, S, REP),
                        "start_uutc": (3, I64, OPT), "end_uutc": (4, I64, OPT)},
    "ChannelEnvelope": {"file_path": (1, S, ONE), "channel_name": (2, S, ONE),
                        "start_uutc": (3, I64, REP), "end_uutc": (4, I64, REP),
                        "min": (5, D, REP), "max": (6, D, REP), "error_message": (99, S, OPT)},
}

RPCS = {
    "OpenFile": ("OpenFileRequest", "FileInfoResponse", False),
    "CloseFile": ("FileInfoRequest", "FileInfoResponse", False),
    "FileInfo": ("FileInfoRequest", "FileInfoResponse", False),
    "GetSignalRange": ("SignalRangeRequest", "SignalChunk", True),
    "ListOpenFiles": ("ListOpenFilesRequest", "ListOpenFilesResponse", False),
    "GetEnvelope": ("EnvelopeRequest", "ChannelEnvelope", True),
}


def label_of(field) -> str:
    rep = getattr(field, "is_repeated", None)
    rep = rep() if callable(rep) else (field.label == FD.LABEL_REPEATED if rep is None else rep)
    if rep:
        return REP
    return OPT if field.has_presence and field.containing_oneof is not None else ONE


def test_generated_code_is_not_stale():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--check"],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_package_line():
    assert pb2.DESCRIPTOR.package == ""
    proto = (ROOT / "mef3io_server" / "protobufs" / "gRPCMef3Server.proto").read_text()
    assert 'syntax = "proto3";' in proto


@pytest.mark.parametrize("message", sorted(PUBLISHED))
def test_published_fields(message):
    desc = pb2.DESCRIPTOR.message_types_by_name[message]
    by_name = desc.fields_by_name
    for name, (number, ftype, label) in PUBLISHED[message].items():
        assert name in by_name, f"{message}.{name} missing"
        f = by_name[name]
        assert f.number == number, f"{message}.{name} number"
        assert f.type == ftype, f"{message}.{name} type"
        assert label_of(f) == label, f"{message}.{name} label"
    # Everything else is an addition, numbered 20 and up.
    extra = [f for f in desc.fields if f.name not in PUBLISHED[message]]
    assert all(f.number >= 20 for f in extra), [(f.name, f.number) for f in extra]


def test_service_rpcs():
    svc = pb2.DESCRIPTOR.services_by_name["gRPCMef3Server"]
    assert svc.full_name == "gRPCMef3Server"
    for name, (req, resp, stream) in RPCS.items():
        m = svc.methods_by_name[name]
        assert m.input_type.name == req and m.output_type.name == resp
        assert m.server_streaming == stream and not m.client_streaming


def test_password_addition():
    f = pb2.DESCRIPTOR.message_types_by_name["OpenFileRequest"].fields_by_name["password"]
    assert (f.number, f.type, label_of(f)) == (20, S, OPT)
