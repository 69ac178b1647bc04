"""Shared fixtures: real MEF recordings written by mef3io.Writer, and real servers.

* ``write_recording(name, channels={...}, ...)`` writes a session at its final
  path under the test's tmp dir (a session's name is inside its files).
* ``start_server(**env)`` starts ``python -m mef3io_server.server`` as a
  subprocess on a free port and returns a handle with ``address``; every
  server is stopped (SIGTERM, then waited on) at the end of the test.
* ``golden`` is ``../shared/golden`` (the legacy-written sessions) or skips.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Servers the tests start (here, in the cluster, the CLI, the soak) load SciPy's filters
# on the first filter, not at start: ~200 starts x 1.2 s. A test that asks for
# PRELOAD_FILTERS=true checks the default (test_montage_filtering).
os.environ.setdefault("PRELOAD_FILTERS", "false")
GOLDEN = Path(os.environ.get("MEF3IO_GOLDEN_DIR") or ROOT.parent / "shared" / "golden")
T0 = 1_600_000_000_000_000   # 2020-09-13, a round uUTC


def write_session(path: Path, channels: dict, *, start_uutc: int = T0, fs: float = 256.0,
                  password1: str = "", password2: str = "", block_length=None,
                  precision=2) -> Path:
    """Write a MEF session at ``path`` (must end in .mefd).

    ``channels``: name -> 1-D array (NaN = gap), or -> (array, fs), or ->
    (array, fs, start_uutc), or -> list of such tuples written as segments.
    """
    import mef3io

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, password1=password1,
                           password2=password2, block_length=block_length, units="uV") as w:
            for name, spec in channels.items():
                parts = spec if isinstance(spec, list) else [spec]
                for i, part in enumerate(parts):
                    if not isinstance(part, tuple):
                        part = (part,)
                    data = np.asarray(part[0], dtype=float)
                    cfs = part[1] if len(part) > 1 else fs
                    cst = part[2] if len(part) > 2 else start_uutc
                    w.write(name, data, cst, fs=cfs, precision=precision, new_segment=i > 0)
    return path


def random_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal(n)) * 3.0


def direct_read(path, channels, t0, t1, password: str = "") -> np.ndarray:
    """What mef3io itself returns for the window: the reference for every comparison."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path), password=password, warn_declarations=False)
        try:
            names = list(channels) if channels else r.channels
            return r.read(names, int(t0), int(t1), dtype="float32")
        finally:
            r.close()



def block_envelope_of(path, channel, password: str = "") -> dict:
    """A channel's whole block index as mef3io reads it (``block_envelope``): the reference
    for the server's block-index answers."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path), password=password, warn_declarations=False)
        try:
            return r.block_envelope(channel)
        finally:
            r.close()

@pytest.fixture
def write_recording(tmp_path):
    def make(name: str, channels: dict, **kw) -> Path:
        return write_session(tmp_path / f"{name}.mefd", channels, **kw)
    return make


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    port: int
    env: dict
    stderr_lines: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch_server(extra_env: Optional[dict] = None, args=(), timeout: float = 60.0,
                  expect_port: bool = True) -> ServerHandle:
    env = dict(os.environ)
    env.update({"PORT": "0", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    proc = subprocess.Popen([sys.executable, "-m", "mef3io_server.server", *args],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    lines: list[str] = []
    port_box: list[int] = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"listening on port (\d+)", line)
            if m and not port_box:
                port_box.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    handle = ServerHandle(proc, 0, env, lines)
    if not expect_port:
        return handle
    if not ready.wait(timeout) or not port_box:
        proc.kill()
        proc.wait()
        raise RuntimeError("server did not start:\n" + "".join(lines))
    handle.port = port_box[0]
    return handle


@pytest.fixture
def start_server():
    handles: list[ServerHandle] = []

    def start(args=(), **env) -> ServerHandle:
        h = launch_server(env, args)
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


@pytest.fixture(scope="session")
def shared_server():
    """One server for the whole session (tests that only read need no private one)."""
    h = launch_server({"TILE_CACHE_MB": "256"})
    yield h
    h.stop()


@pytest.fixture
def golden():
    if not (GOLDEN / "manifest.json").exists():
        pytest.skip("../shared/golden is not beside this checkout (the legacy sessions)")
    return GOLDEN


def golden_cases():
    """(name, manifest entry) of every golden session, or [] when absent."""
    m = GOLDEN / "manifest.json"
    if not m.exists():
        return []
    return [(c["name"], c) for c in json.loads(m.read_text())["cases"]]


PUBLISHED_VERSION = "3.1.0"


@pytest.fixture(scope="session")
def published_sdist() -> Path:
    """The published mef3io-server 3.1.0 source distribution, unpacked: its own tests and
    its code, to compare public APIs with (read as text, never imported into ours).

    Downloaded from PyPI once (``pip download --no-binary :all:``) into
    ``$MEF3IO_PUBLISHED_CACHE`` or ``~/.cache/mef3io-server-tests/published``; skips,
    saying why, when PyPI cannot be reached.
    """
    import shutil
    import tarfile
    import tempfile

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = Path(os.environ.get("MEF3IO_PUBLISHED_CACHE") or Path(base) / "mef3io-server-tests"
                 / "published")
    name = f"mef3io_server-{PUBLISHED_VERSION}"
    root = cache / name
    if (root / "PKG-INFO").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}.tar.gz"
    if not archive.exists():
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-binary", ":all:", "-d", str(cache), f"mef3io-server=={PUBLISHED_VERSION}"],
                capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"PyPI did not deliver mef3io-server {PUBLISHED_VERSION} within 300 s")
        if done.returncode != 0 or not archive.exists():
            why = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            pytest.skip(f"cannot download mef3io-server {PUBLISHED_VERSION} from PyPI "
                        f"(unreachable?): {why}")
    tmp = Path(tempfile.mkdtemp(dir=cache))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    try:
        (tmp / name).rename(root)          # atomic: parallel runs unpack side by side
    except OSError:
        pass                                # another run got there first
    shutil.rmtree(tmp, ignore_errors=True)
    return root


@pytest.fixture
def client_factory():
    from mef3io_server.client import Mef3Client

    clients = []

    def make(address: str, **kw):
        c = Mef3Client(address, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.shutdown()


def start_with_tokens(start_server, tmp_path, lines: str, **env) -> ServerHandle:
    """A server requiring the bearer tokens of ``lines`` (``AUTH_TOKENS_FILE``'s text)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(lines)
    return start_server(AUTH_TOKENS_FILE=tokens, **env)


@contextmanager
def two_clients(address: str, first: tuple, second: tuple):
    """Two Mef3Clients, each ``(client_id, token)``."""
    from mef3io_server.client import Mef3Client

    with Mef3Client(address, client_id=first[0], token=first[1]) as a, \
            Mef3Client(address, client_id=second[0], token=second[1]) as b:
        yield a, b
