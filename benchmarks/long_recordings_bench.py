"""Long and wide recordings: open time, memory after open, reads, overview and idle CPU of this
server, the published mef3io-server 3.1.0 and direct mef3io, side by side in one run.

Run from the repository root (with this checkout's ``.venv``)::

    python benchmarks/long_recordings_bench.py [--quick] [--only open,memory,reads,overview,idle]
        [--sizes 64ch_1h,64ch_7d] [--no-published] [--ref PATH] [--label TEXT]

What it measures, per recording size (64 ch x 1 h / 24 h / 7 days and 16 / 256 / 1024 ch x 1 h,
all at 256 Hz):

* **open**: the time of ``OpenFile`` on a fresh server process (started, ready, then the page
  cache dropped, then the open timed), median of 3 runs; direct = ``mef3io.Reader(path)`` in a
  fresh process, timed the same way;
* **memory**: the server's resident memory (VmRSS of the process and its children) after that
  open, absolute and minus the same figure just before it; and the growth per open 8-channel
  recording while 50 small ones are opened;
* **reads**: 10 s x all channels in the middle of the recording, cold (page cache dropped, fresh
  server) and warm (the same window, one warm-up, then the median of 20 repeats);
* **overview**: 1 h of all channels at ``n_points`` points per channel (cold, then warm);
* **idle**: the server's CPU (utime + stime from /proc/<pid>/stat, children included) over 30 s
  with one recording open, then with 50 small ones open as well.

The recordings are written once with ``mef3io.Writer.write_int32`` (int32 counts of filtered
noise, mef3io's default 10 s blocks at 256 Hz) into ``benchmarks/data/long/`` and reused.
Results: ``benchmarks/results/long_recordings.json`` and ``docs/benchmarks-long.md``
(partial runs with ``--only`` or ``--sizes`` write ``long_recordings-partial.json`` only).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DATA = BENCH / "data" / "long"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
PUBLISHED_VENV = BENCH / ".published-venv"
PUBLISHED_VERSION = "3.1.0"
T0 = 1_600_000_000_000_000
S = 1_000_000
FS = 256.0
HOUR = 3600
DAY = 24 * HOUR

# name -> (channels, seconds); all at FS.
SIZES = {                       # in the order of the tables: length, then channel count
    "64ch_1h": (64, HOUR),
    "64ch_24h": (64, DAY),
    "64ch_7d": (64, 7 * DAY),
    "16ch_1h": (16, HOUR),
    "256ch_1h": (256, HOUR),
    "1024ch_1h": (1024, HOUR),
}
QUICK_SIZES = ("64ch_1h", "64ch_24h", "64ch_7d", "1024ch_1h")
GROUPS = ("open", "memory", "reads", "overview", "idle")
SMALL_COUNT = 50
SMALL_SHAPE = (8, 600)          # the "many small recordings": 8 channels x 10 min each
CHUNK_S = 6 * HOUR              # one write_int32 call per channel per 6 h
READ_S = 10
OVERVIEW_S = HOUR
OVERVIEW_POINTS = 500
IDLE_S = 30.0

sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------ pure helpers

def parse_size(name: str) -> tuple[int, int]:
    """``"64ch_7d"`` -> (64, 604800): channels and seconds. Units: s, min, h, d."""
    try:
        ch, dur = name.strip().split("_")
        if not ch.endswith("ch"):
            raise ValueError
        nch = int(ch[:-2])
        for unit, mult in (("min", 60), ("h", HOUR), ("d", DAY), ("s", 1)):
            if dur.endswith(unit):
                secs = int(float(dur[: -len(unit)]) * mult)
                break
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"bad size {name!r}: expected e.g. 64ch_1h, 64ch_24h, 64ch_7d") from None
    if nch <= 0 or secs <= 0:
        raise ValueError(f"bad size {name!r}: channels and duration must be positive")
    return nch, secs


def parse_sizes(text: str | None, quick: bool) -> list[str]:
    """The sizes to run, in the canonical order: ``--sizes`` or the default set."""
    if not text:
        return list(QUICK_SIZES if quick else SIZES)
    out = []
    for x in text.split(","):
        x = x.strip()
        if not x:
            continue
        parse_size(x)
        if x not in out:
            out.append(x)
    return sorted(out, key=lambda n: (parse_size(n)[1], parse_size(n)[0]))


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(GROUPS)
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in GROUPS]
    if bad:
        raise ValueError(f"unknown group(s) {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    return out


def fmt_ms(v: float | None) -> str:
    """Seconds -> a millisecond figure with three significant digits; None -> 'n/a'."""
    if v is None:
        return "n/a"
    ms = v * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_mb(v: float | None, signed: bool = False) -> str:
    """Bytes -> MB (2**20) with one decimal; None -> 'n/a'."""
    if v is None:
        return "n/a"
    return f"{v / 2**20:+.1f} MB" if signed else f"{v / 2**20:.1f} MB"


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} %"


def slash(*cells: str) -> str:
    return " / ".join(cells)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        if len(r) != len(header):
            raise ValueError(f"row {r!r} has {len(r)} cells, header {len(header)}")
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def size_label(name: str) -> str:
    nch, secs = parse_size(name)
    if secs % DAY == 0 and secs >= DAY and secs != DAY:
        dur = f"{secs // DAY} days"
    elif secs % HOUR == 0:
        dur = f"{secs // HOUR} h"
    else:
        dur = f"{secs // 60} min"
    return f"{nch} ch x {dur}"


def cpu_percent(ticks_before: int, ticks_after: int, seconds: float, hz: int) -> float:
    """CPU ticks (utime + stime) spent over ``seconds`` -> percent of one core."""
    return 100.0 * (ticks_after - ticks_before) / hz / seconds


# ------------------------------------------------------------------ data

def rec_path(name: str) -> Path:
    return DATA / f"{name}.mefd"


def small_path(i: int) -> Path:
    return DATA / "small" / f"small_{i:02d}.mefd"


def channel_names(n: int) -> list[str]:
    return [f"ch{i:04d}" for i in range(n)]


class SignalPool:
    """Filtered noise as int32 counts: a pool computed once, each chunk a shifted, scaled view.

    Band-limited noise (two cascaded 4-sample moving averages of white noise, ~30 Hz wide)
    plus a slow wander and a 10 Hz rhythm; RED compresses it like scalp EEG (~5-6 bits per
    sample). Each channel and chunk starts at its own offset into the pool, so no two blocks
    of a channel are identical.
    """

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(n + 64)
        for k in (4, 4):
            c = np.cumsum(x)
            x = (c[k:] - c[:-k]) / k
        t = np.arange(len(x))
        wander = np.cumsum(rng.standard_normal(len(x))) * 0.05
        wander -= np.convolve(wander, np.ones(1025) / 1025, mode="same")
        x = x * 40 + wander * 20 + 15 * np.sin(2 * np.pi * 10.0 / FS * t)
        self.pool = np.round(x[:n]).astype(np.int32)
        self.rng = rng

    def chunk(self, n: int) -> np.ndarray:
        if n > len(self.pool):
            raise ValueError("chunk longer than the pool")
        k = int(self.rng.integers(0, len(self.pool)))
        out = np.roll(self.pool, -k)[:n]
        gain = int(self.rng.integers(1, 4))
        return out * gain if gain != 1 else out


def write_recording(path: Path, nch: int, secs: int, pool: SignalPool, progress=True) -> None:
    import mef3io

    done = path.with_suffix(".done")
    if done.exists() and path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    total = nch * int(secs * FS)
    written = 0
    t = time.perf_counter()
    last = t
    if progress:
        print(f"writing {path} ({nch} ch x {secs} s at {FS:g} Hz, {total / 1e9:.2f} G samples)",
              flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for ch in channel_names(nch):
                for c0 in range(0, secs, CHUNK_S):
                    n = int(min(CHUNK_S, secs - c0) * FS)
                    w.write_int32(ch, pool.chunk(n), 0.1, T0 + c0 * S, fs=FS)
                    written += n
                    now = time.perf_counter()
                    if progress and now - last > 15:
                        last = now
                        rate = written / (now - t)
                        print(f"  {written / total:5.1%} {rate / 1e6:.1f} M samples/s, "
                              f"{(total - written) / rate:.0f} s left", flush=True)
    done.write_text("ok\n")
    if progress:
        print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)


def ensure_data(sizes: list[str], small: bool) -> None:
    pool = None
    todo = [n for n in sizes if not (rec_path(n).exists() and rec_path(n).with_suffix(".done").exists())]
    if small:
        todo += [str(small_path(i)) for i in range(SMALL_COUNT)
                 if not small_path(i).with_suffix(".done").exists()]
    if not todo:
        return
    pool = SignalPool(int(CHUNK_S * FS) + 1)
    if small:
        for i in range(SMALL_COUNT):
            write_recording(small_path(i), *SMALL_SHAPE, pool, progress=(i == 0))
    for n in sorted(sizes, key=lambda n: parse_size(n)[0] * parse_size(n)[1]):   # small first
        write_recording(rec_path(n), *parse_size(n), pool)


# ------------------------------------------------------------------ processes

def drop_caches() -> bool:
    """Drop the page cache (root only); False when it cannot be done here."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _vmrss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])     # fields 14 and 15 of stat(5)
    except (OSError, IndexError, ValueError):
        return 0


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return [pid]


def tree_rss(pid: int) -> int:
    return sum(_vmrss(p) for p in _tree(pid))


def tree_ticks(pid: int) -> int:
    return sum(_ticks(p) for p in _tree(pid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Target:
    """One thing measured: a server (its python, its working directory) or direct mef3io."""

    def __init__(self, key: str, label: str, python: str | None = None, cwd: str | None = None):
        self.key, self.label, self.python, self.cwd = key, label, python, cwd

    @property
    def direct(self) -> bool:
        return self.python is None


class Server:
    """A fresh server process on a free port; RSS and CPU read from /proc."""

    def __init__(self, target: Target):
        self.target = target
        self.port = free_port()
        self.address = f"localhost:{self.port}"
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update({"PORT": str(self.port), "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = open(RESULTS / f"long-server-{target.key}.log", "a")
        self.proc = subprocess.Popen([target.python, "-m", "mef3io_server.server"], env=env,
                                     cwd=target.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.client = self._connect()

    def _connect(self, timeout: float = 120.0):
        from mef3io_server.client import Mef3Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.label} server exited ({self.proc.returncode});"
                                   f" see {self.log.name}")
            c = Mef3Client(self.address, timeout=600)
            try:
                c.list_open_files()
                return c
            except Exception:  # noqa: BLE001 - not up yet
                c.shutdown()
                time.sleep(0.2)
        raise RuntimeError(f"{self.target.label} server did not come up in {timeout} s")

    def rss(self) -> int:
        return tree_rss(self.proc.pid)

    def ticks(self) -> int:
        return tree_ticks(self.proc.pid)

    def open(self, path: Path) -> float:
        t = time.perf_counter()
        info = self.client.open_file(str(path))
        dt = time.perf_counter() - t
        if not info.get("file_opened"):
            raise RuntimeError(f"{self.target.label}: open {path} failed: "
                               f"{info.get('error_message')}")
        return dt

    def read(self, path: Path, chans, t0: int, t1: int, n_points=None) -> np.ndarray:
        res = self.client.get_signal_range(str(path), chans, t0, t1, n_points=n_points)
        if res["array"] is None:
            raise RuntimeError(f"{self.target.label}: read failed: {res['error_message']}")
        return res["array"]

    def stop(self) -> None:
        try:
            self.client.shutdown()
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def direct_child_main(path: str) -> None:
    """``--direct-child PATH``: import mef3io, say ready, wait for a line, time the open."""
    import mef3io

    print("ready", flush=True)
    sys.stdin.readline()
    rss0 = _vmrss(os.getpid())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        r = mef3io.Reader(path, warn_declarations=False)
        dt = time.perf_counter() - t
    rss1 = _vmrss(os.getpid())
    print(json.dumps({"open_s": dt, "rss_before": rss0, "rss_after": rss1,
                      "channels": len(r.channels) if hasattr(r, "channels") else None}),
          flush=True)
    r.close()


def direct_open(path: Path, cold: bool) -> dict:
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--direct-child",
                          str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         cwd=str(ROOT))
    assert p.stdout.readline().strip() == "ready"
    if cold:
        drop_caches()
    p.stdin.write("go\n")
    p.stdin.flush()
    out = json.loads(p.stdout.readline())
    p.wait(60)
    return out


class DirectReader:
    def __init__(self, path: Path):
        import mef3io

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.r = mef3io.Reader(str(path), warn_declarations=False)

    def read(self, chans, t0, t1) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.r.read(chans, int(t0), int(t1), dtype="float32")

    def close(self):
        self.r.close()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


# ------------------------------------------------------------------ groups

def group_open(res: dict, targets: list[Target], sizes: list[str], runs: int, cold: bool) -> None:
    """Open time and memory after open: fresh process per run, targets in turns."""
    for name in sizes:
        path = rec_path(name)
        for i in range(runs):
            for tg in targets:
                cell = res["sizes"].setdefault(name, {}).setdefault(tg.key, {})
                if tg.direct:
                    out = direct_open(path, cold)
                    cell.setdefault("open_all_s", []).append(out["open_s"])
                    cell.setdefault("rss_before_all", []).append(out["rss_before"])
                    cell.setdefault("rss_after_all", []).append(out["rss_after"])
                    print(f"  open {name} {tg.label} run {i + 1}: {fmt_ms(out['open_s'])}",
                          flush=True)
                    continue
                srv = Server(tg)
                try:
                    if cold:
                        drop_caches()
                    time.sleep(0.3)
                    rss0 = srv.rss()
                    dt = srv.open(path)
                    rss1 = srv.rss()
                    time.sleep(2.0)
                    rss2 = srv.rss()
                finally:
                    srv.stop()
                cell.setdefault("open_all_s", []).append(dt)
                cell.setdefault("rss_before_all", []).append(rss0)
                cell.setdefault("rss_after_all", []).append(rss1)
                cell.setdefault("rss_after_2s_all", []).append(rss2)
                print(f"  open {name} {tg.label} run {i + 1}: {fmt_ms(dt)}, RSS "
                      f"{fmt_mb(rss0)} -> {fmt_mb(rss1)} ({fmt_mb(rss2)} 2 s later)", flush=True)
        for tg in targets:
            cell = res["sizes"][name][tg.key]
            cell["open_s"] = median(cell["open_all_s"])
            cell["rss_before"] = median(cell["rss_before_all"])
            cell["rss_after"] = median(cell["rss_after_all"])
            cell["rss_growth"] = median([b - a for a, b in zip(cell["rss_before_all"],
                                                               cell["rss_after_all"])])
            if "rss_after_2s_all" in cell:
                cell["rss_after_2s"] = median(cell["rss_after_2s_all"])
                cell["rss_growth_2s"] = median([b - a for a, b in zip(
                    cell["rss_before_all"], cell["rss_after_2s_all"])])


def read_window(name: str) -> tuple[int, int]:
    """10 s in the middle of the recording, 3 s off the 10 s block grid."""
    _, secs = parse_size(name)
    t0 = T0 + (secs // 2 + 3) * S
    return t0, t0 + READ_S * S


def overview_window(name: str) -> tuple[int, int]:
    """The first hour (the reads use the middle)."""
    _, secs = parse_size(name)
    return T0, T0 + min(secs, OVERVIEW_S) * S


def group_reads(res: dict, targets: list[Target], sizes: list[str], do_reads: bool,
                do_overview: bool, repeats: int, ov_repeats: int, cold: bool,
                overview_max_channels: int = 0) -> None:
    """Cold and warm 10 s x all channels, then the overview, on one fresh server per size."""
    for name in sizes:
        path = rec_path(name)
        nch, _ = parse_size(name)
        chans = channel_names(nch)
        t0, t1 = read_window(name)
        o0, o1 = overview_window(name)
        for tg in targets:
            cell = res["sizes"].setdefault(name, {}).setdefault(tg.key, {})
            if tg.direct:
                if not do_reads:
                    continue
                rd = DirectReader(path)
                read = lambda a, b, n=None: rd.read(chans, a, b)  # noqa: E731
                stop = rd.close
            else:
                srv = Server(tg)
                srv.open(path)
                read = lambda a, b, n=None: srv.read(path, chans, a, b, n)  # noqa: E731
                stop = srv.stop
            try:
                if do_reads:
                    if cold:
                        drop_caches()
                    t = time.perf_counter()
                    a = read(t0, t1)
                    cell["cold_read_s"] = time.perf_counter() - t
                    read(t0, t1)                                  # warm-up
                    lat = []
                    for _ in range(repeats):
                        t = time.perf_counter()
                        a = read(t0, t1)
                        lat.append(time.perf_counter() - t)
                    cell["warm_read_all_s"] = lat
                    cell["warm_read_s"] = median(lat)
                    cell["shape"] = list(a.shape)
                    print(f"  reads {name} {tg.label}: cold {fmt_ms(cell['cold_read_s'])}, "
                          f"warm {fmt_ms(cell['warm_read_s'])}", flush=True)
                    cell["_last"] = a
                if do_overview and not tg.direct and 0 < overview_max_channels < nch:
                    cell["overview_note"] = (f"not run (--overview-max-channels "
                                             f"{overview_max_channels})")
                elif do_overview and not tg.direct:
                    if cold:
                        drop_caches()
                    try:
                        t = time.perf_counter()
                        ov = read(o0, o1, OVERVIEW_POINTS)
                        cold_s = time.perf_counter() - t
                        if ov.shape != (nch, OVERVIEW_POINTS):
                            cell["overview_note"] = (f"answered shape {list(ov.shape)}, not "
                                                     f"({nch}, {OVERVIEW_POINTS})")
                        else:
                            lat = []
                            for _ in range(ov_repeats):
                                t = time.perf_counter()
                                read(o0, o1, OVERVIEW_POINTS)
                                lat.append(time.perf_counter() - t)
                            cell["overview_cold_s"] = cold_s
                            cell["overview_warm_s"] = median(lat)
                    except Exception as e:  # noqa: BLE001 - a server without n_points
                        cell["overview_note"] = f"failed: {e}"[:200]
                    print(f"  overview {name} {tg.label}: cold {fmt_ms(cell.get('overview_cold_s'))}"
                          f", warm {fmt_ms(cell.get('overview_warm_s'))}"
                          f"{' (' + cell['overview_note'] + ')' if 'overview_note' in cell else ''}",
                          flush=True)
            finally:
                stop()
        # exactness: every server's warm window against the direct read of it
        direct = [tg for tg in targets if tg.direct]
        if do_reads and direct:
            ref = res["sizes"][name][direct[0].key].get("_last")
            for tg in targets:
                cell = res["sizes"][name][tg.key]
                a = cell.pop("_last", None)
                if not tg.direct and a is not None and ref is not None:
                    cell["exact"] = same(a, ref)
            res["sizes"][name][direct[0].key].pop("_last", None)
        else:
            for tg in targets:
                res["sizes"][name].get(tg.key, {}).pop("_last", None)


def group_idle(res: dict, targets: list[Target], big: str, do_idle: bool, do_memory: bool,
               idle_s: float) -> None:
    """Idle CPU with one recording open, then RSS per small recording while 50 open, then
    idle CPU with all of them open; one fresh server per target."""
    hz = os.sysconf("SC_CLK_TCK")
    smalls = [small_path(i) for i in range(SMALL_COUNT)]
    for tg in targets:
        if tg.direct:
            continue
        cell = res["idle"].setdefault(tg.key, {"recording": big})
        srv = Server(tg)
        try:
            if do_idle:
                srv.open(rec_path(big))
                time.sleep(3.0)
                a, t = srv.ticks(), time.perf_counter()
                time.sleep(idle_s)
                b, dt = srv.ticks(), time.perf_counter() - t
                cell["cpu_1_pct"] = cpu_percent(a, b, dt, hz)
                print(f"  idle {tg.label}, {big} open: {fmt_pct(cell['cpu_1_pct'])} of a core "
                      f"over {dt:.0f} s", flush=True)
            time.sleep(1.0)
            rss0 = srv.rss()
            for p in smalls:
                srv.open(p)
            time.sleep(2.0)
            rss1 = srv.rss()
            cell["rss_before_small"] = rss0
            cell["rss_after_small"] = rss1
            cell["rss_per_recording"] = (rss1 - rss0) / len(smalls)
            print(f"  memory {tg.label}: {SMALL_COUNT} x {SMALL_SHAPE[0]} ch opened, RSS "
                  f"{fmt_mb(rss0)} -> {fmt_mb(rss1)}, "
                  f"{cell['rss_per_recording'] / 2**10:.0f} KB per recording", flush=True)
            if do_idle:
                time.sleep(3.0)
                a, t = srv.ticks(), time.perf_counter()
                time.sleep(idle_s)
                b, dt = srv.ticks(), time.perf_counter() - t
                cell["cpu_51_pct"] = cpu_percent(a, b, dt, hz)
                print(f"  idle {tg.label}, {SMALL_COUNT + 1} open: "
                      f"{fmt_pct(cell['cpu_51_pct'])} of a core over {dt:.0f} s", flush=True)
        finally:
            srv.stop()


# ------------------------------------------------------------------ goals and report

MB = 2**20


def goals(res: dict, key: str = "ours") -> list[dict]:
    """Issue 21's goals for one server (``key``): name, target, measured text, met (or None)."""
    sz = res["sizes"]
    out = []

    def cell(name, k=key):
        return sz.get(name, {}).get(k, {})

    ratios = [(n, cell(n)["open_s"] / cell(n, "direct")["open_s"]) for n in sz
              if cell(n).get("open_s") and cell(n, "direct").get("open_s")]
    if ratios:
        worst = max(ratios, key=lambda x: x[1])
        out.append({"goal": "open within 2x of direct at every length and channel count",
                    "target": "<= 2.0x", "measured": f"worst {worst[1]:.1f}x ({worst[0]})",
                    "met": all(r <= 2.0 for _, r in ratios)})
    o7 = cell("64ch_7d").get("open_s")
    if o7 is not None:
        out.append({"goal": "open 64 ch x 7 days", "target": "< 40 ms", "measured": fmt_ms(o7),
                    "met": o7 < 0.040})

    def growth(n):
        c = cell(n)
        gs = [c.get("rss_growth"), c.get("rss_growth_2s")]
        gs = [g for g in gs if g is not None]
        return max(gs) if gs else None
    g1, g7 = growth("64ch_1h"), growth("64ch_7d")
    if g1 is not None and g7 is not None:
        out.append({"goal": "memory after open, 64 ch: 7 days minus 1 h",
                    "target": "<= 5 MB", "measured": fmt_mb(g7 - g1, signed=True),
                    "met": g7 - g1 <= 5 * MB})
    w, wp = cell("1024ch_1h").get("warm_read_s"), cell("1024ch_1h", "published").get("warm_read_s")
    if w is not None and wp:
        out.append({"goal": "warm 10 s x 1024 ch vs the published server",
                    "target": "<= 0.5x", "measured": f"{w / wp:.2f}x ({fmt_ms(w)} / {fmt_ms(wp)})",
                    "met": w / wp <= 0.5})
    per_ch = sorted((parse_size(n)[0], cell(n)["warm_read_s"] / parse_size(n)[0]) for n in sz
                    if parse_size(n)[1] == HOUR and cell(n).get("warm_read_s"))
    if len(per_ch) >= 2:
        base = min(v for _, v in per_ch)
        worst = per_ch[-1]
        out.append({"goal": f"warm 10 s linear in channels ({per_ch[0][0]} to {per_ch[-1][0]} ch)",
                    "target": f"per channel at {per_ch[-1][0]} ch <= 1.25x the lowest",
                    "measured": ", ".join(f"{n} ch {v * 1e6:.0f} us" for n, v in per_ch),
                    "met": worst[1] <= 1.25 * base})
    idle = res.get("idle", {}).get(key, {}).get("cpu_51_pct")
    if idle is not None:
        out.append({"goal": f"idle CPU with {SMALL_COUNT} recordings open (+1 large)",
                    "target": "< 0.3 % of a core", "measured": fmt_pct(idle), "met": idle < 0.3})
    return out


def server_keys(res: dict) -> list[str]:
    return [k for k in res["targets"] if k != "direct"]


def report_md(res: dict) -> str:
    """The tables of docs/benchmarks-long.md (also printed at the end of a run)."""
    tl = res["targets"]
    keys = list(tl)
    skeys = server_keys(res)
    sz = res["sizes"]
    c = lambda n, k: sz.get(n, {}).get(k, {})  # noqa: E731
    names = [n for n in SIZES if n in sz] + [n for n in sz if n not in SIZES]
    parts = []

    rows = []
    for n in names:
        rows.append([size_label(n),
                     slash(*(fmt_ms(c(n, k).get("open_s")) for k in keys)),
                     slash(*(fmt_mb(c(n, k).get("rss_growth"), True) for k in skeys)),
                     slash(*(fmt_mb(c(n, k).get("rss_growth_2s"), True) for k in skeys)),
                     slash(*(fmt_mb(c(n, k).get("rss_after")) for k in skeys)),
                     fmt_mb(c(n, "direct").get("rss_after", 0) - c(n, "direct").get("rss_before", 0)
                            if c(n, "direct").get("rss_after") else None, True)])
    parts.append("### Open and memory after open\n\n" + md_table(
        ["recording", "open: " + slash(*(tl[k] for k in keys)),
         "server RSS growth at open: " + slash(*(tl[k] for k in skeys)),
         "growth 2 s later", "server RSS after open (absolute)", "direct: reader RSS growth"],
        rows))

    rows = []
    for n in names:
        nch = parse_size(n)[0]
        if not any("warm_read_s" in c(n, k) for k in keys):
            continue
        ex = [tl[k] for k in skeys if c(n, k).get("exact") is False]
        rows.append([size_label(n),
                     slash(*(fmt_ms(c(n, k).get("cold_read_s")) for k in keys)),
                     slash(*(fmt_ms(c(n, k).get("warm_read_s")) for k in keys)),
                     slash(*(f"{c(n, k)['warm_read_s'] / nch * 1e6:.0f} us"
                             if c(n, k).get("warm_read_s") else "n/a" for k in keys)),
                     "NOT EXACT: " + ", ".join(ex) if ex else "exact"])
    if rows:
        parts.append("### Reads of 10 s x all channels (middle of the recording)\n\n" + md_table(
            ["recording", "cold: " + slash(*(tl[k] for k in keys)),
             "warm (median): " + slash(*(tl[k] for k in keys)),
             "warm per channel: " + slash(*(tl[k] for k in keys)), "vs direct"], rows))

    rows = []
    for n in names:
        if not any("overview_cold_s" in c(n, k) or "overview_note" in c(n, k) for k in skeys):
            continue
        notes = "; ".join(f"{tl[k]}: {c(n, k)['overview_note']}" for k in skeys
                          if c(n, k).get("overview_note"))
        rows.append([size_label(n),
                     slash(*(fmt_ms(c(n, k).get("overview_cold_s")) for k in skeys) , "n/a"),
                     slash(*(fmt_ms(c(n, k).get("overview_warm_s")) for k in skeys), "n/a"),
                     notes or "-"])
    if rows:
        parts.append(f"### Overview: the first hour of all channels at n_points={OVERVIEW_POINTS}"
                     "\n\n" + md_table(
                         ["recording", "cold: " + slash(*(tl[k] for k in skeys), "direct"),
                          "warm (median): " + slash(*(tl[k] for k in skeys), "direct"),
                          "notes"], rows))

    idle = res.get("idle", {})
    if idle:
        rows = []
        for k in skeys:
            i = idle.get(k, {})
            rows.append([tl[k], fmt_pct(i.get("cpu_1_pct")), fmt_pct(i.get("cpu_51_pct")),
                         f"{i['rss_per_recording'] / 2**10:.0f} KB"
                         if i.get("rss_per_recording") is not None else "n/a"])
        big = next(iter(idle.values())).get("recording", "")
        parts.append("### Idle CPU and memory per open recording\n\n" + md_table(
            ["server", f"idle CPU, {size_label(big) if big else '1 recording'} open "
             f"({res['idle_s']:.0f} s)",
             f"idle CPU, + {SMALL_COUNT} x {SMALL_SHAPE[0]} ch open",
             f"RSS growth per open {SMALL_SHAPE[0]}-channel recording"], rows))

    for k in skeys:
        if k == "published":
            continue
        gs = goals(res, k)
        if gs:
            parts.append(f"### Goals (issue 21), {tl[k]}\n\n" + md_table(
                ["goal", "target", "measured", "met"],
                [[g["goal"], g["target"], g["measured"], "yes" if g["met"] else "NO"]
                 for g in gs]))
    return "\n\n".join(parts)


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
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import mef3io
    return {"cpu": cpu, "nproc": os.cpu_count(), "memory_gb": round(mem / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "mef3io": getattr(mef3io, "__version__", "?")}


def git_describe(path: Path) -> dict:
    def run(*a):
        r = subprocess.run(["git", "-C", str(path), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    return {"branch": run("rev-parse", "--abbrev-ref", "HEAD"),
            "commit": run("rev-parse", "--short", "HEAD"),
            "server_commit": run("log", "-1", "--format=%h", "--", "mef3io_server"),
            "server_dirty": bool(run("status", "--porcelain", "--", "mef3io_server"))}


def _kept_summary(r: dict) -> str:
    return f"{r.get('label', '')}; {r.get('date', '')}; `{r.get('command', '')}`"


def write_docs(res: dict) -> None:
    m = res["machine"]
    la = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    g = res["git"]
    ref = ""
    if res.get("ref_git"):
        r = res["ref_git"]
        ref = (f"\n- **ours (ref):** `{res['ref_path']}`, branch {r['branch']} at {r['commit']} "
               f"(last change to the server code: {r['server_commit']}"
               f"{', with uncommitted changes' if r['server_dirty'] else ''}).")
    kept = sorted(p.name for p in RESULTS.glob("long_recordings-*.json")
                  if p.name != "long_recordings-partial.json")
    kept = ("\n## Earlier runs kept\n\n" + "\n".join(
        f"- `benchmarks/results/{k}`: {_kept_summary(json.loads((RESULTS / k).read_text()))}"
        for k in kept) + "\n") if kept else ""
    text = f"""# Benchmarks: long and wide recordings

Generated by `benchmarks/long_recordings_bench.py`; do not edit by hand. What it measures
and how is in the script's docstring; the short version is below.

- **Label:** {res['label']}
- **Command:** `{res['command']}`
- **Date:** {res['date']} (run took {res['run_s']:.0f} s)
- **Machine:** {m['cpu']}, nproc {m['nproc']}, {m['memory_gb']} GB RAM; {m['platform']};
  Python {m['python']}, mef3io {m['mef3io']}.
- **Load average:** at the start {la(res['load_start'])}; at the end {la(res['load_end'])}.
  The machine is shared: single figures vary by up to 2x between runs.
- **ours:** this checkout, `python -m mef3io_server.server` from its `.venv`, branch
  {g['branch']} at {g['commit']} (last change to the server code: {g['server_commit']}{', with uncommitted changes' if g['server_dirty'] else ''}).{ref}
- **published:** mef3io-server {PUBLISHED_VERSION} from PyPI in its own venv{(' -- skipped: ' + res['published_skipped']) if res.get('published_skipped') else ''}.
- **direct:** `mef3io.Reader` (open: a fresh process per run; reads: in the benchmark process).
- **Page cache:** {'dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every open and every cold read' if res['cold'] else 'could NOT be dropped here (not root): "cold" figures are warm-cache figures'}.
- **Recordings:** int32 counts of filtered noise at 256 Hz written by `mef3io.Writer.write_int32`
  with mef3io's default blocks (10 s at 256 Hz), one call per channel per 6 h; sizes as in the
  tables. Windows: reads take 10 s of every channel from the middle of the recording (3 s off
  the block grid); the overview is the first hour.
- **Method:** open = `OpenFile` on a fresh server process (ready, then the cache dropped, then
  timed), median of {res['open_runs']} runs, targets in turns; RSS = VmRSS from `/proc/<pid>/status`
  of the server and its children just before and just after the open (and 2 s later). Reads and
  overview: one fresh server per recording, cold once, then the same window after one warm-up,
  median of {res['repeats']} (overview {res['overview_repeats']}). Idle: utime + stime from
  `/proc/<pid>/stat` over {res['idle_s']:.0f} s, after 3 s of settling; then {SMALL_COUNT}
  recordings of {SMALL_SHAPE[0]} ch x {SMALL_SHAPE[1] // 60} min opened one after the other
  (RSS growth per recording), then idle again.

{report_md(res)}

To compare a change with the code before it in one run, measure both checkouts side by side:
`.venv/bin/python benchmarks/long_recordings_bench.py --ref /path/to/checkout-before --label "..."`
(the other checkout's server runs from its own `.venv`). `--quick` takes about 20 minutes on this
machine, most of it the cold overview of 1024 channels (`--overview-max-channels 256` skips it);
the full run with that option about 10.
{kept}"""
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks-long.md").write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="Open time, memory, reads, overview and idle CPU on long and wide "
                    "recordings: this server, the published 3.1.0 and direct mef3io.")
    ap.add_argument("--quick", action="store_true",
                    help=f"fewer repeats; sizes {','.join(QUICK_SIZES)}")
    ap.add_argument("--only", default="", help=f"comma-separated groups: {','.join(GROUPS)}")
    ap.add_argument("--sizes", default="", help=f"comma-separated sizes ({','.join(SIZES)}; "
                    "others of the form NNch_DUR are written on demand)")
    ap.add_argument("--no-published", action="store_true", help="skip the published server")
    ap.add_argument("--ref", default="", metavar="PATH",
                    help="also benchmark another checkout of this repository as 'ours (ref)', "
                         "started with PATH/.venv/bin/python from PATH")
    ap.add_argument("--label", default="", help="what this run measures (goes into the docs)")
    ap.add_argument("--overview-max-channels", type=int, default=0, metavar="N",
                    help="skip the overview of recordings with more than N channels (a cold "
                         "overview of 1024 ch x 1 h takes minutes per server)")
    ap.add_argument("--data-only", action="store_true", help="write the recordings and stop")
    ap.add_argument("--docs-only", action="store_true",
                    help="regenerate docs/benchmarks-long.md from results/long_recordings.json")
    ap.add_argument("--direct-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.docs_only:
        write_docs(json.loads((RESULTS / "long_recordings.json").read_text()))
        return
    if args.direct_child:
        direct_child_main(args.direct_child)
        return
    try:
        sizes = parse_sizes(args.sizes, args.quick)
        only = parse_only(args.only)
    except ValueError as e:
        ap.error(str(e))
    ensure_data(sizes, small=("memory" in only or "idle" in only or args.data_only))
    if args.data_only:
        return
    start = time.perf_counter()
    load_start = os.getloadavg()
    py = os.environ.get("MEF3IO_PYTHON") or (
        str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists()
        else sys.executable)
    targets = [Target("ours", "ours", py, str(ROOT))]
    ref_git = None
    if args.ref:
        ref = Path(args.ref).resolve()
        rpy = ref / ".venv" / "bin" / "python"
        if not rpy.exists():
            ap.error(f"{rpy} does not exist (make it with scripts/venv.sh in that checkout)")
        targets.append(Target("ref", "ours (ref)", str(rpy), str(ref)))
        ref_git = git_describe(ref)
    why = "skipped with --no-published"
    if not args.no_published:
        sys.path.insert(0, str(BENCH))
        from bench import published_python    # noqa: E402 - the same venv as bench.py

        ppy, why = published_python()
        if ppy:
            targets.append(Target("published", "published", ppy, "/"))
        else:
            print(f"published server skipped: {why}", flush=True)
    targets.append(Target("direct", "direct"))
    cold = drop_caches()
    if not cold:
        print("cannot drop the page cache here (not root?): cold figures will be warm-cache",
              flush=True)
    runs = 3
    repeats = 10 if args.quick else 20
    ov_repeats = 3 if args.quick else 5
    idle_s = IDLE_S
    git = git_describe(ROOT)
    res = {"targets": {t.key: t.label for t in targets}, "sizes": {}, "idle": {},
           "open_runs": runs, "repeats": repeats, "overview_repeats": ov_repeats,
           "idle_s": idle_s, "cold": cold, "git": git, "ref_git": ref_git,
           "ref_path": args.ref or None, "published_skipped": "" if len(
               [t for t in targets if t.key == "published"]) else why,
           "load_start": load_start}
    res["label"] = args.label or (f"{git['branch']} at {git['commit']} (server code at "
                                  f"{git['server_commit']})")
    print(f"targets: {', '.join(t.label for t in targets)}; sizes: {', '.join(sizes)}; "
          f"groups: {', '.join(only)}; load {load_start}", flush=True)
    if "open" in only or "memory" in only:
        group_open(res, targets, sizes, runs, cold)
    if "reads" in only or "overview" in only:
        group_reads(res, targets, sizes, "reads" in only, "overview" in only, repeats,
                    ov_repeats, cold, args.overview_max_channels)
    if "idle" in only or "memory" in only:
        big = "64ch_7d" if "64ch_7d" in sizes else sizes[-1]
        group_idle(res, targets, big, "idle" in only, "memory" in only, idle_s)
    res["load_end"] = os.getloadavg()
    res["run_s"] = time.perf_counter() - start
    res["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["machine"] = machine()
    import shlex

    argv_txt = shlex.join(sys.argv[1:] if argv is None else argv)
    res["command"] = f"python benchmarks/long_recordings_bench.py {argv_txt}".strip()
    res["goals"] = {k: goals(res, k) for k in server_keys(res) if k != "published"}
    partial = bool(args.only or args.sizes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("long_recordings-partial.json" if partial else "long_recordings.json")
    out.write_text(json.dumps(res, indent=1, default=float))
    if not partial:
        write_docs(res)
    print()
    print(report_md(res))
    print(f"\nwrote {out}" + ("" if partial else f" and {DOCS / 'benchmarks-long.md'}") +
          f" in {res['run_s']:.0f} s; load average at the end {res['load_end']}")


if __name__ == "__main__":
    main()
