"""Regenerate the checked-in protobuf and gRPC modules from the .proto.

Run from anywhere: ``python scripts/generate_protos.py``. The output lands in
``mef3io_server/protobufs/`` next to ``gRPCMef3Server.proto``.
``python scripts/generate_protos.py --check`` regenerates into a temporary
folder and exits 1 when the checked-in files differ (the test suite runs it).
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("mef3io_server/protobufs/gRPCMef3Server.proto")
OUTPUTS = ("gRPCMef3Server_pb2.py", "gRPCMef3Server_pb2.pyi", "gRPCMef3Server_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    """Run protoc (from grpcio-tools) with the repo root as the include path."""
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the checked-in code is stale")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        produced = Path(tmp) / PROTO.parent
        stale = [name for name in OUTPUTS
                 if not (ROOT / PROTO.parent / name).exists()
                 or not filecmp.cmp(produced / name, ROOT / PROTO.parent / name, shallow=False)]
        if ns.check:
            if stale:
                print("stale generated protobuf code: " + ", ".join(stale)
                      + " (run python scripts/generate_protos.py)", file=sys.stderr)
                return 1
            print("generated protobuf code is up to date")
            return 0
        for name in OUTPUTS:
            shutil.copyfile(produced / name, ROOT / PROTO.parent / name)
        print("wrote " + ", ".join(str(PROTO.parent / n) for n in OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
