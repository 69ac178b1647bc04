"""Short forms of the soak (scripts/soak.py) for CI: zero errors, bounded resources.

No timing assertions: latency figures are reported by the script, not judged here.
The long forms (32 clients, minutes) are for people; see docs/reliability.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20


def run_soak(tmp_path, *args) -> dict:
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), *args,
                           "--out", str(out)], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=240)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


def check_figures(fig: dict, *, max_threads_growth: int, max_fds_growth: int = 4,
                  extra_memory: int = 0) -> None:
    assert fig["clients_reported"] == fig["clients"]
    assert fig["calls"] > 100
    assert fig["errors"] == 0, fig["error_samples"]
    assert fig["still_serving"] is True
    # Memory: the whole server (children too, PSS) within TILE_CACHE_MB + 250 MB.
    assert fig["rss_max_bytes"] <= fig["rss_limit_bytes"] + extra_memory, \
        fig["rss_max_bytes"] / MB
    before, after = fig["server_before"], fig["server_after"]
    # Handles back to the start (a few sockets of the final check may linger).
    assert after["fds"] <= before["fds"] + max_fds_growth, (before, after)
    # Threads: the gRPC pool grows to MAX_WORKERS once and stays; nothing beyond it.
    assert after["threads"] <= before["threads"] + max_threads_growth, (before, after)


@pytest.mark.slow
def test_soak_short_threads(tmp_path):
    fig = run_soak(tmp_path, "--clients", "8", "--duration", "15", "--sessions", "2",
                   "--channels", "8", "--seconds", "240", "--tile-cache-mb", "16")
    check_figures(fig, max_threads_growth=16 + 4)
    assert set(fig["latency_s"]) >= {"view", "detect", "overview", "open", "envelope"}


@pytest.mark.slow
def test_soak_short_process_pool_with_worker_kills(tmp_path):
    """Decode workers SIGKILLed every 2 s: the pool is rebuilt, reads retried, no errors."""
    fig = run_soak(tmp_path, "--clients", "6", "--duration", "14", "--sessions", "2",
                   "--channels", "8", "--seconds", "600", "--tile-cache-mb", "4",
                   "--kill-workers", "2")
    assert len(fig["worker_kills"]) >= 5
    # A read may fail cleanly when every retry dies too; none may fail otherwise.
    assert fig["fault_errors"] <= len(fig["worker_kills"])
    assert fig["pool_rebuilds"] >= 1
    # A pool given up as wedged (a worker killed mid-result) is released:
    # no thread or fd per wedge stays behind, and memory stays within the
    # goal (it ran ~100 MB over before decoded samples stopped being held
    # by reference cycles and the server's malloc arenas were capped;
    # docs/reliability.md).
    check_figures(fig, max_threads_growth=16 + 8)
