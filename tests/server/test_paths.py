"""DATA_ROOTS and HOST_ROOT, end to end: inside, outside, symlinks, "..", unset."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server.server.paths import PathResolver

OUTSIDE = "is outside the served roots"


@pytest.fixture
def layout(tmp_path):
    """served/a.mefd, outside/b.mefd, and symlinks across the boundary both ways."""
    served, outside = tmp_path / "served", tmp_path / "outside"
    served.mkdir()
    outside.mkdir()
    a = write_session(served / "a.mefd", {"c1": random_walk(2560)})
    b = write_session(outside / "b.mefd", {"c1": random_walk(2560, 1)})
    os.symlink(b, served / "escape.mefd")           # inside by name, outside in fact
    os.symlink(a, outside / "alias.mefd")           # outside by name, inside in fact
    os.symlink(outside, served / "subdir_link")     # a folder link out of the root
    return tmp_path, served, outside, a, b


def _opened(client, path):
    info = client.open_file(str(path))
    return info["file_opened"], info.get("error_message") or ""


def test_data_roots_end_to_end(layout, start_server, client_factory):
    tmp, served, outside, a, b = layout
    h = start_server(DATA_ROOTS=str(served))
    c = client_factory(h.address)

    ok, err = _opened(c, a)
    assert ok, err
    res = c.get_signal_range(str(a), ["c1"], T0, T0 + 5_000_000)
    assert np.array_equal(res["array"], direct_read(a, ["c1"], T0, T0 + 5_000_000),
                          equal_nan=True)

    refused = {
        "outside": b,
        "symlink out of the root": served / "escape.mefd",
        "folder symlink out": served / "subdir_link" / "b.mefd",
        "dot-dot": f"{served}/../outside/b.mefd",
        "dot-dot deep": f"{served}/x/../../outside/b.mefd",
        "missing outside": tmp / "nothing_here" / "ghost.mefd",
        "root itself": "/",
    }
    messages = {}
    for what, path in refused.items():
        ok, err = _opened(c, path)
        assert not ok, what
        assert OUTSIDE in err, (what, err)
        messages[what] = err.replace(str(path), "<path>")
    # A refusal says the same whether or not something exists there.
    assert messages["outside"] == messages["missing outside"]

    # Outside by name but inside once resolved: served (the check is on the real path).
    ok, err = _opened(c, outside / "alias.mefd")
    assert ok, err
    ok, err = _opened(c, f"{served}/../served/a.mefd")
    assert ok, err
    # Reads of refused paths are refused too (not "not open").
    res = c.get_signal_range(str(b), ["c1"], T0, T0 + 1_000_000)
    assert res["array"] is None and OUTSIDE in res["error_message"]
    assert "DATA_ROOTS is not set" not in h.stderr_text()


def test_unset_data_roots_warns_and_serves_any_path(layout, start_server, client_factory):
    _, _, _, a, b = layout
    h = start_server()
    c = client_factory(h.address)
    assert _opened(c, b)[0] and _opened(c, a)[0]
    assert "DATA_ROOTS is not set: any readable path on this machine is served" \
        in h.stderr_text()


def test_host_root_end_to_end(tmp_path, start_server, client_factory):
    host = tmp_path / "host_root"
    (host / "srv" / "rec").mkdir(parents=True)
    a = write_session(host / "srv" / "rec" / "a.mefd", {"c1": random_walk(2560)})
    secret = write_session(tmp_path / "secret.mefd", {"c1": random_walk(2560, 2)})
    h = start_server(HOST_ROOT=str(host), DATA_ROOTS=str(host / "srv"))
    c = client_factory(h.address)
    ok, err = _opened(c, "/srv/rec/a.mefd")     # the path as the host names it
    assert ok, err
    res = c.get_signal_range("/srv/rec/a.mefd", ["c1"], T0, T0 + 2_000_000)
    assert np.array_equal(res["array"], direct_read(a, ["c1"], T0, T0 + 2_000_000),
                          equal_nan=True)
    # ".." cannot climb out of HOST_ROOT by name: it lands inside it, outside DATA_ROOTS.
    climb = "/../" * 8 + str(secret).lstrip("/")
    ok, err = _opened(c, climb)
    assert not ok and OUTSIDE in err
    # The unprefixed absolute path of the host file is looked up under HOST_ROOT.
    ok, err = _opened(c, str(a))
    assert not ok


def test_resolver_rules(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    r = PathResolver("", [str(root)])
    assert r.within_roots(str(root)) and r.within_roots(str(root / "x"))
    assert not r.within_roots(str(tmp_path / "r2"))      # a sibling sharing the prefix
    hr = PathResolver("/host_root")
    assert hr.local("../etc/x") == "/host_root/etc/x"
    assert hr.local("/a/../../b.mefd") == "/host_root/b.mefd"
    assert hr.local("//srv//a.mefd/") == "/host_root/srv/a.mefd"
    assert PathResolver("").local("/a/./b/../c.mefd") == "/a/c.mefd"
