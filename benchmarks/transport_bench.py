"""Transport only: what gRPC costs to carry one read's samples, by chunk size.

A bare gRPC server (a subprocess) answers ``GetSignalRange`` with pre-made
``SignalChunk`` messages of ``--mb`` MB of float32 (64 channels) cut into
chunks of at most ``CHUNK`` bytes; the client is ``Mef3Client``, as in
benchmarks/bench.py. For each chunk size it prints the median latency and the
CPU time per read of the server and of the client process, and writes
``benchmarks/results/transport.json``. This is how ``CHUNK_BYTES``'s default
was chosen (docs/benchmarks.md, "Design decisions").

    python benchmarks/transport_bench.py [--mb 3.75] [--reads 60] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_CHANNELS = 64


def serve(port: int, mb: float, chunk_bytes: int) -> None:
    import grpc

    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2

    n = int(mb * 2**20 / 4 / N_CHANNELS)
    per = max(1, chunk_bytes // (N_CHANNELS * 4))
    names = [f"c{i}" for i in range(N_CHANNELS)]
    msgs = [pb2.SignalChunk(file_path="x", array_bytes=bytes((min(n, j0 + per) - j0) * N_CHANNELS * 4),
                            dtype="float32", shape=[N_CHANNELS, min(n, j0 + per) - j0], fs=256.0,
                            channel_names=names, total_samples=n,
                            sample_offset=j0).SerializeToString()
            for j0 in range(0, n, per)]

    def get_signal_range(request, context):
        yield from msgs

    handlers = {"GetSignalRange": grpc.unary_stream_rpc_method_handler(
        get_signal_range, request_deserializer=pb2.SignalRangeRequest.FromString,
        response_serializer=lambda b: b)}
    server = grpc.server(futures.ThreadPoolExecutor(8),
                         options=[("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("gRPCMef3Server", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()


def measure(mb: float, chunk_bytes: int, reads: int) -> dict:
    import psutil

    from mef3io_server.client import Mef3Client

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(mb),
                             str(chunk_bytes)])
    try:
        client = Mef3Client(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get_signal_range("x", ["c0"], 0, 1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for _ in range(3):
            client.get_signal_range("x", ["c0"], 0, 1)
        server, me = psutil.Process(proc.pid), psutil.Process()
        s0, c0 = server.cpu_times(), me.cpu_times()
        lat = []
        for _ in range(reads):
            t = time.perf_counter()
            res = client.get_signal_range("x", ["c0"], 0, 1)
            lat.append(time.perf_counter() - t)
        s1, c1 = server.cpu_times(), me.cpu_times()
        assert res["shape"][0] == N_CHANNELS
        client.shutdown()
        return {"chunk_bytes": chunk_bytes, "median_s": statistics.median(lat),
                "server_cpu_s": (s1.user + s1.system - s0.user - s0.system) / reads,
                "client_cpu_s": (c1.user + c1.system - c0.user - c0.system) / reads}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=3.75, help="MB per read (3.75: 64 ch x 60 s)")
    ap.add_argument("--reads", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="repeat every size, interleaved")
    ap.add_argument("--chunks", default="262144,524288,1048576,2500000,8388608")
    args = ap.parse_args()
    sizes = [int(x) for x in args.chunks.split(",")]
    runs = {c: [] for c in sizes}
    for _ in range(args.rounds):
        for c in sizes:
            runs[c].append(measure(args.mb, c, args.reads))
    rows = []
    print(f"{args.mb} MB per read, {args.reads} reads x {args.rounds} rounds (median of rounds)")
    print(f"{'chunk bytes':>12} {'chunks':>6} {'latency ms':>11} {'server CPU ms':>14} "
          f"{'client CPU ms':>14}")
    for c in sizes:
        med = {k: statistics.median(r[k] for r in runs[c])
               for k in ("median_s", "server_cpu_s", "client_cpu_s")}
        n = -(-int(args.mb * 2**20) // (c - c % (N_CHANNELS * 4)))
        rows.append({"chunk_bytes": c, "chunks": n, **med, "rounds": runs[c]})
        print(f"{c:>12} {n:>6} {med['median_s'] * 1e3:>11.2f} {med['server_cpu_s'] * 1e3:>14.2f} "
              f"{med['client_cpu_s'] * 1e3:>14.2f}")
    out = ROOT / "benchmarks" / "results" / "transport.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"mb": args.mb, "reads": args.reads, "rows": rows,
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
