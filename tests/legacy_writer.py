"""Sessions written by the legacy stack (mef_tools' MefWriter over pymef), for the tests
that compare this project's adapters with MNE's and mef_tools' own readers.

mef_tools and pymef are installed only in the tests' environment (the ``dev``
extra), as oracles; a test using this skips when they are missing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_legacy_session(path: Path, channels: dict, start_uutc: int, fs: float, *,
                         password1: str = None, password2: str = None,
                         precision: int = 3, block_len: int = None) -> Path:
    """Write ``channels`` (name -> 1-D array, NaN runs become discontinuities) with
    ``mef_tools.io.MefWriter`` at ``path`` (a fresh ``.mefd``), as a lab's
    acquisition scripts do."""
    io = pytest.importorskip("mef_tools.io", reason="mef_tools (the legacy writer) is a "
                             "test-only dependency: pip install -e '.[dev]'")
    w = io.MefWriter(str(path), overwrite=True, password1=password1, password2=password2)
    w.mef_block_len = int(block_len or fs)
    for name, data in channels.items():
        w.write_data(np.asarray(data, dtype=float), name, start_uutc, fs, precision=precision)
    w.session.close()
    return Path(path)
