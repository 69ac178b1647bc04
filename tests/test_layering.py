"""The core never imports grpc or protobuf: only the service layer translates messages."""
import subprocess
import sys

import pytest

CORE = ["engine", "sessions", "recordings", "tile_grid", "tile_store", "tile_cache", "decode",
        "reduction", "annotations", "segments", "discovery", "paths", "config", "errors", "memory",
        "montage", "filtering", "derived_reads", "mixed_rates"]

PROBE = """
import importlib, sys
importlib.import_module("mef3io_server.server." + sys.argv[1])
bad = sorted(m for m in sys.modules if m == "grpc" or m.startswith(("grpc.", "google.protobuf")))
print(",".join(bad))
"""


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_grpc_or_protobuf(module, tmp_path):
    probe = tmp_path / "probe.py"     # a file, not -c: mef3io's warnings need a real __main__
    probe.write_text(PROBE)
    out = subprocess.run([sys.executable, str(probe), module], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"mef3io_server.server.{module} pulls in {out}"
