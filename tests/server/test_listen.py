"""Where the server listens: BIND_ADDRESS, METRICS_BIND_ADDRESS, a port already in use,
and the demo's defaults (this machine only, its own folder only)."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

import psutil
import pytest

from conftest import ROOT, launch_server
from mef3io_server.server.config import ConfigError, load_settings


def listening(pid: int) -> set:
    """(ip, port) of the TCP sockets process ``pid`` listens on."""
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


def loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return a.is_loopback or bool(getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)


def test_bind_address_is_parsed_and_checked():
    assert load_settings({}).bind_address == "::"
    assert load_settings({"BIND_ADDRESS": "[::1]"}).listen_address(7) == "[::1]:7"
    assert load_settings({"BIND_ADDRESS": "127.0.0.1"}).listen_address(7) == "127.0.0.1:7"
    assert load_settings({"BIND_ADDRESS": "LocalHost"}).bind_address == "localhost"
    s = load_settings({"BIND_ADDRESS": "127.0.0.1"})
    assert s.effective_metrics_bind_address == "127.0.0.1"
    assert load_settings({"METRICS_BIND_ADDRESS": "::1"}).effective_metrics_bind_address == "::1"
    for name in ("BIND_ADDRESS", "METRICS_BIND_ADDRESS"):
        with pytest.raises(ConfigError, match="IP address") as e:
            load_settings({name: "my laptop"})
        assert e.value.variable == name


def test_bind_address_governs_the_grpc_port_and_the_metrics_port():
    h = launch_server({"BIND_ADDRESS": "127.0.0.1", "METRICS_PORT": "0"})
    try:
        socks = listening(h.proc.pid)
        assert len(socks) == 2 and all(loopback(ip) for ip, _ in socks), socks
        assert "listening on port" in h.stderr_text() and "this machine only" in h.stderr_text()
    finally:
        h.stop()
    h = launch_server({"METRICS_PORT": "0", "METRICS_BIND_ADDRESS": "::1"})
    try:
        socks = listening(h.proc.pid)
        grpc_side = [ip for ip, port in socks if port == h.port]
        metrics_side = [ip for ip, port in socks if port != h.port]
        assert grpc_side and not any(loopback(ip) for ip in grpc_side), socks   # every interface
        assert metrics_side == ["::1"], socks
    finally:
        h.stop()


def test_a_port_in_use_is_named_not_a_grpc_trace():
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        taken.bind(("::", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "mef3io_server.server"], env=env,
                              cwd=str(ROOT), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if "WARNING" not in ln and ln.strip()]
    assert len(lines) == 1, done.stderr
    assert f"port {port} is in use" in lines[0] and "PORT" in lines[0], lines[0]
    assert "Failed to bind" not in done.stderr and "add_port" not in done.stderr


def test_the_demo_serves_this_machine_and_its_folder_only_and_is_written_once(tmp_path):
    env = {"DEMO_DIR": str(tmp_path / "demo"), "BIND_ADDRESS": "", "DATA_ROOTS": ""}
    first = launch_server(env, args=("--demo",), timeout=180)
    try:
        assert all(loopback(ip) for ip, _ in listening(first.proc.pid))
        err = first.stderr_text()
        assert "writing the demo recording" in err
        assert f"DATA_ROOTS {os.path.realpath(tmp_path / 'demo')}" in err, err
    finally:
        first.stop()
    again = launch_server(env, args=("--demo",))
    try:
        assert "first run" not in again.stderr_text()
        assert "writing the demo" not in again.stderr_text()
    finally:
        again.stop()
    # Told otherwise, it listens everywhere and serves what DATA_ROOTS says.
    wide = launch_server({**env, "BIND_ADDRESS": "::", "DATA_ROOTS": str(tmp_path)},
                         args=("--demo",))
    try:
        assert not all(loopback(ip) for ip, _ in listening(wide.proc.pid))
        assert f"DATA_ROOTS {os.path.realpath(tmp_path)}," in wide.stderr_text()
    finally:
        wide.stop()
