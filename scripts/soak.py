#!/usr/bin/env python3
"""Soak a mef3io-server: many client processes, a mixed workload, figures as JSON.

Starts a server (or uses ``--address``), writes test sessions with mef3io.Writer
(or uses ``--session``), runs ``--clients`` client processes for ``--duration``
seconds, and reports:

* calls completed and errors per kind of call (goal: zero errors),
* p50 / p99 latency per kind (seconds, wall clock at the client),
* server memory over time: PSS of the server and its child processes (bytes;
  shared pages split between them), sampled every second (goal: flat, within
  TILE_CACHE_MB + 250 MB),
* open file descriptors and threads of the server before the load and after
  it (clients gone, their sessions closed).

Kinds of client (assigned round-robin): ``viewer`` pages 10 s windows of 8
channels with 50-300 ms pauses and jumps now and then; ``detector`` streams
60 s windows of all channels back to back; ``overview`` reads the whole file
with ``n_points``; ``opener`` opens, asks FileInfo, reads a little and closes,
over and over; ``envelope`` asks GetEnvelope.

``--kill-workers SECONDS`` (with ``USE_PROCESS_POOL=true`` on the server this
script starts) kills a random decode worker process of the server every
SECONDS: errors that name a dead decode worker are counted apart as
``fault_errors`` (a read may fail cleanly when its retry dies too).

Short form (CI, ~1 min)::

    python scripts/soak.py --clients 8 --duration 40 --out soak.json

Long form (people)::

    python scripts/soak.py --clients 32 --duration 300 --out soak.json

Run it as a file (mef3io's warnings break under ``python -c``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_600_000_000_000_000
SEC = 1_000_000
KINDS = ("viewer", "detector", "overview", "opener", "envelope")


# ---------------------------------------------------------------- data

def write_sessions(directory: Path, n_sessions: int, n_channels: int, seconds: int,
                   fs: float = 512.0) -> list[str]:
    """Sessions of random-walk channels (one NaN gap each), written by mef3io.Writer."""
    import mef3io

    paths = []
    rng = np.random.default_rng(0)
    for s in range(n_sessions):
        path = directory / f"soak{s}.mefd"
        n = int(seconds * fs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
                for c in range(n_channels):
                    x = np.cumsum(rng.standard_normal(n)) * 3.0
                    g = int(rng.integers(n // 4, n // 2))
                    x[g:g + int(2 * fs)] = np.nan
                    w.write(f"ch{c:02d}", x, T0, fs=fs, precision=2)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- server

SERVER_LOG_COUNTS = {"wedged": 0, "rebuilding": 0}


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    full = dict(os.environ)
    full.update({"PORT": "0", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})  # warnings: rebuilds
    full.update({k: str(v) for k, v in env.items()})
    proc = subprocess.Popen([sys.executable, "-m", "mef3io_server.server"], env=full,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    port = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            for word in SERVER_LOG_COUNTS:
                if word in line:
                    SERVER_LOG_COUNTS[word] += 1
            m = re.search(r"listening on port (\d+)", line)
            if m and not port:
                port.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60) or not port:
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, f"localhost:{port[0]}"


def server_figures(pid: int) -> dict:
    """Memory (server + children, bytes), fds and threads of the server process.

    ``rss_bytes`` (despite its name) sums the PSS of the server and its children
    (decode workers, fork server): pages they share after fork are counted
    once, split between them, where a sum of RSS would count them in every
    process. ``server_rss_bytes`` / ``server_pss_bytes``: the server process alone.
    """
    import psutil

    p = psutil.Process(pid)
    procs = [p] + p.children(recursive=True)
    total = server_pss = 0
    for q in procs:
        try:
            pss = getattr(q.memory_full_info(), "pss", None) or q.memory_info().rss
        except psutil.Error:
            continue
        total += pss
        if q.pid == pid:
            server_pss = pss
    return {"rss_bytes": total, "server_rss_bytes": p.memory_info().rss,
            "server_pss_bytes": server_pss,
            "fds": p.num_fds(), "threads": p.num_threads(), "children": len(procs) - 1}


def decode_workers(pid: int) -> list:
    import psutil

    try:
        # The forkserver is a child; decode workers are its children.
        return [c for c in psutil.Process(pid).children(recursive=True)
                if c.ppid() != pid]
    except psutil.Error:
        return []


# ---------------------------------------------------------------- clients

def client_main(idx: int, kind: str, address: str, paths: list[str], deadline: float,
                queue) -> None:
    from mef3io_server.client import Mef3Client

    rng = random.Random(idx)
    lat: dict[str, list[float]] = {}
    errors: list[str] = []
    calls = 0

    def timed(op, fn):
        nonlocal calls
        t = time.perf_counter()
        try:
            out = fn()
            err = out.get("error_message") if isinstance(out, dict) else ""
        except Exception as e:  # noqa: BLE001 - every failure is a figure
            out, err = None, f"{type(e).__name__}: {e}"
        lat.setdefault(op, []).append(time.perf_counter() - t)
        calls += 1
        if err:
            errors.append(f"{op}: {err}"[:300])
        return out

    with Mef3Client(address, timeout=120) as c:
        path = paths[idx % len(paths)]
        info = timed("open", lambda: c.open_file(path))
        if not info or info.get("error_message"):
            queue.put({"idx": idx, "kind": kind, "lat": lat, "errors": errors, "calls": calls})
            return
        names = info["channel_names"]
        t_start, t_end = info["start_uutc"], info["end_uutc"]
        span = t_end - t_start
        pos = t_start + rng.randrange(0, span // 2)
        while time.monotonic() < deadline:
            if kind == "viewer":
                chans = names[:8]
                if rng.random() < 0.1:
                    pos = t_start + rng.randrange(0, span - 10 * SEC)
                a = pos
                timed("view", lambda: c.get_signal_range(path, chans, a, a + 10 * SEC))
                pos = pos + 10 * SEC if pos + 20 * SEC < t_end else t_start
                time.sleep(rng.uniform(0.05, 0.3))
            elif kind == "detector":
                a = pos
                timed("detect", lambda: c.get_signal_range(path, names, a, a + 60 * SEC))
                pos = pos + 60 * SEC if pos + 120 * SEC < t_end else t_start
            elif kind == "overview":
                timed("overview", lambda: c.get_signal_range(
                    path, names[:4], t_start, t_end, n_points=rng.choice([500, 2000, 4000])))
                time.sleep(rng.uniform(0.1, 0.5))
            elif kind == "opener":
                p = rng.choice(paths)
                inf = timed("open", lambda: c.open_file(p))
                if inf and not inf.get("error_message"):
                    timed("info", lambda: c.get_file_info(p))
                    a = inf["start_uutc"] + rng.randrange(0, 60) * SEC
                    timed("short", lambda: c.get_signal_range(p, inf["channel_names"][:2],
                                                              a, a + SEC))
                    if p != path:
                        timed("close", lambda: c.close_file(p))
                time.sleep(rng.uniform(0.05, 0.2))
            elif kind == "envelope":
                def env():
                    c.get_envelope(path, names[:4])
                    return {}
                timed("envelope", env)
                time.sleep(rng.uniform(0.1, 0.4))
        timed("close", lambda: c.close_file(path))
    queue.put({"idx": idx, "kind": kind, "lat": lat, "errors": errors, "calls": calls})


# ---------------------------------------------------------------- main

def percentile(xs, q):
    return float(np.percentile(xs, q)) if xs else None


def run(args) -> dict:
    tmp = None
    if args.session:
        paths = args.session
    else:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
        paths = write_sessions(Path(tmp.name), args.sessions, args.channels, args.seconds)
    env = {"TILE_CACHE_MB": args.tile_cache_mb, "REFRESH_INTERVAL_S": 2}
    if args.kill_workers:
        env["USE_PROCESS_POOL"] = "true"
    for kv in args.env:
        k, v = kv.split("=", 1)
        env[k] = v
    proc = None
    if args.address:
        address, pid = args.address, args.server_pid
    else:
        proc, address = start_server(env)
        pid = proc.pid
    time.sleep(1.0)
    before = server_figures(pid) if pid else {}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    deadline = time.monotonic() + args.duration
    kinds = [KINDS[i % len(KINDS)] for i in range(args.clients)]
    procs = [ctx.Process(target=client_main, args=(i, k, address, paths, deadline, queue))
             for i, k in enumerate(kinds)]
    t_begin = time.monotonic()
    for p in procs:
        p.start()
    samples, kills = [], []
    next_kill = time.monotonic() + (args.kill_workers or 1e18)
    rng = random.Random(1)
    results = []
    while any(p.is_alive() for p in procs) or not queue.empty():
        while not queue.empty():
            results.append(queue.get())
        if pid:
            try:
                fig = server_figures(pid)
                fig["t_s"] = round(time.monotonic() - t_begin, 1)
                samples.append(fig)
            except Exception:  # noqa: BLE001
                pass
        if pid and time.monotonic() >= next_kill:
            workers = decode_workers(pid)
            if workers:
                victim = rng.choice(workers)
                try:
                    victim.send_signal(signal.SIGKILL)
                    kills.append({"t_s": round(time.monotonic() - t_begin, 1),
                                  "pid": victim.pid})
                except Exception:  # noqa: BLE001
                    pass
            next_kill = time.monotonic() + args.kill_workers
        time.sleep(1.0)
    for p in procs:
        p.join()
    while not queue.empty():
        results.append(queue.get())
    time.sleep(args.settle)
    after = server_figures(pid) if pid else {}
    serving = None
    if results:
        from mef3io_server.client import Mef3Client
        try:
            with Mef3Client(address, timeout=30) as c:
                inf = c.open_file(paths[0])
                r = c.get_signal_range(paths[0], inf["channel_names"][:1], inf["start_uutc"],
                                       inf["start_uutc"] + SEC)
                serving = r["error_message"] == ""
                c.close_file(paths[0])
        except Exception:  # noqa: BLE001 - a hung or dead server is a figure, not a crash
            serving = False
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if tmp is not None:
        tmp.cleanup()

    by_op: dict[str, list[float]] = {}
    errors: list[str] = []
    for r in results:
        for op, xs in r["lat"].items():
            by_op.setdefault(op, []).extend(xs)
        errors.extend(r["errors"])
    fault = [e for e in errors if "decode worker" in e]
    other = [e for e in errors if "decode worker" not in e]
    all_lat = [x for xs in by_op.values() for x in xs]
    rss = [s["rss_bytes"] for s in samples]
    return {
        "clients": args.clients, "duration_s": args.duration, "tile_cache_mb": args.tile_cache_mb,
        "sessions": len(paths), "channels": args.channels, "seconds_per_session": args.seconds,
        "clients_reported": len(results),
        "calls": sum(len(xs) for xs in by_op.values()),
        "errors": len(other), "fault_errors": len(fault),
        "error_samples": sorted(set(other))[:10], "fault_error_samples": sorted(set(fault))[:5],
        "latency_s": {op: {"n": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99)}
                      for op, xs in sorted(by_op.items())},
        "latency_all_s": {"p50": percentile(all_lat, 50), "p99": percentile(all_lat, 99)},
        "server_before": before, "server_after": after,
        "rss_max_bytes": max(rss) if rss else None,
        "server_rss_max_bytes": max((s["server_rss_bytes"] for s in samples), default=None),
        "server_pss_max_bytes": max((s["server_pss_bytes"] for s in samples), default=None),
        "rss_limit_bytes": (args.tile_cache_mb + 250) * 2**20,
        "rss_samples": samples,
        "worker_kills": kills, "still_serving": serving,
        "server_env": {k: str(v) for k, v in env.items()} if not args.address else None,
        "pool_rebuilds": SERVER_LOG_COUNTS["rebuilding"],
        "wedged_pools": SERVER_LOG_COUNTS["wedged"],
        "machine": {"cpus": os.cpu_count(), "node": os.uname().nodename},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=600, help="length of each session")
    ap.add_argument("--tile-cache-mb", type=int, default=256)
    ap.add_argument("--kill-workers", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before 'after' figures")
    ap.add_argument("--address", help="use a running server instead of starting one")
    ap.add_argument("--server-pid", type=int, help="its pid, for memory figures")
    ap.add_argument("--session", action="append", help="use these sessions (repeatable)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    ap.add_argument("--out", help="write the figures here (JSON)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fig = run(args)
    text = json.dumps(fig, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    summary = {k: v for k, v in fig.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=1))
    return 0 if fig["errors"] == 0 and fig["still_serving"] else 1


if __name__ == "__main__":
    sys.exit(main())
