#!/usr/bin/env python3
"""Fault runs against a mef3io-server, figures as JSON.

1. Corrupt blocks: a session is written, bytes are flipped at ``--flips``
   random places of its ``.tdat`` files, a server is started, and every
   ``--window`` seconds of every channel is read through the server and
   directly with mef3io. Each window is counted as ``exact`` (equal to
   mef3io, NaN for NaN), ``refused`` (both refused; the server's error names
   the channel and window), or ``garbage`` (anything else -- goal: 0).
2. Killed decode workers: the soak (scripts/soak.py) with
   ``USE_PROCESS_POOL=true`` and a random decode worker SIGKILLed every
   ``--kill-every`` seconds.

Short form (CI runs the same checks in tests/server/test_faults.py)::

    python scripts/faults.py --clients 6 --duration 30

Long form::

    python scripts/faults.py --clients 32 --duration 300 --flips 20
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak  # noqa: E402  (the sibling script)

SEC = 1_000_000


def corrupt_sweep(flips: int, window_s: int, seed: int = 0) -> dict:
    import mef3io
    from mef3io_server.client import Mef3Client

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        [path] = soak.write_sessions(Path(tmp), 1, 8, 600)
        tdats = sorted(Path(path).rglob("*.tdat"))
        for _ in range(flips):
            f = rng.choice(tdats)
            data = bytearray(f.read_bytes())
            at = rng.randrange(1024, len(data) - 64)
            for i in range(at, at + rng.randrange(1, 64)):
                data[i] ^= 0xFF
            f.write_bytes(bytes(data))
        proc, address = soak.start_server({"TILE_CACHE_MB": 64})
        counts = {"exact": 0, "refused": 0, "garbage": 0, "unnamed_errors": 0}
        samples, garbage = [], []
        try:
            with Mef3Client(address, timeout=60) as c, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = c.open_file(path)
                reader = mef3io.Reader(path, warn_declarations=False)
                for name in info["channel_names"]:
                    for t0 in range(info["start_uutc"], info["end_uutc"], window_s * SEC):
                        t1 = min(t0 + window_s * SEC, info["end_uutc"])
                        try:
                            ref = reader.read([name], t0, t1, dtype="float32")
                        except Exception:  # noqa: BLE001 - mef3io refused it
                            ref = None
                        if ref is not None and ref.shape[-1] == 0:
                            continue    # no sample in it (the server refuses such windows)
                        res = c.get_signal_range(path, [name], t0, t1)
                        if res["array"] is not None and ref is not None and \
                                np.array_equal(res["array"], ref, equal_nan=True):
                            counts["exact"] += 1
                        elif res["array"] is None and ref is None:
                            counts["refused"] += 1
                            msg = res["error_message"]
                            if f"channel {name}" not in msg or not re.search(r"\[\d+, \d+\)", msg):
                                counts["unnamed_errors"] += 1
                            if len(samples) < 3:
                                samples.append(msg)
                        else:
                            counts["garbage"] += 1
                            if len(garbage) < 5:
                                garbage.append({
                                    "channel": name, "window": [t0, t1],
                                    "server": res["error_message"] or "data",
                                    "mef3io": "refused" if ref is None else "data",
                                    "differing": None if ref is None or res["array"] is None
                                    else int((~np.isclose(res["array"], ref,
                                                          equal_nan=True)).sum())})
                reader.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return {"flips": flips, "window_s": window_s, **counts, "error_samples": samples,
            "garbage_samples": garbage}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=8)
    ap.add_argument("--window", type=int, default=30, help="seconds per checked window")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=2.0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    fig = {"corrupt_blocks": corrupt_sweep(args.flips, args.window)}
    fig["worker_kills"] = soak.run(soak.build_parser().parse_args([
        # 3 x 8 channels x 600 s at 512 Hz = 29 MB of float32 over a 4 MB cache:
        # reads keep decoding, so there are always workers to kill.
        "--clients", str(args.clients), "--duration", str(args.duration), "--sessions", "3",
        "--channels", "8", "--seconds", "600", "--tile-cache-mb", "4",
        "--kill-workers", str(args.kill_every)]))
    fig["worker_kills"].pop("rss_samples", None)
    text = json.dumps(fig, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    cb, wk = fig["corrupt_blocks"], fig["worker_kills"]
    ok = cb["garbage"] == 0 and cb["unnamed_errors"] == 0 and wk["errors"] == 0 \
        and wk["still_serving"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
