"""Short forms of the soak (scripts/soak.py) for CI: zero errors, bounded resources.

No timing assertions: latency figures are reported by the script, not judged here.
The long forms (32 clients, minutes) are for people; see docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mef3io_server.server.config import load_settings
from mef3io_server.server.workers import WorkerPools

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20


def run_soak(tmp_path, *args) -> dict:
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), *args,
                           "--out", str(out)], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=240)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


#: Threads of one each that the server starts when first needed: index warmer,
#: soon-tiles, change watch, derived read-ahead, prefetch planner, pre-assembly,
#: watch sender, change signals, tail marks (one per open, short-lived), the
#: decode watchdog and retry threads of the process pool.
HELPER_THREADS = 12


def thread_budget(fig: dict) -> int:
    """Threads the soak's server may add under load, every pool full.

    gRPC: MAX_WORKERS for streams, a quarter (at least 2) for small calls, the
    health pool; decode: the foreground and background pools (threads decoder);
    plus the helpers. A thread leaked per call or per open (hundreds in a
    soak) exceeds it; pools that grow lazily to their size do not.
    """
    s = load_settings({**os.environ, **(fig["server_env"] or {})})
    calls = s.max_workers + max(2, s.max_workers // 4) + WorkerPools.HEALTH_WORKERS
    decode = 0 if s.use_process_pool else (s.effective_reader_processes
                                           + s.effective_prefetch_processes)
    return calls + decode + HELPER_THREADS


def check_figures(fig: dict, *, max_fds_growth: int = 4, extra_memory: int = 0) -> None:
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
    # Threads: pools grow to their sizes once and stay; nothing per call.
    assert after["threads"] - before["threads"] <= thread_budget(fig), (before, after)


@pytest.mark.slow
def test_soak_short_threads(tmp_path):
    fig = run_soak(tmp_path, "--clients", "8", "--duration", "15", "--sessions", "2",
                   "--channels", "8", "--seconds", "240", "--tile-cache-mb", "16")
    check_figures(fig)
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
    check_figures(fig)
