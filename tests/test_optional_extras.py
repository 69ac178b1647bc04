"""The optional extras (``[mne]``, ``[xarray]``) fail clearly when missing: the
adapter module imports, and calling it says which extra to install."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """import sys
sys.modules[{missing!r}] = None          # as if the package were not installed
from {module} import {func}
try:
    {func}("localhost:1", "/x.mefd")
except ImportError as e:
    print(e)
"""


@pytest.mark.parametrize("module,func,missing,extra", [
    ("mef3io_server.mne", "read_raw", "mne", "mef3io-server[mne]"),
    ("mef3io_server.xarray", "read_dataarray", "xarray", "mef3io-server[xarray]"),
])
def test_missing_extra_is_a_clear_error(module, func, missing, extra, tmp_path):
    script = tmp_path / "probe.py"       # a file: mef3io's warnings need a real __main__
    script.write_text(PROBE.format(missing=missing, module=module, func=func))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert extra in out.stdout, out.stderr
