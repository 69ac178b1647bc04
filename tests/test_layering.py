"""Layers: the core never imports grpc, protobuf or an HTTP framework, and calls go downward.

The core is every module of ``mef3io_server.server`` (found by walking the
package) except the front ends listed in FRONT_END, which translate between
the network and core calls.
"""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mef3io_server.server as server_pkg

#: Modules that speak to the network (gRPC, HTTP) or run the process: they may
#: import grpc and protobuf; nothing in the core may import them.
FRONT_END = {"__main__", "app", "service", "calls", "auth", "admission", "method_handlers",
             "workers", "tls", "logs", "metrics", "http_app", "http_server"}

#: The read path, top-down: a module may import only modules ranked below it.
READ_PATH = ["engine", "points", "reads", "changes", "versions", "sessions", "tile_store",
             "prefetch", "window_share", "assembly", "tile_fetch", "decode_plan", "inflight",
             "tile_cache", "recordings", "tile_grid"]

NETWORK = ("grpc", "google.protobuf", "aiohttp", "starlette", "fastapi", "uvicorn", "tornado",
           "flask", "http.server")

PKG_DIR = Path(server_pkg.__file__).parent


def server_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(PKG_DIR)]))


CORE = [m for m in server_modules() if m not in FRONT_END]


def _files(module: str) -> list[Path]:
    """The source files of a module, or of every module of a subpackage."""
    pkg = PKG_DIR / module
    return sorted(pkg.rglob("*.py")) if pkg.is_dir() else [PKG_DIR / f"{module}.py"]


def local_imports(module: str) -> set[str]:
    """Modules (or subpackages) of ``mef3io_server.server`` that ``module`` imports
    (statically, anywhere in it), other than itself."""
    names = set(server_modules())
    out = set()
    for path in _files(module):
        # the file's package, as a list: ["mef3io_server", "server", ...]
        package = list(path.relative_to(PKG_DIR.parent.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    if node.module:
                        targets.append(base + node.module.split("."))
                    else:
                        targets.extend(base + [a.name] for a in node.names)
                elif node.module:
                    targets.append(node.module.split("."))
            elif isinstance(node, ast.Import):
                targets.extend(a.name.split(".") for a in node.names)
            for t in targets:
                if t[:2] == ["mef3io_server", "server"] and len(t) > 2:
                    out.add(t[2])
    return (out & names) - {module}


PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module("mef3io_server.server." + name)
prefixes = tuple(p + "." for p in {network!r})
bad = sorted(m for m in sys.modules if m in {network!r} or m.startswith(prefixes))
print(",".join(bad))
"""


def _probe(tmp_path, modules) -> str:
    probe = tmp_path / "probe.py"     # a file, not -c: mef3io's warnings need a real __main__
    probe.write_text(PROBE.format(network=NETWORK))
    return subprocess.run([sys.executable, str(probe), *modules], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_package_walk_finds_the_core_and_the_front_ends():
    found = set(server_modules())
    assert FRONT_END <= found, f"FRONT_END names modules that do not exist: {FRONT_END - found}"
    assert {"engine", "tile_store", "tile_cache", "decode_plan", "inflight"} <= set(CORE)
    assert set(READ_PATH) <= set(CORE)


def test_core_imports_no_network_framework(tmp_path):
    bad = _probe(tmp_path, CORE)
    if bad:     # name the culprit
        culprits = [m for m in CORE if _probe(tmp_path, [m])]
        pytest.fail(f"core modules {culprits} pull in {bad}")


@pytest.mark.parametrize("module", CORE)
def test_core_never_imports_a_front_end(module):
    up = local_imports(module) & FRONT_END
    assert not up, f"mef3io_server.server.{module} imports front-end modules {sorted(up)}"


@pytest.mark.parametrize("module", READ_PATH)
def test_the_read_path_only_calls_downward(module):
    rank = {m: i for i, m in enumerate(READ_PATH)}
    up = sorted(m for m in local_imports(module) if rank.get(m, len(READ_PATH)) <= rank[module]
                and m in rank)
    assert not up, f"{module} imports {up}, which are not below it on the read path"


def test_no_import_cycles_in_the_server_package():
    graph = {m: local_imports(m) for m in server_modules()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(" -> ".join(stack + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
