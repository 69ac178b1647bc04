"""Cancelled pans: a viewer that pans fast cancels each page it no longer wants.

    python benchmarks/cancel_bench.py [--rounds 3] [--checkout DIR]

On the benchmark recording (64 ch x 1 h at 256 Hz), with this server (or the
server of another checkout, ``--checkout``, for a before/after comparison):

* **idle**: a cold 10 s x 64 ch page on an otherwise idle server (median);
* **after 20 cancelled pans**: twenty cold pages requested in quick succession,
  each cancelled 10 ms after it was asked for, then one page kept: the time of
  the kept page, and its ratio to idle (goal: at most 1.5x);
* **cancellation latency**: a cold 10 min x 64 ch read cancelled 50 ms in; the
  time from the client's cancel until the server counts the read cancelled
  (``mef3io_server_reads_cancelled_total``, scraped every 2 ms; a server
  without that counter shows "n/a").

Every page is at a new offset (cold). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

S = 1_000_000
PAGE_S = 10


def _metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(mef3io_server_\w+) ([0-9.e+-]+)$", text, re.M)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkout", default=None,
                    help="run the server of this checkout (default: this one)")
    args = ap.parse_args()
    if args.checkout:
        bench.ROOT = Path(args.checkout).resolve()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.ensure_recordings()
    from mef3io_server.client import Mef3Client
    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
    from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc

    metrics_port = bench.free_port()
    srv = bench.Server("ours", env={"PREFETCH_AHEAD_WINDOWS": "0", "PREFETCH_BEHIND_WINDOWS": "0",
                                    "METRICS_PORT": str(metrics_port)})
    path = str(bench.rec_path("main_64ch_1h_256Hz"))
    offsets = iter(range(0, 3600 - 600, PAGE_S))   # every page cold: a new stretch
    out: dict = {"checkout": str(bench.ROOT), "idle_s": [], "kept_s": [], "ratio": [],
                 "cancel_latency_s": []}
    try:
        client = Mef3Client(srv.address)
        client.open_file(path)
        channel = grpc.insecure_channel(srv.address)
        stub = pb2_grpc.gRPCMef3ServerStub(channel)
        t0 = bench.T0

        def page(off_s: int, seconds: int = PAGE_S):
            return pb2.SignalRangeRequest(file_path=path, channel_names=[],
                                          start_uutc=t0 + off_s * S,
                                          end_uutc=t0 + (off_s + seconds) * S)

        def read(req) -> float:
            start = time.perf_counter()
            for _ in stub.GetSignalRange(req):
                pass
            return time.perf_counter() - start

        read(page(next(offsets)))                       # warm up the server itself
        for _ in range(args.rounds):
            idle = statistics.median(read(page(next(offsets))) for _ in range(3))
            calls = []
            for _ in range(20):
                call = stub.GetSignalRange(page(next(offsets)))
                calls.append(call)
                time.sleep(0.01)
                call.cancel()
            kept = read(page(next(offsets)))
            out["idle_s"].append(idle)
            out["kept_s"].append(kept)
            out["ratio"].append(kept / idle)
            time.sleep(1.0)                             # let the server settle
            # cancellation latency: a long cold read cancelled 50 ms in
            before = _metrics(metrics_port).get("mef3io_server_reads_cancelled_total")
            off = next(offsets)
            for _ in range(59):                         # 10 min: skip the next 59 pages
                next(offsets)
            call = stub.GetSignalRange(page(off, 600))
            time.sleep(0.05)
            cancelled_at = time.perf_counter()
            call.cancel()
            latency = None
            if before is not None:
                while time.perf_counter() - cancelled_at < 30:
                    if _metrics(metrics_port)["mef3io_server_reads_cancelled_total"] > before:
                        latency = time.perf_counter() - cancelled_at
                        break
                    time.sleep(0.002)
            out["cancel_latency_s"].append(latency)
            time.sleep(1.0)
        channel.close()
        client.shutdown()
    finally:
        srv.stop()
    out["machine"] = bench.machine()
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
