"""The published mef3io-server 3.1.0's own TileCache tests, run unchanged against ours.

``mef3io_server.server.tile_cache.TileCache`` is a public name of the published
release: a drop-in replacement passes its public-API tests (shipped in its
source distribution, downloaded at test time) and offers every public method
it has, with the same parameters.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np

from published_api import api_mismatches, published_class, published_constants

from mef3io_server.server import tile_cache


def test_the_published_tile_cache_tests_pass_unchanged(published_sdist, tmp_path):
    test_file = tmp_path / "test_tile_cache.py"
    test_file.write_bytes((published_sdist / "tests" / "test_tile_cache.py").read_bytes())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(test_file)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    m = re.search(r"(\d+) passed", done.stdout)
    assert m and int(m.group(1)) >= 12 and "failed" not in done.stdout, done.stdout[-2000:]


def test_tile_cache_offers_the_published_public_surface(published_sdist):
    source = published_sdist / "mef3io_server" / "server" / "tile_cache.py"
    published = published_class(source, "TileCache")
    assert {"get", "put", "contains", "__contains__", "evict_expired"} <= set(published)
    assert api_mismatches(published, tile_cache.TileCache) == []
    for name, expr in published_constants(source).items():
        assert hasattr(tile_cache, name), f"{name} is missing"
        if expr.startswith("np."):
            assert getattr(tile_cache, name) is getattr(np, expr[3:]), (name, expr)
