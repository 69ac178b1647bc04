"""Code written for the published mef3io-server 3.1.0 client keeps working with ours.

Its ``Mef3Client`` is read from the published source distribution (downloaded at
test time, never imported): every public method it has is ours too, called the
same way (parameters, positions, defaults), and answers at least the keys it
answered, here checked against a real server.
"""
from __future__ import annotations

import ast

import numpy as np

from conftest import T0, random_walk
from published_api import api_mismatches, published_class

from mef3io_server.client import Mef3Client

# On purpose: 3.1.0's client defaulted to port 50052 though its server listens on 50051;
# ours connects to $MEF3IO_ADDRESS or localhost:50051 (docs/client.md).
ALLOWED_DEFAULTS = {("__init__", "address")}


def _published(published_sdist):
    return published_class(published_sdist / "mef3io_server" / "client.py", "Mef3Client")


def test_every_published_method_is_called_the_same_way(published_sdist):
    published = _published(published_sdist)
    assert {"open_file", "get_signal_range", "get_envelope", "shutdown"} <= set(published)
    assert api_mismatches(published, Mef3Client, ALLOWED_DEFAULTS) == []
    tree = ast.parse((published_sdist / "mef3io_server" / "client.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Mef3Client")
    for node in cls.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            name = node.targets[0].id
            assert getattr(Mef3Client, name) == node.value.value, name


def test_every_answer_has_the_published_keys(published_sdist, shared_server, tmp_path):
    from conftest import write_session

    published = _published(published_sdist)
    path = str(write_session(tmp_path / "p.mefd", {"a": random_walk(2560), "b": random_walk(2560)}))
    with Mef3Client(shared_server.address) as c:
        answers = {
            "open_file": c.open_file(path),
            "get_file_info": c.get_file_info(path),
            "get_signal_range": c.get_signal_range(path, None, T0, T0 + 1_000_000),
        }
        failed = c.get_signal_range(path, ["nope"], T0, T0 + 1_000_000)
        env = c.get_envelope(path)
        assert c.list_open_files() and all(isinstance(p, str) for p in c.list_open_files())
        answers["close_file"] = c.close_file(path)
    for name, answer in answers.items():
        missing = published[name].returned_keys - set(answer)
        assert not missing, f"{name} lacks {missing}"
    assert published["get_signal_range"].returned_keys <= set(failed)
    assert failed["array"] is None and failed["shape"] is None and failed["error_message"]
    assert isinstance(answers["get_signal_range"]["array"], np.ndarray)
    assert set(env) == {"a", "b"} and set(env["a"]) == {"start_uutc", "end_uutc", "min", "max"}
