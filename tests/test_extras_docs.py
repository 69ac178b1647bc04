"""The examples of the annotations, segments, discovery, asyncio, MNE, xarray and
coming-from pages run as written."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT

PAGES = ["annotations.md", "segments.md", "discovery.md", "aio.md", "mne.md", "xarray.md",
         "coming-from.md"]


@pytest.mark.parametrize("page", PAGES)
def test_example_runs(page, tmp_path):
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"{page} has no python example"
    script = tmp_path / "example.py"     # from a file: mef3io's warnings need a real module
    script.write_text(blocks[0])
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
