"""A newcomer's first hour: the README's first command, then every example in the docs, as written.

The demo server is started the README's way (``bash scripts/serve-demo.sh``, on a
free port, with its own demo folder, and without network for pip: the
environment is already up to date). Then every fenced ``python``, ``sh`` and
``bash`` block of README.md and docs/*.md runs, page by page in order, in one
scratch folder per page, with ``MEF3IO_ADDRESS`` and ``DEMO_DIR`` pointing at
that server: python blocks as files run by this environment's python, shell
blocks by ``bash -e`` with this environment's ``bin`` first on PATH (as after
``source .venv/bin/activate``). The README's own blocks run with no python of
this environment on PATH: the README has to say how to get it. A block that
cannot run here is preceded by ``<!-- not run: why -->``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from conftest import ROOT

PAGES = ["README.md"] + sorted(p.name for p in (ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"(<!--\s*not run:(?P<why>[^>]*)-->\s*\n)?```(?P<lang>\w*)\n(?P<code>.*?)```",
                   re.S)
RUNNABLE = {"python", "sh", "bash"}


def blocks(page: str) -> list[tuple[str, str, "str | None"]]:
    """(language, code, why it is not run, or None) of each fenced block of ``page``."""
    path = ROOT / page if page == "README.md" else ROOT / "docs" / page
    return [(m["lang"], m["code"], None if m["why"] is None else m["why"].strip())
            for m in BLOCK.finditer(path.read_text())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's first command, run for real: (process, address, env for clients, stderr)."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("the tests do not run in this checkout's .venv (use scripts/test.sh)")
    want = (f"{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()} "
            f"{sys.version.split()[0]}")
    if not any(p.read_text().strip() == want for p in venv.glob(".installed-*")):
        pytest.skip(".venv is not up to date with pyproject.toml (run scripts/test.sh, which "
                    "installs it and leaves the stamp serve-demo.sh checks)")
    home = tmp_path_factory.mktemp("first_hour")
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("BIND_ADDRESS", "DATA_ROOTS", "METRICS_PORT", "VIRTUAL_ENV")}
    env.update({"PORT": str(port), "DEMO_DIR": str(home / "demo"), "PIP_NO_INDEX": "1",
                "PYTHONUNBUFFERED": "1",
                # the web viewer on a free port (the demo's own 8080 may be taken here)
                "HTTP_PORT": str(_free_port())})
    proc = subprocess.Popen(["bash", "scripts/serve-demo.sh"], cwd=str(ROOT), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "listening on port" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(180) or proc.poll() is not None:
        proc.kill()
        pytest.fail("serve-demo.sh did not start:\n" + "".join(lines))
    client_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    client_env.update({"MEF3IO_ADDRESS": f"localhost:{port}", "DEMO_DIR": str(home / "demo"),
                       "MPLBACKEND": "Agg"})
    yield proc, f"localhost:{port}", client_env, lines
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_demo_starts_from_an_up_to_date_environment_without_pip(demo):
    proc, address, _, lines = demo
    err = "".join(lines)
    assert "installing" not in err and "Deprecat" not in err and "Warning" not in err, err
    assert "writing the demo recording" in err
    assert "source .venv/bin/activate" in err          # says how to use what it made


def test_the_demo_listens_on_this_machine_only_and_serves_its_folder_only(demo, tmp_path):
    from conftest import random_walk, write_session
    from mef3io_server.client import Mef3Client

    proc, address, env, _ = demo
    listening = [c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(_loopback(ip) for ip in listening), listening
    other = write_session(tmp_path / "other.mefd", {"a": random_walk(2560)})
    with Mef3Client(address) as c:
        recordings = c.list_recordings()
        assert [r["path"] for r in recordings] == [str(Path(env["DEMO_DIR"]) / "demo.mefd")]
        refused = c.open_file(str(other))
    assert not refused["file_opened"] and "outside the served roots" in refused["error_message"]


def test_the_demo_prints_the_viewers_link_and_the_page_draws_it(demo):
    """The link the README's first command prints opens the demo in a browser."""
    import re

    from browser import chromium_or_skip, start_chromium

    proc, _, env, lines = demo
    m = re.search(r"web viewer at (http://localhost:\d+/#path=(\S+)) \(this machine only\)",
                  "".join(lines))
    assert m, "".join(lines)
    assert m.group(2) == str(Path(env["DEMO_DIR"]) / "demo.mefd")
    chromium_or_skip()
    d = start_chromium(1920, 1080)
    try:
        d.get(m.group(1))
        for _ in range(600):
            drawn = d.execute_script("return window.mefViewer && mefViewer.stats.lastDraw")
            if drawn:
                break
            import time
            time.sleep(0.05)
        assert drawn and drawn["channels"] == 16 and drawn["mode"] == "samples"
        assert drawn["labels"][0] == "2024-01-01 00:00:00"
        assert d.execute_script("return mefViewer.stats.errors") == []
    finally:
        d.quit()


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None)
                                    and addr.ipv4_mapped.is_loopback)


def _page_env(env: dict, readme: bool, scratch: Path) -> dict:
    env = dict(env)
    bin_dir = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(bin_dir)]
    if readme:
        # A fresh shell: `python` is a Python without this project (the README must say how).
        plain = scratch / "plain-bin"
        plain.mkdir(exist_ok=True)
        for name in ("python", "python3"):
            link = plain / name
            if not link.exists():
                link.symlink_to(sys._base_executable)
        path = [str(plain)] + path
    else:
        path = [bin_dir] + path
    env["PATH"] = os.pathsep.join(path)
    return env


def _run_alone(cmd: list, cwd: Path, env: dict, timeout: float = 240) -> tuple:
    """(status, stdout, stderr) of ``cmd`` run in a process group of its own, which is
    killed afterwards: an example that starts a server (or times out) leaves nothing behind."""
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return -1, out, f"timed out after {timeout} s\n{err}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out, err


@pytest.mark.parametrize("page", PAGES)
def test_every_example_runs_as_written(page, demo, tmp_path):
    _, _, env, _ = demo
    found = blocks(page)
    runnable = [(lang, code, why) for lang, code, why in found if lang in RUNNABLE]
    if not runnable:
        pytest.skip(f"{page} has no examples")
    readme = page == "README.md"
    scratch = tmp_path / "work"
    scratch.mkdir()
    if readme:      # its commands run from the checkout's root: give them its files
        for name in (".venv", "examples"):
            (scratch / name).symlink_to(ROOT / name)
    run_env = _page_env(env, readme, tmp_path)
    for i, (lang, code, why) in enumerate(runnable):
        if why is not None:
            continue
        if lang == "python":
            script = scratch / f"example_{i}.py"     # a file: mef3io's warnings need a module
            script.write_text(code)
            cmd = [sys.executable, str(script)]
        else:
            cmd = ["bash", "-e", "-c", code]
        code_, out, err = _run_alone(cmd, scratch, run_env)
        assert code_ == 0, (f"{page}, example {i + 1} ({lang}) failed:\n{code}\n"
                            f"--- stdout\n{out[-2000:]}\n--- stderr\n{err[-3000:]}")
        assert "Traceback" not in err, err[-3000:]


def test_blocks_not_run_say_why():
    skipped = [(page, why) for page in PAGES for lang, _, why in blocks(page)
               if lang in RUNNABLE and why is not None]
    assert skipped, "the README's own first block is not run (it starts the server)"
    assert all(len(why) > 10 for _, why in skipped), skipped
