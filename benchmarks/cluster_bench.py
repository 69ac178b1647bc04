"""Replicas behind a balancer: hashing the recording's path against round-robin.

12 recordings x 16 clients, for 1, 2 and 3 replicas, side by side in one run:

* **hash**: HAProxy hashing ``x-mef3io-path`` consistently
  (``deploy/haproxy/haproxy.cfg`` as shipped): each recording on one replica;
* **round-robin**: HAProxy in TCP mode, ``balance roundrobin``: each client's
  connection goes to the next replica, as behind a Kubernetes Service or any
  L4 balancer, so every replica serves (and decodes, and caches) every
  recording its clients read.

Each client views 3 recordings (each recording is viewed by 4 clients),
paging through them 10 s x 16 channels at a time, twice. Per run: decoded
bytes (``tiles_decoded`` x tile size, prefetch included), tile cache hit rate
(``cache_hits / (hits + misses)``), reads per second and the p95 of a read,
from the replicas' own metrics and the clients' clocks. Every replica has
``TILE_CACHE_MB`` = 64: one replica cannot hold the 12 recordings (71 MB of
float32), two or three can, between them.

    .venv/bin/python benchmarks/cluster_bench.py [--quick]

prints a Markdown table and writes ``benchmarks/results/cluster.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(BENCH))
from local_cluster import LocalCluster, render_haproxy  # noqa: E402


N_RECORDINGS = 12
N_CLIENTS = 16
PER_CLIENT = 3                  # recordings each client views
CHANNELS = 16
FS = 256.0
MINUTES = 6
PAGE_S = 10
T0 = 1_600_000_000_000_000
TILE_S = 10
CACHE_MB = 64


def write_recordings(folder: Path, minutes: int) -> list[str]:
    import mef3io

    paths = []
    rng = np.random.default_rng(0)
    for k in range(N_RECORDINGS):
        p = folder / f"patient{k:02d}.mefd"
        n = int(minutes * 60 * FS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mef3io.Writer(str(p), overwrite=True, units="uV") as w:
                for c in range(CHANNELS):
                    x = np.cumsum(rng.standard_normal(n)) * 3.0
                    w.write(f"Ch{c + 1}", x, T0, fs=FS, precision=2)
        paths.append(str(p))
    return paths


def round_robin(port: int, replicas: list[str]) -> str:
    """HAProxy in TCP mode, round-robin per connection (what an L4 balancer does)."""
    servers = "\n".join(f"    server replica-{i + 1} {a} check inter 1s"
                        for i, a in enumerate(replicas))
    return f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
frontend mef3io
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
"""


def client_work(address, paths, idx, minutes, start, q):
    """One viewer, in its own process (its own connection, as 16 viewers would have)."""
    from mef3io_server.client import Mef3Client

    mine = [paths[(idx + k * (N_RECORDINGS // PER_CLIENT)) % N_RECORDINGS]
            for k in range(PER_CLIENT)]
    pages = [(T0 + s * 1_000_000, T0 + (s + PAGE_S) * 1_000_000)
             for s in range(0, minutes * 60, PAGE_S)]
    lat, errors = [], []
    with Mef3Client(address) as c:
        for p in mine:
            if not c.open_file(p)["file_opened"]:
                errors.append(f"open {p}")
        q.put(("ready", idx))
        start.wait()
        for _ in range(2):                               # two passes
            for p in mine:
                for a, b in pages:
                    t = time.perf_counter()
                    res = c.get_signal_range(p, None, a, b)
                    lat.append(time.perf_counter() - t)
                    if res["array"] is None:
                        errors.append(res["error_message"])
    q.put(("done", lat, errors))


def metric_sum(cluster, name: str) -> float:
    return sum(sum(r.metrics().get(name, {}).values()) for r in cluster.replicas)


def run_one(paths, data: Path, replicas: int, mode: str, minutes: int, run_dir: Path) -> dict:
    env = {"DATA_ROOTS": str(data), "TILE_CACHE_MB": str(CACHE_MB),
           "TILE_DURATION_S": str(TILE_S), "SHUTDOWN_GRACE_S": "2"}
    render = None if mode == "hash" else round_robin
    with LocalCluster(replicas, "haproxy", run_dir, env, render=render) as cluster:
        ctx = mp.get_context("spawn")
        q, start = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=client_work,
                             args=(cluster.address, paths, i, minutes, start, q))
                 for i in range(N_CLIENTS)]
        for p in procs:
            p.start()
        for _ in procs:
            assert q.get(timeout=120)[0] == "ready"
        t0 = time.perf_counter()
        start.set()
        lat: list[float] = []
        errors: list[str] = []
        for _ in procs:
            _, got, errs = q.get(timeout=1800)
            lat.extend(got)
            errors.extend(errs)
        wall = time.perf_counter() - t0
        for p in procs:
            p.join(60)
        time.sleep(0.5)                 # prefetch started by the last reads, counted too
        tiles = metric_sum(cluster, "mef3io_server_tiles_decoded_total")
        decode_s = metric_sum(cluster, "mef3io_server_decode_seconds_total")
        hits = metric_sum(cluster, "mef3io_server_cache_hits_total")
        misses = metric_sum(cluster, "mef3io_server_cache_misses_total")
        per_replica = [int(sum(r.metrics().get("mef3io_server_tiles_decoded_total",
                                               {}).values())) for r in cluster.replicas]
    tile_bytes = TILE_S * FS * 4
    return {"replicas": replicas, "mode": mode, "reads": len(lat), "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "decoded_mb": tiles * tile_bytes / 2**20, "decode_s": decode_s,
            "decode_mb_per_s": tiles * tile_bytes / 2**20 / decode_s if decode_s else None,
            "tiles_decoded_per_replica": per_replica,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
            "reads_per_s": len(lat) / wall, "mb_per_s": len(lat) * PAGE_S * FS * CHANNELS * 4
            / 2**20 / wall,
            "p50_ms": statistics.median(lat) * 1e3,
            "p95_ms": float(np.percentile(lat, 95)) * 1e3, "wall_s": wall}


def _span(values, fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) \
        else f"{format(lo, fmt)}-{format(hi, fmt)}"


def table(results: list[dict]) -> str:
    """One row per (replicas, balancing): ranges over the rounds."""
    out = ["| replicas | balancing | decoded (MB) | tiles decoded per replica (last round) "
           "| tile cache hit rate | reads/s | p50 (ms) | p95 (ms) |",
           "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for n in (1, 2, 3):
        for mode in ("hash", "round-robin"):
            rs = [r for r in results if r["replicas"] == n and r["mode"] == mode]
            if not rs:
                continue
            label = "header hash" if mode == "hash" else "round-robin (L4)"
            out.append(
                f"| {n} | {label} | {_span([r['decoded_mb'] for r in rs], '.0f')} "
                f"| {' / '.join(map(str, rs[-1]['tiles_decoded_per_replica']))} "
                f"| {_span([r['hit_rate'] * 100 for r in rs], '.0f')} % "
                f"| {_span([r['reads_per_s'] for r in rs], '.0f')} "
                f"| {_span([r['p50_ms'] for r in rs], '.1f')} "
                f"| {_span([r['p95_ms'] for r in rs], '.0f')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2-minute recordings (a smoke run)")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))    # stop the clusters on the way out
    ap.add_argument("--rounds", type=int, default=3, help="runs of each case, in turns")
    ap.add_argument("--out", default=str(BENCH / "results" / "cluster.json"))
    args = ap.parse_args()
    minutes = 2 if args.quick else MINUTES
    from bench import machine

    results = []
    with tempfile.TemporaryDirectory(prefix="mef3io-cluster-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        t = time.perf_counter()
        paths = write_recordings(data, minutes)
        print(f"{N_RECORDINGS} recordings of {CHANNELS} channels x {minutes} min written in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        for rnd in range(args.rounds):       # in turns: hash, round-robin, per count
            for replicas in (1, 2, 3):
                for mode in (("hash", "round-robin") if rnd % 2 == 0
                             else ("round-robin", "hash")):
                    r = run_one(paths, data, replicas, mode, minutes, Path(tmp) / "run")
                    r["round"] = rnd
                    print(f"  round {rnd + 1}, {replicas} x {mode}: {r['decoded_mb']:.0f} MB "
                          f"decoded, hit rate {r['hit_rate'] * 100:.1f} %, "
                          f"{r['reads_per_s']:.0f} reads/s, p95 {r['p95_ms']:.1f} ms, "
                          f"errors {r['errors']}", flush=True)
                    results.append(r)
    doc = {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "minutes": minutes, "recordings": N_RECORDINGS,
           "clients": N_CLIENTS, "channels": CHANNELS, "tile_cache_mb": CACHE_MB,
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print()
    print(f"{doc['date_utc']}, {doc['machine']['cpu']}, {doc['machine']['cores']} cores")
    print(table(results))


if __name__ == "__main__":
    main()
