"""The package as pip builds it, and the environment the README's first command makes."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT


def test_building_the_package_prints_no_setuptools_warning(tmp_path):
    """``project.license`` as a TOML table printed a deprecation banner on every build."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mef3io_server", src / "mef3io_server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--wheel-dir", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    if done.returncode != 0 and re.search(r"Could not find a version|connection|resolve",
                                          out, re.I):
        pytest.skip(f"pip cannot reach the package index to get setuptools: {out[-300:]}")
    assert done.returncode == 0, out[-3000:]
    assert list((tmp_path / "dist").glob("mef3io_server-*.whl"))
    backend = [line for line in out.splitlines()
               if re.search(r"Warning|deprecat|!!", line) and "Location 'file:" not in line]
    assert backend == [], "\n".join(backend)
    # The web viewer's page is in the wheel (pip install alone gives a working viewer).
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("mef3io_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("index.html", "viewer.js", "viewer.css"):
        assert f"mef3io_server/server/viewer/{asset}" in names, sorted(names)


def test_the_demo_environment_has_what_the_docs_then_run():
    """``serve-demo.sh`` installs the extra ``mef3io-server plot`` needs (matplotlib)."""
    script = (ROOT / "scripts" / "serve-demo.sh").read_text()
    m = re.search(r"^ensure_venv (\w+)", script, re.M)
    assert m, "serve-demo.sh installs no extra"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras[m.group(1)]), extras[m.group(1)]
