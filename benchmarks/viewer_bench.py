"""The web viewer's speed, measured in a real headless Chromium with the page's own marks.

    python benchmarks/viewer_bench.py [--flips 200] [--memory-flips 500] [--runs 3]
                                      [--screenshots docs/img]

On a 64-channel, 24-hour, 256 Hz recording (benchmarks/viewer_data.py writes it
once), served by ``python -m mef3io_server.server`` with ``HTTP_PORT``, at a
1920 x 1080 viewport:

* **page flip**: 10 s pages of 64 channels; before each key press the page's
  prefetch of the next page has finished (the next page is cached). The page
  marks the key press (``performance.mark`` in its keydown handler) and
  measures to the end of its drawing calls (``performance.measure``).
* **zoom out** from a 10 s page to the whole 24 h: *cold* in a fresh server
  process and a fresh page, *warm* once the page has the block envelopes.
* **memory**: the page's JavaScript heap (``performance.memory``, after a
  forced GC) every 100 flips over ``--memory-flips`` flips.
* ``--screenshots DIR``: pictures of the viewer for the docs.

Results go to ``benchmarks/results/viewer.json`` and are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from browser import start_chromium  # noqa: E402
from viewer_data import START_UUTC, day_recording  # noqa: E402

US = 1_000_000


class Server:
    """``python -m mef3io_server.server`` with the HTTP side on a free port."""

    def __init__(self, roots: str, **env):
        e = dict(os.environ, PORT="0", HTTP_PORT="0", BIND_ADDRESS="127.0.0.1",
                 DATA_ROOTS=roots, TILE_CACHE_MB="1024", PYTHONUNBUFFERED="1", **env)
        self.proc = subprocess.Popen([sys.executable, "-m", "mef3io_server.server"], env=e,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on port" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        ready.wait(120)
        m = re.search(r"web viewer at (http://\S+?:\d+/)", "".join(self.lines))
        if not m:
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        self.base = m.group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def wait(d, expr, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = d.execute_script(f"try {{ return ({expr}); }} catch (e) {{ return null; }}")
        if v:
            return v
        time.sleep(0.01)
    raise TimeoutError(expr)


def settle(d):
    d.execute_async_script("const done = arguments[arguments.length - 1];"
                           "mefViewer.idle().then(() => done(true));")


def open_page(driver, base, path, **view):
    from urllib.parse import urlencode

    d = driver
    d.get("about:blank")
    d.get(base + "#" + urlencode({"path": path, **view}))
    wait(d, "mefViewer.stats.draws > 0")
    settle(d)


def key(d, k):
    from selenium.webdriver.common.action_chains import ActionChains

    before = d.execute_script("return mefViewer.stats.draws")
    ActionChains(d).send_keys(k).perform()
    wait(d, f"mefViewer.stats.draws > {before}")


def select_window(d, text):
    from selenium.webdriver.support.ui import Select

    before = d.execute_script("return mefViewer.stats.draws")
    Select(d.find_element("id", "sel-window")).select_by_visible_text(text)
    wait(d, f"mefViewer.stats.draws > {before}")
    settle(d)
    return d.execute_script("return mefViewer.stats.zooms.at(-1)")


def heap(d) -> int:
    assert d.execute_script("return typeof window.gc") == "function"
    d.execute_script("window.gc(); window.gc()")
    return d.execute_script("return performance.memory.usedJSHeapSize")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def flips(d, base, path, n):
    open_page(d, base, path, t=START_UUTC + 2 * 3600 * US, d=10)
    start = len(d.execute_script("return mefViewer.stats.flips"))
    for _ in range(n):
        settle(d)                      # the next page is cached (prefetched) before the key
        key(d, "\ue014")
    out = d.execute_script("return mefViewer.stats.flips")[start:]
    mode = d.execute_script("return mefViewer.stats.lastDraw")
    assert mode["channels"] == 64 and mode["mode"] == "samples", mode
    return out


def zooms(d, path, runs):
    cold, warm, zin = [], [], []
    for _ in range(runs):
        s = Server(str(Path(path).parent))
        try:
            open_page(d, s.base, path, t=START_UUTC + 6 * 3600 * US, d=10)
            cold.append(select_window(d, "whole"))
            assert d.execute_script("return mefViewer.stats.lastDraw.mode") == "envelope"
            for _ in range(2):
                zin.append(select_window(d, "10 s"))
                warm.append(select_window(d, "whole"))
        finally:
            s.stop()
    return cold, warm, zin


# Flips driven inside the page (a keydown event on the document, the next page cached
# first): every WebDriver command leaves some state of chromedriver's in the page's heap
# (~20 KB per flip with the commands flips() sends), which would hide the page's own.
FLIP_IN_PAGE = """
const [n, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  for (let i = 0; i < n; i++) {
    await mefViewer.idle();
    const before = mefViewer.stats.draws;
    document.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight", bubbles: true}));
    while (mefViewer.stats.draws === before) await new Promise((r) => setTimeout(r, 1));
  }
  await mefViewer.idle();
  done(true);
})();
"""


def memory(d, base, path, n, every=50):
    """The page's JS heap (after GC) every ``every`` flips, from its first flip."""
    d.set_script_timeout(1200)
    open_page(d, base, path, t=START_UUTC + 3600 * US, d=10)
    samples = [(0, heap(d))]
    for i in range(every, n + 1, every):
        d.execute_async_script(FLIP_IN_PAGE, every)
        samples.append((i, heap(d)))
    return samples


def screenshots(out: Path, day: str):
    """The viewer on the demo, an annotated recording and the benchmark's day."""
    from mef3io_server.demo import DEMO_START_UUTC, write_demo

    out.mkdir(parents=True, exist_ok=True)
    demo_dir = ROOT / "benchmarks" / ".data" / "demo"
    demo = write_demo(demo_dir / "demo.mefd")
    ann = demo_dir / "annotated.mefd"
    if not ann.exists():
        import mef3io
        import numpy as np
        from mef3io_server.demo import _signal

        rng = np.random.default_rng(7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mef3io.Writer(str(ann), overwrite=True, units="uV") as w:
                for c in range(19):
                    x = _signal(rng, 256 * 600, 256.0, c)
                    if c == 4:
                        x[256 * 130:256 * 142] = np.nan     # one channel drops out
                    w.write(f"EEG{c + 1}", x, DEMO_START_UUTC, fs=256.0, precision=2)
                w.write_annotations([
                    {"time": DEMO_START_UUTC + 125 * US, "text": "eyes closed"},
                    {"time": DEMO_START_UUTC + 133 * US, "type": "EDFA", "text": "arousal",
                     "duration": 4 * US},
                    {"time": DEMO_START_UUTC + 139 * US, "text": "eyes open"}])
    shots = []
    s = Server(f"{demo_dir}:{Path(day).parent}")
    d = start_chromium(1920, 1080)
    try:
        open_page(d, s.base, str(demo), t=DEMO_START_UUTC + 600 * US, d=10)
        d.save_screenshot(str(out / "viewer-demo.png"))
        shots.append("viewer-demo.png")
        d.find_element("id", "btn-channels").click()
        settle(d)
        open_page(d, s.base, str(ann), t=DEMO_START_UUTC + 122 * US, d=20)
        d.find_element("id", "btn-channels").click()
        wait(d, "!document.getElementById('side').hidden")
        settle(d)
        time.sleep(0.3)
        d.save_screenshot(str(out / "viewer-records.png"))
        shots.append("viewer-records.png")
        open_page(d, s.base, day, t=START_UUTC, d=86400, g=1000)
        d.save_screenshot(str(out / "viewer-day.png"))
        shots.append("viewer-day.png")
    finally:
        d.quit()
        s.stop()
    d = start_chromium(1366, 768)          # a laptop screen
    s = Server(str(demo_dir))
    try:
        open_page(d, s.base, str(demo), t=DEMO_START_UUTC + 1190 * US, d=60)
        d.save_screenshot(str(out / "viewer-laptop-gap.png"))
        shots.append("viewer-laptop-gap.png")
    finally:
        d.quit()
        s.stop()
    return shots


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--memory-flips", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3, help="cold zoom runs (a new server each)")
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    t = time.time()
    print("writing (once) or reusing the 64 ch x 24 h recording...", file=sys.stderr)
    path = str(day_recording())
    print(f"  {path} ({time.time() - t:.0f} s)", file=sys.stderr)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{os.cpu_count()} cores", "recording": "64 ch x 24 h x 256 Hz",
              "viewport": "1920x1080"}
    s = Server(str(Path(path).parent))
    d = start_chromium(1920, 1080, ["--js-flags=--expose-gc"])
    try:
        f = flips(d, s.base, path, args.flips)
        result["flip_ms"] = {"n": len(f), "p50": pct(f, 50), "p95": pct(f, 95), "max": max(f)}
        print(f"page flip (64 ch x 10 s, next page cached), {len(f)} flips: "
              f"p50 {pct(f, 50):.1f} ms, p95 {pct(f, 95):.1f} ms, max {max(f):.1f} ms")
        mem = memory(d, s.base, path, args.memory_flips)
        result["heap_bytes"] = mem
        print("JS heap after GC every 50 flips (MB): "
              + ", ".join(f"{i}: {b / 2**20:.1f}" for i, b in mem))
    finally:
        d.quit()
        s.stop()
    d = start_chromium(1920, 1080)
    try:
        cold, warm, zin = zooms(d, path, args.runs)
    finally:
        d.quit()
    result["zoom_out_cold_ms"] = cold
    result["zoom_out_warm_ms"] = warm
    result["zoom_in_ms"] = zin
    print(f"zoom out 10 s -> 24 h x 64 ch: cold {min(cold):.0f}-{max(cold):.0f} ms "
          f"({len(cold)} runs), warm {min(warm):.0f}-{max(warm):.0f} ms; "
          f"zoom in to 10 s {min(zin):.0f}-{max(zin):.0f} ms")
    if args.screenshots:
        result["screenshots"] = screenshots(args.screenshots, path)
        print("screenshots:", ", ".join(result["screenshots"]))
    out = ROOT / "benchmarks" / "results" / "viewer.json"
    out.write_text(json.dumps(result, indent=1))
    print("results:", out.relative_to(ROOT))


if __name__ == "__main__":
    main()
