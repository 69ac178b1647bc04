"""Idle CPU of a server holding open recordings, with and without change notifications.

Starts a real server (``python -m mef3io_server.server``) for each setting of
``CHANGE_NOTIFICATIONS`` (``auto``, ``off``), opens ``--small`` 8-channel
recordings and one ``--wide``-channel recording through the client, reads a
second of each, then leaves the server alone for ``--idle`` seconds and
measures its CPU from ``/proc/<pid>/stat`` (utime + stime, the server process
and its threads; decode worker processes are not counted -- the default
decoder uses threads). Prints a table with the machine, the time and the load
average.

Recordings are written once with ``mef3io.Writer`` into ``benchmarks/data/idle/``
(50 x 8 channels x 60 s at 256 Hz, and 1024 channels x 10 s at 256 Hz).

    .venv/bin/python benchmarks/idle_cpu_bench.py            # 60 s idle per setting
    .venv/bin/python benchmarks/idle_cpu_bench.py --idle 20 --small 10
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "idle"
T0 = 1_600_000_000_000_000
FS = 256.0


def write(path: Path, n_channels: int, seconds: float) -> Path:
    """A session of ``n_channels`` random walks (written once; kept when present)."""
    import mef3io

    if (path / ".complete").exists():
        return path
    rng = np.random.default_rng(n_channels)
    n = int(seconds * FS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for i in range(n_channels):
                w.write(f"ch{i:04d}", np.cumsum(rng.standard_normal(n)), T0, fs=FS,
                        precision=2)
    (path / ".complete").write_text("")
    return path


def recordings(n_small: int, wide: int) -> list[Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    out = [write(DATA / f"small{i:03d}.mefd", 8, 60.0) for i in range(n_small)]
    if wide:
        out.append(write(DATA / f"wide{wide}.mefd", wide, 10.0))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def thread_cpu(pid: int) -> dict:
    """(thread id, name) -> utime + stime seconds, of every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            out[(tid, name)] = cpu_seconds(f"{pid}/task/{tid}")
        except (OSError, IndexError):
            pass
    return out


def measure(setting: str, paths: list[Path], idle_s: float, refresh_s: float,
            log: str = "") -> dict:
    from mef3io_server.client import Mef3Client

    port = free_port()
    env = dict(os.environ, PORT=str(port), BIND_ADDRESS="localhost",
               LOG_LEVEL="DEBUG" if log else "WARNING",
               DATA_ROOTS=str(DATA), CHANGE_NOTIFICATIONS=setting,
               REFRESH_INTERVAL_S=str(refresh_s), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mef3io_server.server"], env=env,
                            cwd=str(ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=open(f"{log}.{setting}", "w") if log else subprocess.DEVNULL)
    try:
        address = f"localhost:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with Mef3Client(address, timeout=2) as c:
                    c.list_open_files()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start ({setting})")
                time.sleep(0.2)
        client = Mef3Client(address, timeout=120)
        for p in paths:
            info = client.open_file(str(p))
            assert info["error_message"] == "", info["error_message"]
            names = info["channel_names"][:8]
            client.get_signal_range(str(p), names, T0, T0 + 1_000_000)
        assert len(client.list_open_files()) == len(paths)
        time.sleep(5)                   # let the open's follow-up checks and prefetch end
        load = os.getloadavg()
        t0 = thread_cpu(proc.pid)
        c0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_s)
        c1, w1 = cpu_seconds(proc.pid), time.monotonic()
        t1 = thread_cpu(proc.pid)
        busiest = sorted(((t1[k] - t0.get(k, 0.0), k[1]) for k in t1), reverse=True)[:4]
        load_after = os.getloadavg()
        n_threads = threads(proc.pid)
        assert len(client.list_open_files()) == len(paths)   # still open, still serving
        client.shutdown()
        return {"setting": setting, "cpu_s": c1 - c0, "wall_s": w1 - w0,
                "percent": 100.0 * (c1 - c0) / (w1 - w0), "load": load,
                "load_after": load_after, "threads": n_threads, "busiest": busiest}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=50, help="8-channel recordings (default 50)")
    ap.add_argument("--wide", type=int, default=1024,
                    help="channels of the one wide recording (0: none; default 1024)")
    ap.add_argument("--idle", type=float, default=60.0, help="idle seconds measured (60)")
    ap.add_argument("--refresh", type=float, default=2.0, help="REFRESH_INTERVAL_S (2)")
    ap.add_argument("--settings", default="auto,off", help="CHANGE_NOTIFICATIONS values")
    ap.add_argument("--log", default="", help="write each server's debug log to LOG.<setting>")
    args = ap.parse_args()

    paths = recordings(args.small, args.wide)
    rows = [measure(s, paths, args.idle, args.refresh, args.log)
            for s in args.settings.split(",")]
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; {platform.platform()}")
    print(f"finished: {started}; {args.small} x 8 ch + "
          f"{'1 x %d ch' % args.wide if args.wide else 'no wide'} recordings open, "
          f"REFRESH_INTERVAL_S={args.refresh:g}, {args.idle:g} s idle each")
    print()
    print("| CHANGE_NOTIFICATIONS | server CPU while idle | of one core | threads "
          "| load average before (1/5/15 min) | after |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        print(f"| `{r['setting']}` | {r['cpu_s']:.2f} s in {r['wall_s']:.0f} s "
              f"| {r['percent']:.2f} % | {r['threads']} "
              f"| {' / '.join(f'{x:.2f}' for x in r['load'])} "
              f"| {' / '.join(f'{x:.2f}' for x in r['load_after'])} |")
    print()
    print("busiest threads while idle (CPU seconds, thread name):")
    for r in rows:
        print(f"  {r['setting']}: " + ", ".join(f"{c:.2f} {n}" for c, n in r["busiest"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
