"""Side-by-side benchmark: this server, the published mef3io-server 3.1.0, direct mef3io reads
and the bare gRPC transport, on the same recordings, driven by the same client, in one run.

Run from the repository root::

    python benchmarks/bench.py [--quick]

What it does (see docs/benchmarks.md for the results and how to read them):

* writes its recordings with ``mef3io.Writer`` once, cached in ``benchmarks/data/``;
* finds the published server: ``$MEF3IO_PUBLISHED_PYTHON`` (a python that has
  mef3io-server 3.1.0), else ``benchmarks/.published-venv`` (created with
  ``pip install mef3io-server==3.1.0`` when missing);
* makes sure ``/host_root -> /`` exists when ``/.dockerenv`` does (the published
  server prefixes ``/host_root`` to every path in a container), else skips it;
* starts every server fresh (subprocess, free port) for each group of scenarios,
  samples the peak resident memory of the server process and its children;
* writes ``benchmarks/results/bench.json``, ``docs/img/benchmarks.png`` and
  ``docs/benchmarks.md`` (table, chart, machine, date, command, and the
  measured design decisions from ``benchmarks/decisions.md``).

Times are seconds in the JSON and milliseconds in the table; uUTC everywhere
for windows, which are half-open ``[t0, t1)``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DATA = BENCH / "data"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
PUBLISHED_VENV = BENCH / ".published-venv"
PUBLISHED_VERSION = "3.1.0"
T0 = 1_600_000_000_000_000
S = 1_000_000  # uUTC per second
TILE_CACHE_MB = 512
OURS_ENV: dict = {}   # --ours-env KEY=VALUE (experiments; the published run uses defaults)
sys.path.insert(0, str(ROOT))

# name -> (channels, seconds, Hz); written once, reused by every run.
RECORDINGS = {
    "main_64ch_1h_256Hz": (64, 3600, 256.0),
    "wide_256ch_10min_256Hz": (256, 600, 256.0),
    "rate_64ch_5min_2kHz": (64, 300, 2048.0),
    "rate_64ch_20s_32kHz": (64, 20, 32768.0),
}


def rec_path(name: str) -> Path:
    return DATA / f"{name}.mefd"


def channel_names(n: int) -> list[str]:
    return [f"ch{i:03d}" for i in range(n)]


# ------------------------------------------------------------------ data

def ensure_recordings() -> None:
    import mef3io

    DATA.mkdir(parents=True, exist_ok=True)
    for name, (nch, secs, fs) in RECORDINGS.items():
        path = rec_path(name)
        done = path.with_suffix(".done")
        if done.exists() and path.exists():
            continue
        t = time.perf_counter()
        print(f"writing {path.name} ({nch} ch x {secs} s at {fs:g} Hz) ...", flush=True)
        if path.exists():
            shutil.rmtree(path)
        n = int(secs * fs)
        rng = np.random.default_rng(len(name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
                for ch in channel_names(nch):
                    data = np.cumsum(rng.standard_normal(n)) * 3.0
                    w.write(ch, data, T0, fs=fs, precision=2)
        done.write_text("ok\n")
        print(f"  done in {time.perf_counter() - t:.1f} s", flush=True)


# ------------------------------------------------------------------ servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def published_python() -> tuple[str | None, str]:
    """A python with mef3io-server 3.1.0, or (None, why not)."""
    if os.path.exists("/.dockerenv") and not os.path.exists("/host_root"):
        try:
            os.symlink("/", "/host_root")
        except OSError as e:
            return None, (f"/.dockerenv exists, so the published server prefixes /host_root to "
                          f"every path, and /host_root -> / could not be created ({e})")
    env_py = os.environ.get("MEF3IO_PUBLISHED_PYTHON")
    candidates = [env_py] if env_py else []
    candidates.append(str(PUBLISHED_VENV / "bin" / "python"))
    for py in candidates:
        if py and os.path.exists(py) and _has_published(py):
            return py, ""
    try:
        print(f"creating {PUBLISHED_VENV} with mef3io-server=={PUBLISHED_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PUBLISHED_VENV)], check=True)
        py = str(PUBLISHED_VENV / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", f"mef3io-server=={PUBLISHED_VERSION}"],
                       check=True)
        if _has_published(py):
            return py, ""
        return None, "the published venv was created but mef3io_server does not import"
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"installing mef3io-server=={PUBLISHED_VERSION} failed: {e}"


def _has_published(py: str) -> bool:
    r = subprocess.run([py, "-c", "import importlib.metadata as m; "
                        "print(m.version('mef3io-server'))"],
                       capture_output=True, text=True, cwd="/")
    return r.returncode == 0 and r.stdout.strip() == PUBLISHED_VERSION


class MemorySampler:
    """Peak RSS (bytes) of a process tree, sampled every 20 ms, per named scope."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peaks: dict[str, int] = {}
        self._scope = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def rss(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self):
        while not self._stop.wait(0.02):
            scope = self._scope
            if scope is not None:
                r = self.rss()
                if r > self.peaks.get(scope, 0):
                    self.peaks[scope] = r

    def scope(self, name: str):
        self._scope = name
        self.peaks.setdefault(name, self.rss())

    def stop(self):
        self._stop.set()
        self._t.join()


class Server:
    """A server subprocess on a free port, with its memory sampler."""

    def __init__(self, kind: str, python: str | None = None, env: dict | None = None):
        self.kind = kind
        self.port = free_port()
        self.address = f"localhost:{self.port}"
        e = dict(os.environ)
        e.update({"PORT": str(self.port), "TILE_CACHE_MB": str(TILE_CACHE_MB),
                  "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"})
        e.update(env or {})
        if kind == "ours":
            e.update(OURS_ENV)
            cmd, cwd = [sys.executable, "-m", "mef3io_server.server"], str(ROOT)
        elif kind == "published":
            e.pop("PYTHONPATH", None)
            cmd, cwd = [python, "-m", "mef3io_server.server"], "/"
        elif kind == "bare":
            cmd, cwd = [sys.executable, str(Path(__file__).resolve()), "--bare-server"], str(ROOT)
        else:
            raise ValueError(kind)
        self.log = open(RESULTS / f"server-{kind}.log", "a")
        self.proc = subprocess.Popen(cmd, env=e, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()
        self.mem = MemorySampler(self.proc.pid)

    def _wait_ready(self, timeout: float = 90.0):
        from mef3io_server.client import Mef3Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited ({self.proc.returncode}); "
                                   f"see {self.log.name}")
            try:
                with Mef3Client(self.address, timeout=2) as c:
                    c.list_open_files()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server did not come up in {timeout} s")

    def stop(self):
        self.mem.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------ bare transport

def bare_server_main() -> None:
    """A gRPC server answering GetSignalRange with pre-serialized chunks of the same size.

    Every chunk is the SignalChunk wire bytes our server would send (its encoder,
    built once per request shape), sent with an identity serializer: what is
    left is gRPC + the client, nothing else.
    """
    from concurrent import futures

    import grpc

    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
    from mef3io_server.server import tile_grid as tg

    from mef3io_server.server.config import Settings
    from mef3io_server.server.service import SignalChunkEncoder

    CHUNK = Settings().chunk_bytes      # this server's default chunking (CHUNK_BYTES)
    rates = {str(rec_path(n)): fs for n, (_, _, fs) in RECORDINGS.items()}
    cache: dict = {}

    def get_signal_range(req, ctx):
        fs = rates[req.file_path]
        nch = len(req.channel_names)
        n = tg.samples_in_window(req.start_uutc, req.end_uutc, fs)
        key = (req.file_path, tuple(req.channel_names), n)
        msgs = cache.get(key)
        if msgs is None:
            per = tg.chunk_samples(nch, CHUNK, multiple_of=tg.exact_period_samples(fs) or 1)
            if per * nch * 4 > CHUNK and per > 1:
                per = max(1, CHUNK // (nch * 4))
            enc = SignalChunkEncoder(req.file_path, req.channel_names, fs, n)
            msgs = [enc.encode(np.zeros((nch, j1 - j0), np.float32), req.start_uutc,
                               req.end_uutc, j0).data
                    for j0, j1 in tg.chunk_bounds(n, per)]
            cache[key] = msgs
        yield from msgs

    def open_file(req, ctx):
        return pb2.FileInfoResponse(file_path=req.file_path, file_opened=True)

    def list_open(req, ctx):
        return pb2.ListOpenFilesResponse()

    handlers = {
        "GetSignalRange": grpc.unary_stream_rpc_method_handler(
            get_signal_range, request_deserializer=pb2.SignalRangeRequest.FromString,
            response_serializer=lambda b: b),
        "OpenFile": grpc.unary_unary_rpc_method_handler(
            open_file, request_deserializer=pb2.OpenFileRequest.FromString,
            response_serializer=pb2.FileInfoResponse.SerializeToString),
        "ListOpenFiles": grpc.unary_unary_rpc_method_handler(
            list_open, request_deserializer=pb2.ListOpenFilesRequest.FromString,
            response_serializer=pb2.ListOpenFilesResponse.SerializeToString),
    }
    server = grpc.server(futures.ThreadPoolExecutor(16), options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("gRPCMef3Server", handlers),))
    server.add_insecure_port(f"[::]:{os.environ['PORT']}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.stop(0)


# ------------------------------------------------------------------ readers (same code for all)

class ServerReader:
    """The same client for every server: ``Mef3Client.get_signal_range``."""

    def __init__(self, address: str):
        from mef3io_server.client import Mef3Client

        self.client = Mef3Client(address)
        self.opened = set()

    def open(self, path: str) -> None:
        if path not in self.opened:
            info = self.client.open_file(path)
            if not info["file_opened"]:
                raise RuntimeError(f"open failed: {info['error_message']}")
            self.opened.add(path)

    def read(self, path: str, chans: list[str], t0: int, t1: int) -> np.ndarray:
        self.open(path)
        res = self.client.get_signal_range(path, chans, t0, t1)
        if res["array"] is None:
            raise RuntimeError(res["error_message"])
        return res["array"]

    def close(self):
        self.client.shutdown()


class DirectReader:
    """``mef3io.Reader.read(..., dtype="float32")``, one reader per recording, kept open."""

    def __init__(self, address=None):
        self.readers = {}

    def open(self, path: str):
        import mef3io

        r = self.readers.get(path)
        if r is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = self.readers[path] = mef3io.Reader(path, warn_declarations=False)
        return r

    def read(self, path: str, chans: list[str], t0: int, t1: int) -> np.ndarray:
        r = self.open(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return r.read(chans, int(t0), int(t1), dtype="float32")

    def close(self):
        for r in self.readers.values():
            r.close()


def make_reader(target: str, address: str | None):
    return DirectReader() if target == "direct" else ServerReader(address)


def timed(reader, path, chans, t0, t1) -> float:
    t = time.perf_counter()
    reader.read(path, chans, t0, t1)
    return time.perf_counter() - t


def spin(seconds: float) -> None:
    """Per-window work of a detector: burns one core for ``seconds``."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def _proc_worker(target, address, path, chans, windows, barrier, q, until, seed):
    """One client process: wait for the others, read windows, report latencies."""
    try:
        reader = make_reader(target, address)
        reader.open(path)                   # open and connect before the clock starts
        barrier.wait()
        lat = []
        nbytes = 0
        start = time.perf_counter()
        if until:
            rng = random.Random(seed)
            while time.perf_counter() - start < until:
                w = rng.choice(windows)
                t = time.perf_counter()
                a = reader.read(path, chans, *w)
                lat.append(time.perf_counter() - t)
                nbytes += a.nbytes
        else:
            for w in windows:
                t = time.perf_counter()
                a = reader.read(path, chans, *w)
                lat.append(time.perf_counter() - t)
                nbytes += a.nbytes
        q.put({"lat": lat, "bytes": nbytes, "start": start, "end": time.perf_counter()})
        reader.close()
    except Exception as e:  # noqa: BLE001
        q.put({"error": repr(e)})


def run_processes(target, address, path, chans, windows, n, until=0.0) -> dict:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc_worker,
                         args=(target, address, path, chans, windows, barrier, q, until, i))
             for i in range(n)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t = time.perf_counter()
    outs = [q.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise RuntimeError(f"client process failed: {errors[0]}")
    lat = [x for o in outs for x in o["lat"]]
    total = sum(o["bytes"] for o in outs)
    span = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {"wall_s": wall, "lat": lat, "bytes": total, "mb_s": total / 2**20 / span,
            "p99_s": float(np.percentile(lat, 99)), "median_s": statistics.median(lat)}


# ------------------------------------------------------------------ scenarios

class _Skip(Exception):
    pass


MAIN = "main_64ch_1h_256Hz"
CH64 = channel_names(64)


def win(sec: float, length: float = 10.0) -> tuple[int, int]:
    return T0 + int(sec * S), T0 + int((sec + length) * S)


def summary(lat: list[float]) -> dict:
    return {"median_s": statistics.median(lat), "p95_s": float(np.percentile(lat, 95)),
            "n": len(lat), "all_s": lat}


def scen_latency(readers: dict, q: bool) -> dict:
    """Warm and cold 10 s x 64 ch on the main recording, every target interleaved.

    ``readers``: target name -> reader ("bare" only reads warm). This VM's speed
    drifts by up to 2x within minutes (benchmarks/decisions.md), so the targets
    take turns read by read instead of one after the other: every ratio compares
    reads made in the same seconds. The order rotates each round; a cold read
    is followed by a pause for its server's prefetch to end before the next
    target's cold read.
    """
    path = str(rec_path(MAIN))
    names = list(readers)
    out = {n: {} for n in names}
    full = [n for n in names if n != "bare"]
    for n in full:
        readers[n].read(path, CH64, *win(3500))   # workers up, file open
    time.sleep(0.5)
    cold = {n: [] for n in full}
    for i in range(5 if q else 12):
        for j in range(len(full)):
            n = full[(i + j) % len(full)]
            time.sleep(0.4)                # let the previous read's prefetch finish
            cold[n].append(timed(readers[n], path, CH64, *win(100 + i * 270)))
    direct_ref = DirectReader().read(path, CH64, *win(1800))
    for n in names:
        if n in cold:
            out[n]["cold"] = summary(cold[n])
        ref = readers[n].read(path, CH64, *win(1800))
        out[n]["exact"] = None if n in ("direct", "bare") else \
            bool(np.array_equal(ref, direct_ref, equal_nan=True))
    time.sleep(0.5)
    warm = {n: [] for n in names}
    for i in range(30 if q else 100):
        for j in range(len(names)):
            n = names[(i + j) % len(names)]
            warm[n].append(timed(readers[n], path, CH64, *win(1800)))
    for n in names:
        out[n]["warm"] = summary(warm[n])
    return out


def scen_paging(reader, q: bool) -> dict:
    path = str(rec_path(MAIN))
    reader.read(path, CH64, *win(3500))
    time.sleep(0.5)
    nopause = [timed(reader, path, CH64, *win(1000 + 10 * i)) for i in range(30)]
    time.sleep(0.5)
    pause = []
    for i in range(20):
        pause.append(timed(reader, path, CH64, *win(2000 + 10 * i)))
        time.sleep(0.1)
    after = nopause[1:]
    return {"nopause": {**summary(after), "pages_per_s": len(after) / sum(after),
                        "first_s": nopause[0]},
            "pause100ms": {**summary(pause[1:]), "first_s": pause[0]}}


def scen_single_pass(reader, work_s: float, q: bool) -> dict:
    path = str(rec_path(MAIN))
    reader.open(path)
    n = 20 if q else 60
    t = time.perf_counter()
    for i in range(n):
        reader.read(path, CH64, *win(60 * i, 60))
        if work_s:
            spin(work_s)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "windows": n, "recording_s_per_s": 60 * n / wall}


def scen_scaling(reader, q: bool) -> dict:
    cases = [
        ("channels", 16, "wide_256ch_10min_256Hz", 16, 60, 10),
        ("channels", 64, "wide_256ch_10min_256Hz", 64, 200, 10),
        ("channels", 256, "wide_256ch_10min_256Hz", 256, 400, 10),
        ("window_s", 1, MAIN, 64, 300, 1),
        ("window_s", 10, MAIN, 64, 900, 10),
        ("window_s", 60, MAIN, 64, 1500, 60),
        ("window_s", 600, MAIN, 64, 2400, 600),
        ("rate_hz", 256, MAIN, 64, 1000, 10),
        ("rate_hz", 2048, "rate_64ch_5min_2kHz", 64, 150, 10),
        ("rate_hz", 32768, "rate_64ch_20s_32kHz", 64, 5, 10),
    ]
    out = []
    for name in RECORDINGS:
        reader.open(str(rec_path(name)))
    for axis, value, rec, nch, at, length in cases:
        path = str(rec_path(rec))
        chans = channel_names(nch)
        w = win(at, length)
        time.sleep(0.3)
        cold = timed(reader, path, chans, *w)
        # Warm = in the cache and the server idle: the cold read's prefetch (up to
        # two more windows, ~1 s of decode for 10 min x 64 ch) is given time to end.
        time.sleep(0.3 + 2.5e-5 * length * nch * RECORDINGS[rec][2] / 256)
        warm = statistics.median([timed(reader, path, chans, *w) for _ in range(3 if q else 7)])
        out.append({"axis": axis, "value": value, "cold_s": cold, "warm_s": warm,
                    "mb": nch * (length * RECORDINGS[rec][2]) * 4 / 2**20})
    return out


def with_reader(target, address, fn, *args):
    r = make_reader(target, address)
    try:
        return fn(r, *args)
    finally:
        r.close()


def direct_decode_s(window_s: float = 60) -> float:
    r = DirectReader()
    path = str(rec_path(MAIN))
    ts = [timed(r, path, CH64, *win(60 * i, window_s)) for i in range(5)]
    r.close()
    return statistics.median(ts)


def latency_group(res: dict, targets: list, server, quick: bool) -> None:
    """The latency scenarios: fresh servers (ours, published, bare) started together,
    read in turns with direct mef3io (see :func:`scen_latency`)."""
    print("  latency: " + ", ".join(targets + ["bare", "direct"]) + " interleaved ...", flush=True)
    srvs = {}
    readers = {}
    try:
        for kind in targets + ["bare"]:
            srvs[kind] = server(kind)
            srvs[kind].mem.scope("latency")
            readers[kind] = ServerReader(srvs[kind].address)
        readers["direct"] = DirectReader()
        got = scen_latency(readers, quick)
        for kind, r in got.items():
            res[kind]["latency"] = r
        for kind in targets:
            res["memory"].setdefault("latency", {})[kind] = srvs[kind].mem.peaks.get("latency", 0)
    finally:
        for r in readers.values():
            r.close()
        for srv in srvs.values():
            srv.stop()


def run_all(quick: bool, published_py: str | None, only=()) -> dict:
    targets = ["ours"] + (["published"] if published_py else [])
    res: dict = {"ours": {}, "published": {}, "direct": {}, "bare": {}, "memory": {}}

    def server(kind):
        return Server(kind, python=published_py)

    def group(name, fn, *args, kinds=targets, direct=True):
        if only and name not in only:
            return
        for kind in kinds:
            print(f"  {name}: {kind} ...", flush=True)
            srv = server(kind)
            try:
                srv.mem.scope(name)
                res[kind][name] = with_reader(kind, srv.address, fn, *args)
                res["memory"].setdefault(name, {})[kind] = srv.mem.peaks.get(name, 0)
            finally:
                srv.stop()
        if direct:
            print(f"  {name}: direct ...", flush=True)
            res["direct"][name] = with_reader("direct", None, fn, *args)

    if not only or "latency" in only:
        latency_group(res, targets, server, quick)
    group("paging", scen_paging, quick)
    work = direct_decode_s()
    res["work_s"] = work
    group("single_pass", scen_single_pass, 0.0, quick)
    group("single_pass_work", scen_single_pass, work, quick)

    path = str(rec_path(MAIN))
    tools_windows = [win(600 + 10 * i) for i in range(20)]
    clients_windows = [win(10 * i) for i in range(0, 355)]
    def processes_group(name, windows, n, until=0.0):
        for kind in (targets + ["direct"]) if not only or name in only else []:
            print(f"  {name}: {kind} ...", flush=True)
            srv = None if kind == "direct" else server(kind)
            try:
                if srv:
                    srv.mem.scope(name)
                out = run_processes(kind, srv and srv.address, path, CH64, windows, n, until)
                res[kind][name] = {k: v for k, v in out.items() if k != "lat"}
                if srv:
                    res["memory"].setdefault(name, {})[kind] = srv.mem.peaks[name]
            finally:
                if srv:
                    srv.stop()

    processes_group("many_tools", tools_windows, 4)
    processes_group("many_clients", clients_windows, 16, 5.0 if quick else 15.0)
    group("scaling", scen_scaling, quick)
    overview_group(res, targets, published_py, quick, only)
    return res


OVERVIEW_SCENARIOS = ("overview_native", "overview_cache_fs", "envelope_24h")


def overview_group(res: dict, targets, published_py, quick: bool, only=()) -> None:
    """Issue 4's viewer scenarios (benchmarks/overview_bench.py): 1 h of 64 channels at
    ``n_points=2000`` (native source, and a ``cache_fs=4`` session), and the 24 h envelope,
    cold (first call on a fresh server) and warm, this server and the published one."""
    if only and "overview" not in only:
        return
    from types import SimpleNamespace

    import overview_bench as ob

    print("  overview: writing / finding the 24 h recording ...", flush=True)
    path = ob.make_dataset(DATA / "overview_64ch_24h_256Hz.mefd", 64, 24.0, 256.0)
    ob.PUBLISHED_PYTHON = published_py or ob.PUBLISHED_PYTHON
    args = SimpleNamespace(cache_mb=TILE_CACHE_MB, cache_fs=4.0, channels=64, n_points=2000,
                           settle=3.0, repeat=3 if quick else 5)
    out = res.setdefault("overview", {})
    for name in OVERVIEW_SCENARIOS:
        for kind in targets:
            print(f"  overview {name}: {kind} ...", flush=True)
            out.setdefault(name, {})[kind] = ob.run_scenario(kind, name, str(path), args)


# ------------------------------------------------------------------ report

def ratio(a, b):
    return a / b if a and b else None


def goals(res: dict) -> list[dict]:
    o, p, d, b = res["ours"], res["published"], res["direct"], res["bare"]
    g = []

    def add(name, value, target, ok, detail):
        g.append({"goal": name, "value": value, "target": target, "met": ok, "detail": detail})

    ow = o["latency"]["warm"]["median_s"]
    bw = b.get("latency", {}).get("warm", {}).get("median_s")
    pw = p.get("latency", {}).get("warm", {}).get("median_s")
    r = ratio(ow, bw)
    add("warm 10 s x 64 ch vs bare transport", r, "<= 2.5x", r is not None and r <= 2.5,
        f"ours {ow*1e3:.2f} ms, bare {bw*1e3:.2f} ms" if bw else "")
    r = ratio(pw, ow)
    add("warm 10 s x 64 ch speed-up vs published", r, ">= 3x", r is not None and r >= 3,
        f"published {pw*1e3:.2f} ms" if pw else "published not run")
    oc = o["latency"]["cold"]["median_s"]
    dc = d["latency"]["cold"]["median_s"]
    pc = p.get("latency", {}).get("cold", {}).get("median_s")
    r = ratio(oc, dc)
    add("cold 10 s x 64 ch vs direct mef3io", r, "<= 1.5x", r is not None and r <= 1.5,
        f"ours {oc*1e3:.1f} ms, direct {dc*1e3:.1f} ms")
    r = ratio(pc, oc)
    add("cold 10 s x 64 ch speed-up vs published", r, ">= 1x", r is not None and r >= 1,
        f"published {pc*1e3:.1f} ms" if pc else "published not run")
    op = o["paging"]["nopause"]["pages_per_s"]
    pp = p.get("paging", {}).get("nopause", {}).get("pages_per_s")
    r = ratio(op, pp)
    add("paging, no pause: pages/s vs published", r, ">= 2x", r is not None and r >= 2,
        f"ours {op:.1f}/s, published {pp:.1f}/s" if pp else f"ours {op:.1f}/s")
    p95 = o["paging"]["pause100ms"]["p95_s"]
    add("paging, 100 ms pause: p95 after the first page (ms)", p95 * 1e3, "<= 5 ms",
        p95 <= 0.005, "")
    for key, tgt, lim in (("single_pass", ">= 0.9x", 0.9), ("single_pass_work", ">= 1.3x", 1.3)):
        r = ratio(o[key]["recording_s_per_s"], d[key]["recording_s_per_s"])
        add(f"{key.replace('_', ' ')}: throughput vs direct", r, tgt, r is not None and r >= lim,
            f"ours {o[key]['wall_s']:.2f} s, direct {d[key]['wall_s']:.2f} s")
    r = ratio(d["many_tools"]["wall_s"], o["many_tools"]["wall_s"])
    add("many tools: speed-up vs 4 direct readers", r, ">= 3x", r is not None and r >= 3,
        f"ours {o['many_tools']['wall_s']:.2f} s, direct {d['many_tools']['wall_s']:.2f} s")
    ov = res.get("overview", {})
    for name, label in (("overview_native", "overview 1 h x 64 ch, n_points=2000"),
                        ("envelope_24h", "envelope 24 h x 64 ch")):
        for phase in ("cold", "warm"):
            ours = ov.get(name, {}).get("ours", {}).get(f"{phase}_ms")
            pub = ov.get(name, {}).get("published", {}).get(f"{phase}_ms")
            if ours is None:
                continue
            r = ratio(pub, ours)
            add(f"{label}, {phase}: speed-up vs published", r, ">= 2x",
                r is not None and r >= 2,
                f"ours {ours:.1f} ms, published {pub:.1f} ms" if pub else "published not run")
    ow_ms = ov.get("overview_native", {}).get("ours", {}).get("warm_ms")
    if ow_ms is not None:
        add("overview 1 h x 64 ch warm (ms)", ow_ms, "<= 20 ms", ow_ms <= 20, "")
    peak = max((v.get("ours", 0) for v in res["memory"].values()), default=0) / 2**20
    add("memory: peak server RSS (MB)", peak, f"<= {TILE_CACHE_MB + 250} MB",
        peak <= TILE_CACHE_MB + 250, f"TILE_CACHE_MB={TILE_CACHE_MB}")
    return g


def rows(res: dict) -> list[tuple]:
    """(scenario, metric, ours, published, direct, bare) with ms / MB/s / x."""
    o, p, d, b = res["ours"], res["published"], res["direct"], res["bare"]

    def get(dct, *keys):
        for k in keys:
            if not isinstance(dct, dict) or k not in dct:
                return None
            dct = dct[k]
        return dct

    def ms(v):
        return None if v is None else v * 1e3

    out = []
    for sc, m, keys in (("warm 10 s x 64 ch", "median ms", ("latency", "warm", "median_s")),
                        ("warm 10 s x 64 ch", "p95 ms", ("latency", "warm", "p95_s")),
                        ("cold 10 s x 64 ch", "median ms", ("latency", "cold", "median_s")),
                        ("paging, no pause", "median ms/page", ("paging", "nopause", "median_s")),
                        ("paging, 100 ms pause", "median ms", ("paging", "pause100ms", "median_s")),
                        ("paging, 100 ms pause", "p95 ms", ("paging", "pause100ms", "p95_s")),
                        ("single pass, no work", "wall s x1000", ("single_pass", "wall_s")),
                        ("single pass, with work", "wall s x1000", ("single_pass_work", "wall_s")),
                        ("many tools (4 procs)", "wall s x1000", ("many_tools", "wall_s")),
                        ("many clients (16 procs)", "p99 ms", ("many_clients", "p99_s"))):
        out.append((sc, m, ms(get(o, *keys)), ms(get(p, *keys)), ms(get(d, *keys)),
                    ms(get(b, *keys))))
    out.append(("paging, no pause", "pages/s", get(o, "paging", "nopause", "pages_per_s"),
                get(p, "paging", "nopause", "pages_per_s"),
                get(d, "paging", "nopause", "pages_per_s"), None))
    out.append(("many clients (16 procs)", "MB/s", get(o, "many_clients", "mb_s"),
                get(p, "many_clients", "mb_s"), get(d, "many_clients", "mb_s"), None))
    for kind_name, kind in (("cold", "cold_s"), ("warm", "warm_s")):
        for i, case in enumerate(o.get("scaling", [])):
            pv = p.get("scaling", [None] * (i + 1))[i] if p.get("scaling") else None
            dv = d.get("scaling", [None] * (i + 1))[i] if d.get("scaling") else None
            out.append((f"scaling {case['axis']}={case['value']}", f"{kind_name} ms",
                        case[kind] * 1e3, pv and pv[kind] * 1e3, dv and dv[kind] * 1e3, None))
    for name, sc in (("overview_native", "overview 1 h x 64 ch, n_points=2000"),
                     ("overview_cache_fs", "overview, cache_fs=4 session"),
                     ("envelope_24h", "envelope 24 h x 64 ch")):
        cell = res.get("overview", {}).get(name, {})
        if not cell:
            continue
        for m, key in (("cold ms", "cold_ms"), ("warm ms", "warm_ms"),
                       ("shifted ms", "warm_shifted_ms")):
            ours = cell.get("ours", {}).get(key)
            if ours is not None:
                out.append((sc, m, ours, cell.get("published", {}).get(key), None, None))
    for sc, v in res["memory"].items():
        out.append((f"memory: {sc}", "peak RSS MB", v.get("ours", 0) / 2**20,
                    v.get("published") and v["published"] / 2**20, None, None))
    return out


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table_md(res: dict) -> str:
    lines = ["| scenario | metric | this server | published 3.1.0 | direct mef3io | bare transport "
             "| published / this | direct / this |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for sc, m, o, p, d, b in rows(res):
        higher_better = m in ("pages/s", "MB/s")
        rp = (ratio(o, p) if higher_better else ratio(p, o))
        rd = (ratio(o, d) if higher_better else ratio(d, o))
        lines.append(f"| {sc} | {m} | {fmt(o)} | {fmt(p)} | {fmt(d)} | {fmt(b)} | "
                     f"{fmt(rp) + 'x' if rp else '-'} | {fmt(rd) + 'x' if rd else '-'} |")
    return "\n".join(lines)


def goals_md(gs: list[dict]) -> str:
    lines = ["| goal | target | measured | met | detail |", "|---|---|---:|---|---|"]
    for g in gs:
        v = g["value"]
        lines.append(f"| {g['goal']} | {g['target']} | {fmt(v) if v is not None else '-'} | "
                     f"{'yes' if g['met'] else 'NO'} | {g['detail']} |")
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    labels, series = [], {"this server": [], "published 3.1.0": [], "direct mef3io": [],
                          "bare transport": []}
    for sc, m, o, p, d, b in rows(res):
        if sc.startswith("scaling") or sc.startswith("memory") or m in ("pages/s", "MB/s"):
            continue
        labels.append(f"{sc}\n{m}")
        for k, v in zip(series, (o, p, d, b)):
            series[k].append(v or 0)
    ax = axes[0]
    y = np.arange(len(labels))
    h = 0.2
    for i, (k, vals) in enumerate(series.items()):
        ax.barh(y + (i - 1.5) * h, vals, h, label=k)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (lower is better; log)")
    ax.legend(fontsize=7)
    ax.set_title("scenarios")
    for ax, kind in ((axes[1], "cold_s"), (axes[2], "warm_s")):
        for name, src in (("this server", res["ours"]), ("published 3.1.0", res["published"]),
                          ("direct mef3io", res["direct"])):
            sc = src.get("scaling")
            if not sc:
                continue
            xs = [c["mb"] for c in sc]
            ys = [c[kind] * 1e3 for c in sc]
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array(ys)[order], "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MB of float32 per read (channels x window x rate)")
        ax.set_ylabel("ms")
        ax.set_title(f"scaling, {kind[:-2]} reads")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        import psutil
        mem = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001
        pass
    import grpc
    import mef3io
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "grpcio": grpc.__version__, "mef3io": getattr(mef3io, "__version__", "?"),
            "load_before": os.getloadavg()}


def load_during(m: dict) -> str:
    """The load average seen during the run (1-minute, sampled every 5 s), for the docs."""
    ld = m.get("load_during")
    if not ld or not ld.get("samples"):
        return ""
    return (f"; during the run (1-minute average, every 5 s): {ld['min']:.1f} to "
            f"{ld['max']:.1f}, mean {ld['mean']:.1f}; after: "
            f"{', '.join(f'{x:.2f}' for x in m['load_after'])}")


def write_docs(res: dict, gs: list[dict], cmd: str) -> None:
    m = res["machine"]
    decisions = (BENCH / "decisions.md").read_text() if (BENCH / "decisions.md").exists() else ""
    skipped = f"\n> The published column is empty: {res['published_skipped']}\n" \
        if res.get("published_skipped") else ""
    text = f"""# Benchmarks

Generated by `benchmarks/bench.py`; do not edit by hand (the design decisions
section comes from `benchmarks/decisions.md`).

- **Command:** `{cmd}`
- **Date:** {res['date']} (run took {res['run_s']:.0f} s)
- **Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM; {m['platform']};
  Python {m['python']}, grpcio {m['grpcio']}, mef3io {m['mef3io']}.
  Load average before the run: {', '.join(f'{x:.2f}' for x in m['load_before'])}{load_during(m)}{
  '' if m['load_before'][0] < 0.5 else chr(10) + '  (the machine was shared with other work: figures are noisy).'}
- **Mode:** {'quick' if res['quick'] else 'full'}; `TILE_CACHE_MB={TILE_CACHE_MB}` for both servers,
  every other setting at its default. Every server is started fresh for each group of
  scenarios; all servers are driven by the same client (`Mef3Client.get_signal_range`).
  The warm and cold rows read every target in turns, read by read (the servers of that
  group run side by side), so their ratios compare reads made in the same seconds; the
  other groups run one target after the other.
- **Recording:** 64 channels x 1 h at 256 Hz written by `mef3io.Writer` (random walks,
  precision 2); scaling also uses 256 ch x 10 min at 256 Hz, 64 ch x 5 min at 2 kHz and
  64 ch x 20 s at 32 kHz; the overview rows use 64 ch x 24 h at 256 Hz (random walks with
  spikes, `benchmarks/overview_bench.py`; cold = first call on a fresh server).
- **Bare transport:** a gRPC server in the benchmark answering `GetSignalRange` with
  pre-serialized `SignalChunk` messages of the same size and chunking: the floor for gRPC plus
  the client.
- **Direct mef3io:** `mef3io.Reader.read(..., dtype="float32")` in the benchmark process
  (or, for "many tools"/"many clients", in as many processes), reader opened once.
- **Per-window work** (single pass): {res['work_s']*1e3:.0f} ms of CPU per 60 s window,
  the median direct decode time of such a window.
- **Long and wide recordings** (open time, memory after open, idle CPU, up to 64 ch x 7 days
  and 1024 ch): [benchmarks-long.md](benchmarks-long.md), from `benchmarks/long_recordings_bench.py`.
{skipped}
## Goals

{goals_md(gs)}

## Results (medians unless said otherwise)

{table_md(res)}

"Published / this" and "direct / this" are how many times faster this server is
(> 1: this server wins). Single pass, many tools: wall time of the whole job.

![benchmarks](img/benchmarks.png)

Correctness: the warm window served by each server was compared with a direct
read: this server {'exact' if res['ours']['latency'].get('exact') else 'NOT EXACT'}{
    ', published ' + ('exact' if res['published'].get('latency', {}).get('exact') else 'NOT EXACT')
    if res['published'].get('latency') else ''}.

{decisions}
"""
    (DOCS).mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes)")
    ap.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-published", action="store_true", help="skip the published server")
    ap.add_argument("--only", default="", help="comma-separated groups (latency, paging, "
                    "single_pass, single_pass_work, many_tools, many_clients, scaling, "
                    "overview); "
                    "results go to bench-partial.json, docs are not rewritten")
    ap.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for this server (experiments)")
    ap.add_argument("--docs-only", action="store_true",
                    help="redraw the chart and docs/benchmarks.md from results/bench.json")
    args = ap.parse_args()
    if args.docs_only:
        res = json.loads((RESULTS / "bench.json").read_text())
        chart(res, DOCS / "img" / "benchmarks.png")
        write_docs(res, res["goals"], res.get("command", "python benchmarks/bench.py"))
        return
    OURS_ENV.update(dict(e.split("=", 1) for e in args.ours_env))
    if args.bare_server:
        bare_server_main()
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for f in RESULTS.glob("server-*.log"):
        f.unlink()
    start = time.perf_counter()
    ensure_recordings()
    py, why = (None, "skipped with --no-published") if args.no_published else published_python()
    if py is None:
        print(f"published server skipped: {why}", flush=True)
    mach = machine()
    only = tuple(x for x in args.only.split(",") if x)
    loads: list[float] = []             # 1-minute load average, sampled every 5 s
    sampling = threading.Event()

    def sample_load():
        while not sampling.wait(5.0):
            loads.append(os.getloadavg()[0])
    threading.Thread(target=sample_load, daemon=True).start()
    try:
        res = run_all(args.quick, py, only)
    finally:
        sampling.set()
    mach["load_during"] = {"min": min(loads, default=0.0), "max": max(loads, default=0.0),
                           "mean": sum(loads) / max(1, len(loads)), "samples": len(loads)}
    mach["load_after"] = os.getloadavg()
    res.update({"machine": mach, "quick": args.quick, "published_python": py,
                "published_skipped": why, "run_s": time.perf_counter() - start,
                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
    if only:
        (RESULTS / "bench-partial.json").write_text(json.dumps(res, indent=1, default=float))
        def strip(v):
            if isinstance(v, dict):
                return {k: strip(x) for k, x in v.items() if k != "all_s"}
            if isinstance(v, list):
                return [strip(x) for x in v]
            return round(v, 4) if isinstance(v, float) else v
        print(json.dumps(strip({k: v for k, v in res.items()
                                if k in ("ours", "published", "direct", "bare", "memory", "overview")})))
        return
    gs = goals(res)
    res["goals"] = gs
    res["command"] = "python benchmarks/bench.py" + (" --quick" if args.quick else "") + \
        (" --no-published" if args.no_published else "")
    (RESULTS / "bench.json").write_text(json.dumps(res, indent=1, default=float))
    chart(res, DOCS / "img" / "benchmarks.png")
    cmd = "python benchmarks/bench.py" + (" --quick" if args.quick else "") + \
        (" --no-published" if args.no_published else "")
    write_docs(res, gs, cmd)
    print()
    print(table_md(res))
    print()
    print(goals_md(gs))
    print(f"\nwrote {RESULTS / 'bench.json'}, {DOCS / 'img' / 'benchmarks.png'}, "
          f"{DOCS / 'benchmarks.md'} in {res['run_s']:.0f} s")


if __name__ == "__main__":
    main()
