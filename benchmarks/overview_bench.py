"""Overview benchmark: what a viewer pays to draw a long recording.

Standalone (meant to be merged into benchmarks/bench.py later). Scenarios, each
against a freshly started server so "cold" means the server's caches are empty
(the OS page cache is not dropped: the files are read from memory both times):

* ``overview_native``   -- 1 hour of 64 channels with ``n_points=2000``, session
  opened without ``cache_fs`` (the source is the original 256 Hz).
* ``overview_cache_fs`` -- the same read in a session opened with ``cache_fs``
  (default 4 Hz: 14 400 reduced samples per channel-hour, >= 2 x 2000, so the
  reduced tiles are the source).
* ``envelope_24h``      -- ``GetEnvelope`` of all 64 channels over 24 hours.

Cold = the first call after open; warm = the median of ``--repeat`` calls of
the same request afterwards. Both servers get the same TILE_CACHE_MB. The
published 3.1.0 server runs from /work/ref/venv (it prefixes /host_root, a link
to /, to every path itself, so both servers are given the same path).

Usage::

    .venv/bin/python benchmarks/overview_bench.py            # writes the data once (~1 min, ~2 GB)
    .venv/bin/python benchmarks/overview_bench.py --hours 2 --channels 8 --no-published

Prints a table and writes ``benchmarks/results/overview.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mef3io_server.client import Mef3Client  # noqa: E402

START = 1_600_000_000_000_000
PUBLISHED_PYTHON = "/work/ref/venv/bin/python"


def make_dataset(path: Path, channels: int, hours: float, fs: float) -> Path:
    """Random walks with a few spikes, written hour by hour with mef3io.Writer."""
    import mef3io

    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_hour = int(fs * 3600)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for h in range(int(np.ceil(hours))):
                n = int(min(1.0, hours - h) * per_hour)
                base = np.cumsum(rng.standard_normal(n)) * 2.0
                for c in range(channels):
                    x = base * (1 + c / channels) + rng.standard_normal(n) * 5
                    x[rng.integers(0, n, 3)] += 800.0
                    w.write(f"ch{c:03d}", x, START + h * 3_600_000_000, fs=fs, precision=2)
    done.write_text("ok")
    print(f"wrote {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on a free port (ours or the published one)."""

    def __init__(self, kind: str, cache_mb: int):
        self.kind = kind
        self.port = free_port()
        env = dict(os.environ, PORT=str(self.port), TILE_CACHE_MB=str(cache_mb),
                   LOG_LEVEL="WARNING")
        python = sys.executable if kind == "ours" else PUBLISHED_PYTHON
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([python, "-m", "mef3io_server.server"], env=env,
                                     cwd=str(ROOT) if kind == "ours" else "/",
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import grpc
        chan = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(chan).result(timeout=60)
        finally:
            chan.close()

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1e3, out


def tree_cpu_ms(pid: int) -> float:
    """CPU time (user + system, ms) used so far by ``pid`` and its live descendants.

    On a shared, overloaded machine wall times mostly measure the scheduler;
    the CPU a server burns for the same answer is the steadier comparison.
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))   # ppid, ticks
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
            todo.extend(c for c, (pp, _) in stats.items() if pp == p)
    return total * 1000.0 / tick


def timed_cpu(fn, pid: int):
    c0 = tree_cpu_ms(pid)
    ms, out = timed(fn)
    return ms, tree_cpu_ms(pid) - c0, out


def run_scenario(kind: str, name: str, path: str, args) -> dict:
    server = Server(kind, args.cache_mb)
    try:
        client = Mef3Client(server.address)
        cache_fs = args.cache_fs if name == "overview_cache_fs" else None
        info = client.open_file(path, cache_fs=cache_fs)
        if not info["file_opened"]:
            raise RuntimeError(f"{kind}: open failed: {info['error_message']}")
        names = info["channel_names"][:args.channels]
        t0 = info["start_uutc"]
        if name == "envelope_24h":
            # The whole recording (24 h by default), as a viewer's day overview asks it.
            def call():
                env = client.get_envelope(path, names)
                assert len(env) == len(names)
                return env
        else:
            t1 = t0 + 3_600_000_000

            def call(shift=0):
                r = client.get_signal_range(path, names, t0 + shift, t1 + shift,
                                            n_points=args.n_points)
                if r["array"] is None:
                    raise RuntimeError(f"{kind}: {r['error_message']}")
                assert r["array"].shape == (len(names), args.n_points)
                return r
        pid = server.proc.pid
        cold, cold_cpu, _ = timed_cpu(call, pid)
        time.sleep(args.settle)                      # let prefetch finish before warm reads
        runs = [timed_cpu(call, pid)[:2] for _ in range(args.repeat)]
        warm = [w for w, _ in runs]
        row = {"server": kind, "scenario": name, "cold_ms": round(cold, 1),
               "cold_server_cpu_ms": round(cold_cpu, 1),
               "warm_server_cpu_ms": round(statistics.median(c for _, c in runs), 1),
               "warm_ms": round(statistics.median(warm), 1),
               "warm_min_ms": round(min(warm), 1), "repeats": args.repeat}
        if name != "envelope_24h":
            # The same hour shifted by k seconds: data cached, the answer not (our server
            # caches n_points answers, so "warm" above is a redraw of the same view).
            shifted = [timed(lambda k=k: call(k * 1_000_000))[0]
                       for k in range(1, args.repeat + 1)]
            row["warm_shifted_ms"] = round(statistics.median(shifted), 1)
        client.shutdown()
        return row
    finally:
        server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--fs", type=float, default=256.0)
    ap.add_argument("--n-points", type=int, default=2000)
    ap.add_argument("--cache-fs", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between the cold read and the warm ones (prefetch)")
    ap.add_argument("--cache-mb", type=int, default=1024)
    ap.add_argument("--data-dir", default="/tmp/mef3io_overview_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overview.json"))
    ap.add_argument("--no-published", action="store_true")
    ap.add_argument("--scenarios", default="overview_native,overview_cache_fs,envelope_24h")
    args = ap.parse_args(argv)

    name = f"overview_{args.channels}ch_{args.hours:g}h_{args.fs:g}Hz.mefd"
    path = make_dataset(Path(args.data_dir) / name, args.channels, args.hours, args.fs)
    kinds = ["ours"] + ([] if args.no_published or not os.path.exists(PUBLISHED_PYTHON)
                        else ["published"])
    rows = []
    for scenario in args.scenarios.split(","):
        for kind in kinds:
            rows.append(run_scenario(kind, scenario, str(path), args))
            r = rows[-1]
            print(f"  {scenario:18s} {kind:9s} cold {r['cold_ms']:9.1f} ms "
                  f"(server cpu {r['cold_server_cpu_ms']:.0f})   warm {r['warm_ms']:8.1f} ms "
                  f"(cpu {r['warm_server_cpu_ms']:.0f})   "
                  f"shifted {r.get('warm_shifted_ms', '-')} ms", file=sys.stderr)

    by = {(r["scenario"], r["server"]): r for r in rows}
    print(f"\n{'scenario':18s} {'server':9s} {'cold ms':>10s} {'warm ms':>10s} "
          f"{'shifted ms':>10s} {'cold x':>7s} {'warm x':>7s} {'shift x':>7s}")
    for r in rows:
        ref = by.get((r["scenario"], "published"))
        sc = f"{ref['cold_ms'] / r['cold_ms']:.1f}" if ref and r["server"] == "ours" else ""
        sw = f"{ref['warm_ms'] / r['warm_ms']:.1f}" if ref and r["server"] == "ours" else ""
        ss = f"{ref['warm_shifted_ms'] / r['warm_shifted_ms']:.1f}" \
            if ref and r["server"] == "ours" and "warm_shifted_ms" in r else ""
        r["speedup_cold"] = float(sc) if sc else None
        r["speedup_warm"] = float(sw) if sw else None
        r["speedup_warm_shifted"] = float(ss) if ss else None
        shifted = f"{r['warm_shifted_ms']:10.1f}" if "warm_shifted_ms" in r else f"{'-':>10s}"
        print(f"{r['scenario']:18s} {r['server']:9s} {r['cold_ms']:10.1f} {r['warm_ms']:10.1f} "
              f"{shifted} {sc:>7s} {sw:>7s} {ss:>7s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "conditions": {"channels": args.channels, "hours": args.hours, "fs": args.fs,
                       "n_points": args.n_points, "cache_fs": args.cache_fs,
                       "repeat": args.repeat, "tile_cache_mb": args.cache_mb,
                       "cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_avg": os.getloadavg(),
                       "note": "shared machine; numbers are noisy"},
        "results": rows}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
