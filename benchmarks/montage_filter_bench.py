"""Viewer reads benchmark: a montage and filters beside the plain reads, in one run.

64 channels x 1 hour at 256 Hz (written once with mef3io.Writer). Rows, each
against a freshly started server so "cold" means its caches are empty (the OS
page cache is not dropped), measured in alternation, ``--rounds`` times:

* ``page_plain``        -- a 10 s x 64 ch page of the recorded channels.
* ``page_derived``      -- the same page as a bipolar montage of neighbouring
  channels (63 derivations) with a 0.5-70 Hz band-pass and a 50 Hz notch.
* ``overview_plain``    -- the whole hour at ``n_points=2000``.
* ``overview_derived``  -- the same overview with the same montage and filters.
* ``direct_page``       -- for reference: mef3io reads the page with the
  filters' padding, NumPy takes the differences, SciPy ``sosfiltfilt`` filters
  (what a client would do itself, with no server).

Cold = the first read after open; warm = the median of ``--repeat`` reads of
the same window afterwards (after ``--settle`` seconds); next = the adjacent
window read after the settle (tiles prefetched, window new). Cold server CPU: user +
system time of the server process and its children during the cold read (on a
shared, loaded machine the steadier comparison).

Usage::

    .venv/bin/python benchmarks/montage_filter_bench.py                # ~3 min
    .venv/bin/python benchmarks/montage_filter_bench.py --rounds 1 --hours 0.25

Prints a table and writes ``benchmarks/results/montage_filter.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mef3io_server.client import Mef3Client  # noqa: E402
from mef3io_server.montages import bandpass, bipolar, notch  # noqa: E402
from overview_bench import START, Server, make_dataset, timed, timed_cpu  # noqa: E402

PAGE_US = 10_000_000
SCENARIOS = ("page_plain", "page_derived", "overview_plain", "overview_derived", "direct_page")


def montage_of(names):
    return bipolar(list(zip(names[:-1], names[1:])))


FILTERS = [bandpass(0.5, 70.0), notch(50.0)]


def direct_page(path: str, names, t0: int) -> np.ndarray:
    """The derived, filtered page computed by the caller itself from a direct mef3io read."""
    import mef3io
    from scipy import signal

    from mef3io_server.server import filtering

    fs = 256.0
    specs = filtering.parse_filters([(f.kind, f.hz, f.order, f.q) for f in FILTERS])
    sos = filtering.design(specs, fs)
    pad = filtering.padding_samples(specs, fs)
    pad_us = int(round(pad * 1e6 / fs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(path, warn_declarations=False)
        try:
            x = r.read(list(names), t0 - pad_us, t0 + PAGE_US + pad_us, dtype="float32")
        finally:
            r.close()
    d = x[:-1].astype(np.float64) - x[1:]
    return signal.sosfiltfilt(sos, d, axis=-1)[:, pad:-pad].astype(np.float32)


def run(name: str, path: str, args) -> dict:
    page_t0 = START + int(args.page_at_s * 1e6)
    if name == "direct_page":
        names = [f"ch{c:03d}" for c in range(args.channels)]
        cold, cold_cpu, _ = timed_cpu(lambda: direct_page(path, names, page_t0), os.getpid())
        warm = statistics.median(timed(lambda: direct_page(path, names, page_t0))[0]
                                 for _ in range(args.repeat))
        nxt, _ = timed(lambda: direct_page(path, names, page_t0 + PAGE_US))
        return {"scenario": name, "cold_ms": cold, "cold_cpu_ms": cold_cpu, "warm_ms": warm,
                "next_ms": nxt}
    server = Server("ours", args.cache_mb)
    try:
        with Mef3Client(server.address, raise_errors=True) as client:
            info = client.open_file(path)
            names = info["channel_names"]
            kw = {}
            if name.endswith("derived"):
                kw = {"montage": montage_of(names), "filters": FILTERS}
            if name.startswith("page"):
                def call(shift=0):
                    return client.get_signal_range(path, None if kw else names, page_t0 + shift,
                                                   page_t0 + shift + PAGE_US, **kw)
            else:
                end = START + int(args.hours * 3600e6)

                def call(shift=0):
                    return client.get_signal_range(path, None if kw else names, START + shift,
                                                   end + shift, n_points=args.n_points, **kw)
            cold, cold_cpu, res = timed_cpu(call, server.proc.pid)
            time.sleep(args.settle)
            warm = statistics.median(timed(call)[0] for _ in range(args.repeat))
            nxt = timed(lambda: call(PAGE_US))[0] if name.startswith("page") else None
            return {"scenario": name, "cold_ms": cold, "cold_cpu_ms": cold_cpu, "warm_ms": warm,
                    "next_ms": nxt, "shape": list(res["array"].shape)}
    finally:
        server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--n-points", type=int, default=2000)
    ap.add_argument("--page-at-s", type=float, default=1234.5625)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--cache-mb", type=int, default=1024)
    ap.add_argument("--data-dir", default="/tmp/mef3io_viewer_bench")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "montage_filter.json"))
    args = ap.parse_args(argv)
    path = str(make_dataset(Path(args.data_dir) / f"viewer_{args.channels}ch_{args.hours:g}h.mefd",
                            args.channels, args.hours, 256.0))
    rows = []
    for rnd in range(args.rounds):
        for name in args.scenarios.split(","):           # in alternation, round by round
            r = run(name, path, args)
            r["round"] = rnd
            rows.append(r)
            nxt = f"{r['next_ms']:8.1f}" if r.get("next_ms") is not None else "       -"
            print(f"round {rnd} {name:17s} cold {r['cold_ms']:8.1f} ms (cpu {r['cold_cpu_ms']:7.0f})"
                  f"  warm {r['warm_ms']:7.1f} ms  next {nxt} ms", flush=True)
    print(f"\n{'scenario':17s} {'cold ms (range)':>22s} {'cold server cpu ms':>22s} "
          f"{'warm ms (range)':>20s} {'next ms (range)':>20s}")
    summary = {}
    for name in args.scenarios.split(","):
        rs = [r for r in rows if r["scenario"] == name]

        def rng(key):
            v = [r[key] for r in rs if r.get(key) is not None]
            return (statistics.median(v), min(v), max(v)) if v else None
        keys = ("cold_ms", "cold_cpu_ms", "warm_ms", "next_ms")
        summary[name] = {k: rng(k) for k in keys}
        cells = []
        for k in keys:
            v = summary[name][k]
            cells.append(f"{v[0]:7.1f} ({v[1]:.1f}-{v[2]:.1f})" if v else "-")
        print(f"{name:17s} {cells[0]:>22s} {cells[1]:>22s} {cells[2]:>20s} {cells[3]:>20s}")
    for a, b in (("page_derived", "page_plain"), ("overview_derived", "overview_plain")):
        if a in summary and b in summary:
            for k in ("cold_ms", "cold_cpu_ms", "warm_ms"):
                print(f"{a} / {b} {k}: {summary[a][k][0] / summary[b][k][0]:.2f}x")
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "machine": f"{platform.machine()} {os.cpu_count()} cores", "args": vars(args),
           "rows": rows, "summary": summary}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
