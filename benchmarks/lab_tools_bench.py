"""The lab's own tools, side by side in one run: MNE and mef_tools, local against served.

Run from the repository root (after ``bash scripts/test.sh`` made ``.venv``)::

    .venv/bin/python benchmarks/lab_tools_bench.py [--rounds 3] [--quick]

Rows (64 channels x 1 h at 256 Hz, written once into ``benchmarks/data/``, the
file ``bench.py`` uses; the OS page cache holds it for every target):

* ``mne_epochs``: ``mne.Epochs(raw, 100 events, 2 s, preload=True)`` at random
  events, on ``mef3io_server.mne.read_raw`` (cold: a fresh server; warm: the
  same epochs again on that server) and on ``mne.io.read_raw_mef`` (pymef) on
  the same file; the open is timed apart.
* ``mefreader_pages``: 10 s x 64 channel pages, ``get_data`` of
  ``mef3io_server.mefreader.MefReader`` (cold pass, then warm: the same pages
  again) and of mef_tools' local ``MefReader``; per page.
* ``lazy_raw_memory``: the client's resident memory (a fresh process) before
  ``read_raw`` of a 64 channel x 24 h recording (``--hours``), after it, and
  after reading one 10 s window of it, against that window's bytes.

Targets run in turns (A/B/C per round) on a shared, noisy machine; the table
gives the median of each round's value and the range over rounds. Writes
``benchmarks/results/lab_tools.json`` and the figures block of
``docs/coming-from.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import DATA, RESULTS, T0, Server, channel_names, machine  # noqa: E402

S = 1_000_000
MAIN = ("main_64ch_1h_256Hz", 64, 3600, 256.0)
DOC = ROOT / "docs" / "coming-from.md"
MARK_START = "<!-- lab-tools-bench:start -->"
MARK_END = "<!-- lab-tools-bench:end -->"


def write_recording(path: Path, nch: int, secs: int, fs: float, seed: int) -> Path:
    """A random-walk recording (as bench.py writes its own), once (``.done`` marker)."""
    import mef3io

    done = path.with_suffix(".done")
    if done.exists() and path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing {path.name} ({nch} ch x {secs} s at {fs:g} Hz) ...", flush=True)
    rng = np.random.default_rng(seed)
    n_part = int(3600 * fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for ch in channel_names(nch):
                for k in range(0, int(secs * fs), n_part):
                    n = min(n_part, int(secs * fs) - k)
                    data = np.cumsum(rng.standard_normal(n)) * 3.0
                    w.write(ch, data, T0 + int(k * 1e6 / fs), fs=fs, precision=2)
    done.write_text("ok\n")
    return path


def spread(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


# ------------------------------------------------------------------ MNE epochs

def events_for(n: int, fs: float, secs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onsets = np.sort(rng.choice(int((secs - 2) * fs), size=n, replace=False))
    return np.c_[onsets, np.zeros(n, int), np.ones(n, int)]


def epochs_s(raw, events) -> float:
    import mne

    t = time.perf_counter()
    ep = mne.Epochs(raw, events, tmin=0.0, tmax=2.0 - 1 / raw.info["sfreq"], baseline=None,
                    preload=True, reject_by_annotation=False, verbose=False)
    took = time.perf_counter() - t
    assert len(ep) == len(events)
    return took


def mne_round(path: Path, events, rnd: int) -> dict:
    import mne
    from mef3io_server.mne import read_raw

    out = {}
    t = time.perf_counter()
    local = mne.io.read_raw_mef(str(path), verbose=False)
    out["read_raw_mef_open_s"] = time.perf_counter() - t
    out["read_raw_mef_s"] = epochs_s(local, events)
    del local
    server = Server("ours")
    try:
        t = time.perf_counter()
        raw = read_raw(server.address, str(path), verbose=False)
        out["served_open_s"] = time.perf_counter() - t
        out["served_cold_s"] = epochs_s(raw, events)
        out["served_warm_s"] = epochs_s(raw, events)
        raw.recording.close()
    finally:
        server.stop()
    print(f"  round {rnd}: read_raw_mef {out['read_raw_mef_s']:.3f} s, served cold "
          f"{out['served_cold_s']:.3f} s, warm {out['served_warm_s']:.3f} s", flush=True)
    return out


# ------------------------------------------------------------------ MefReader pages

def pages_s(reader, chans, starts) -> list:
    took = []
    for t0 in starts:
        t = time.perf_counter()
        data = reader.get_data(chans, t0, t0 + 10 * S)
        took.append(time.perf_counter() - t)
        assert len(data) == len(chans) and len(data[0]) == 2560
    return took


def mefreader_round(path: Path, starts, rnd: int) -> dict:
    from mef_tools.io import MefReader as LocalReader
    from mef3io_server.mefreader import MefReader

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = LocalReader(str(path))
        chans = local.channels
        out["mef_tools_page_s"] = statistics.median(pages_s(local, chans, starts))
        local.close()
    server = Server("ours")
    try:
        served = MefReader(str(path), address=server.address)
        out["served_cold_page_s"] = statistics.median(pages_s(served, chans, starts))
        # a page read once before (its tiles cached), then twice before (the server
        # keeps a window asked for twice as it is)
        out["served_warm_page_s"] = statistics.median(pages_s(served, chans, starts))
        out["served_warm2_page_s"] = statistics.median(pages_s(served, chans, starts))
        served.close()
    finally:
        server.stop()
    print(f"  round {rnd}: mef_tools {out['mef_tools_page_s'] * 1e3:.1f} ms/page, served cold "
          f"{out['served_cold_page_s'] * 1e3:.1f}, warm {out['served_warm_page_s'] * 1e3:.1f}, "
          f"{out['served_warm2_page_s'] * 1e3:.1f}",
          flush=True)
    return out


# ------------------------------------------------------------------ memory of a lazy Raw

MEMORY_PROBE = """
import json, sys, psutil
import numpy as np
import mne
from mef3io_server.mne import read_raw
from mef3io_server.client import Mef3Client
p = psutil.Process()
address, path = sys.argv[1], sys.argv[2]
with Mef3Client(address) as c:
    c.list_open_files()                 # gRPC up and running before the baseline
before = p.memory_info().rss
raw = read_raw(address, path, verbose=False)
opened = p.memory_info().rss
mid = raw.n_times // 2
data = raw.get_data(start=mid, stop=mid + int(10 * raw.info["sfreq"]))
after = p.memory_info().rss
print(json.dumps({k: int(v) for k, v in {"rss_before": before, "rss_after_open": opened, "rss_after_window": after,
                  "window_bytes": data.nbytes, "n_times": raw.n_times,
                  "n_channels": len(raw.ch_names),
                  "recording_float64_bytes": raw.n_times * len(raw.ch_names) * 8}.items()}))
"""


def memory_run(path: Path) -> dict:
    server = Server("ours")
    try:
        probe = RESULTS / "lab_tools_memory_probe.tmp.py"
        probe.write_text(MEMORY_PROBE)
        done = subprocess.run([sys.executable, str(probe), server.address, str(path)],
                              capture_output=True, text=True, timeout=600, cwd=str(ROOT))
        probe.unlink()
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.stop()


# ------------------------------------------------------------------ report

def table(res: dict) -> str:
    m, p, mem = res["mne_epochs"], res["mefreader_pages"], res.get("lazy_raw_memory")

    def faster(local, served):
        r = local["median"] / served["median"]
        return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"

    def s(d, scale=1.0, unit="s"):
        return (f"{d['median'] * scale:.3g} {unit} ({d['min'] * scale:.3g}-"
                f"{d['max'] * scale:.3g})")

    lines = [
        "| 64 channels x 1 h at 256 Hz | served (this project) | local reader | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| MNE: 100 epochs of 2 s, warm server | {s(m['served_warm_s'])} | "
        f"{s(m['read_raw_mef_s'])} (`read_raw_mef`) | "
        f"{faster(m['read_raw_mef_s'], m['served_warm_s'])} |",
        f"| MNE: 100 epochs of 2 s, cold server | {s(m['served_cold_s'])} | "
        f"{s(m['read_raw_mef_s'])} (`read_raw_mef`) | "
        f"{faster(m['read_raw_mef_s'], m['served_cold_s'])} |",
        f"| MNE: open | {s(m['served_open_s'])} | {s(m['read_raw_mef_open_s'])} | |",
        f"| MefReader: 10 s x 64 ch page, read once before | {s(p['served_warm_page_s'], 1e3, 'ms')} | "
        f"{s(p['mef_tools_page_s'], 1e3, 'ms')} (mef_tools) | "
        f"{faster(p['mef_tools_page_s'], p['served_warm_page_s'])} |",
        f"| MefReader: the same page read twice before | "
        f"{s(p['served_warm2_page_s'], 1e3, 'ms')} | {s(p['mef_tools_page_s'], 1e3, 'ms')} | "
        f"{faster(p['mef_tools_page_s'], p['served_warm2_page_s'])} |",
        f"| MefReader: 10 s x 64 ch page, cold | {s(p['served_cold_page_s'], 1e3, 'ms')} | "
        f"{s(p['mef_tools_page_s'], 1e3, 'ms')} (mef_tools) | "
        f"{faster(p['mef_tools_page_s'], p['served_cold_page_s'])} |",
    ]
    if mem:
        mb = 2**20
        lines += [
            "",
            f"A lazy Raw of {mem['n_channels']} channels x {mem['hours']:g} h "
            f"({mem['recording_float64_bytes'] / 2**30:.1f} GiB as float64): the client's "
            f"resident memory grew by {(mem['rss_after_open'] - mem['rss_before']) / mb:.1f} MiB "
            f"opening it and by {(mem['rss_after_window'] - mem['rss_after_open']) / mb:.1f} MiB "
            f"reading one 10 s window of {mem['window_bytes'] / mb:.1f} MiB.",
        ]
    return "\n".join(lines)


def write_doc(res: dict) -> None:
    if not DOC.exists():
        return
    text = DOC.read_text()
    if MARK_START not in text or MARK_END not in text:
        return
    m = res["machine"]
    block = (f"{MARK_START}\nMeasured by `benchmarks/lab_tools_bench.py` on {res['date']} on a "
             f"{m['cores']}-core {m['cpu']} VM with {m['memory_gb']:g} GiB, MNE "
             f"{res['versions']['mne']}, pymef {res['versions']['pymef']}, mef_tools "
             f"{res['versions']['mef_tools']}; {res['rounds']} rounds, targets in turns; "
             "median of the rounds, range in brackets; the file sits in the OS page cache "
             "for every target (cold: a freshly started server, nothing in its tile cache):\n\n"
             f"{table(res)}\n{MARK_END}")
    a, rest = text.split(MARK_START, 1)
    _, b = rest.split(MARK_END, 1)
    DOC.write_text(a + block + b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=30, help="10 s pages per pass")
    ap.add_argument("--hours", type=float, default=24.0, help="length of the memory recording")
    ap.add_argument("--quick", action="store_true", help="1 round, 10 pages, a 2 h recording")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/coming-from.md")
    ap.add_argument("--doc-only", action="store_true",
                    help="rewrite docs/coming-from.md from benchmarks/results/lab_tools.json")
    args = ap.parse_args()
    if args.doc_only:
        write_doc(json.loads((RESULTS / "lab_tools.json").read_text()))
        return
    if args.quick:
        args.rounds, args.pages, args.hours = 1, 10, 2.0
    import mne
    import pymef
    from importlib.metadata import version

    RESULTS.mkdir(parents=True, exist_ok=True)
    name, nch, secs, fs = MAIN
    main_path = write_recording(DATA / f"{name}.mefd", nch, secs, fs, seed=len(name))
    day = f"lab_tools_64ch_{args.hours:g}h_256Hz"
    day_path = write_recording(DATA / f"{day}.mefd", 64, int(args.hours * 3600), 256.0, seed=7)
    res = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "rounds": args.rounds,
           "versions": {"mne": mne.__version__, "pymef": getattr(pymef, "__version__", "?"),
                        "mef_tools": version("mef_tools")},
           "command": " ".join(["python", "benchmarks/lab_tools_bench.py"] + sys.argv[1:])}
    events = events_for(100, fs, secs, seed=15)
    rng = np.random.default_rng(16)
    starts = [T0 + int(s) * S for s in rng.choice(secs - 10, size=args.pages, replace=False)]
    mne_runs, page_runs = [], []
    for rnd in range(args.rounds):
        print(f"MNE epochs, round {rnd + 1}/{args.rounds}", flush=True)
        mne_runs.append(mne_round(main_path, events, rnd + 1))
        print(f"MefReader pages, round {rnd + 1}/{args.rounds}", flush=True)
        page_runs.append(mefreader_round(main_path, starts, rnd + 1))
    res["mne_epochs"] = {k: spread([r[k] for r in mne_runs]) for k in mne_runs[0]}
    res["mefreader_pages"] = {k: spread([r[k] for r in page_runs]) for k in page_runs[0]}
    print("memory of a lazy Raw", flush=True)
    res["lazy_raw_memory"] = {**memory_run(day_path), "hours": args.hours}
    res["load_after"] = os.getloadavg()
    (RESULTS / "lab_tools.json").write_text(json.dumps(res, indent=1, default=float))
    print(table(res))
    if not args.no_doc:
        write_doc(res)


if __name__ == "__main__":
    main()
