"""Draw docs/img/derived-*.png from a real run: a real-looking EEG written with
mef3io.Writer, served by a real server, read through Mef3Client.

Usage: ``.venv/bin/python scripts/derived_figures.py`` (about a minute). Every
trace drawn is what the server answered; nothing is computed here except the
"client-side, per page" filtering shown for contrast in the seams figure.
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "img"

T0 = 1_600_000_000_000_000
FS = 256.0
MINUTES = 20
EEG = ["Fp1", "F3", "C3", "P3", "O1", "Fp2", "F4", "C4", "P4", "O2"]
GAP = (600.0, 604.0)             # seconds: the amplifier was disconnected


def pink(rng, n: int) -> np.ndarray:
    """1/f noise (the background of an EEG)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / x.std()


def write_recording(path: str) -> None:
    import mef3io

    rng = np.random.default_rng(7)
    n = int(FS * MINUTES * 60)
    t = np.arange(n) / FS
    common = 30 * pink(rng, n) + 15 * np.cumsum(rng.standard_normal(n)) / np.sqrt(FS * 60)
    mains = 25 * (1 + 0.3 * np.sin(2 * np.pi * t / 97)) * np.sin(2 * np.pi * 50 * t)
    alpha = np.sin(2 * np.pi * 10.2 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 23) ** 2)
    blinks = np.zeros(n)
    for s in rng.uniform(5, MINUTES * 60 - 5, MINUTES * 6):
        blinks += 180 * np.exp(-0.5 * ((t - s) / 0.12) ** 2)
    chans = {}
    for i, name in enumerate(EEG):
        x = 12 * pink(rng, n) + common + mains
        if name[0] in "PO":
            x += 25 * alpha
        if name.startswith("Fp"):
            x += blinks
        elif name.startswith("F"):
            x += 0.4 * blinks
        if name == "C3":                      # a burst of muscle artefact
            k = (t > 312) & (t < 314)
            x[k] += 40 * rng.standard_normal(k.sum())
        x[int(GAP[0] * FS):int(GAP[1] * FS)] = np.nan
        chans[name] = x
    n_ecg = int(512 * MINUTES * 60)
    te = np.arange(n_ecg) / 512
    ecg = np.zeros(n_ecg)
    beat = 0.0
    while beat < te[-1]:
        ecg += 900 * np.exp(-0.5 * ((te - beat) / 0.012) ** 2) \
            - 150 * np.exp(-0.5 * ((te - beat - 0.03) / 0.02) ** 2) \
            + 200 * np.exp(-0.5 * ((te - beat - 0.25) / 0.06) ** 2)
        beat += 60 / 68 + rng.normal(0, 0.02)
    ecg += 20 * rng.standard_normal(n_ecg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(path, overwrite=True, units="uV") as w:
            for name, x in chans.items():
                w.write(name, x, T0, fs=FS, precision=1)
            w.write("ECG", ecg, T0, fs=512.0, precision=1)
            w.write("Resp", 300 * np.sin(2 * np.pi * np.arange(int(32 * MINUTES * 60)) / 32
                                         / 4.2), T0, fs=32.0, precision=1)


def stack(ax, t, rows, names, spacing, **kw):
    for k, (row, name) in enumerate(zip(rows, names)):
        ax.plot(t, row - k * spacing, lw=0.6, **kw)
    ax.set_yticks([-k * spacing for k in range(len(names))], names)
    ax.set_xlim(t[0], t[-1])


def main() -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal

    from mef3io_server.client import Mef3Client
    from mef3io_server.montages import average_reference, bandpass, bipolar, notch
    from mef3io_server.server.app import build_server
    from mef3io_server.server.config import load_settings

    path = str(Path(tempfile.mkdtemp()) / "viewer_figures.mefd")
    write_recording(path)
    server = build_server(load_settings({"PORT": "0"}))
    chain = ["Fp1", "F3", "C3", "P3", "O1"]
    pairs = list(zip(chain[:-1], chain[1:]))
    filters = [bandpass(0.5, 70), notch(50)]
    try:
        with Mef3Client(f"localhost:{server.port}", raise_errors=True) as c:
            c.open_file(path)
            s = lambda sec: T0 + int(sec * 1e6)        # noqa: E731
            a, b = s(300), s(310)

            # 1. montages
            raw = c.get_signal_range(path, chain, a, b)
            bip = c.get_signal_range(path, None, a, b, montage=bipolar(pairs))
            avg = c.get_signal_range(path, None, a, b, montage=average_reference(chain))
            t = np.arange(raw["array"].shape[1]) / FS
            fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True)
            for ax, res, title in ((axes[0], raw, "recorded (referential)"),
                                   (axes[1], bip, "bipolar(pairs)"),
                                   (axes[2], avg, "average_reference(channels)")):
                stack(ax, t, res["array"], res["channel_names"], 250, color="k")
                ax.set_title(title)
                ax.set_xlabel("s")
            fig.suptitle("montage=: derived channels computed by the server on native samples")
            fig.tight_layout()
            fig.savefig(OUT / "derived-montage.png", dpi=90)
            plt.close(fig)

            # 2. filters, and seams between pages
            f0, f1 = s(300), s(302)
            res0 = c.get_signal_range(path, ["Fp1"], f0, f1)
            res1 = c.get_signal_range(path, ["Fp1"], f0, f1, filters=[bandpass(0.5, 70)])
            res2 = c.get_signal_range(path, ["Fp1"], f0, f1, filters=filters)
            t = np.arange(res0["array"].shape[1]) / FS
            fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(13, 9.5))
            ax1.plot(t, res0["array"][0], lw=0.6, color="0.6", label="Fp1, unfiltered")
            ax1.plot(t, res1["array"][0] - 150, lw=0.6, color="tab:blue",
                     label="bandpass(0.5, 70)  (offset -150)")
            ax1.plot(t, res2["array"][0] - 300, lw=0.7, color="k",
                     label="bandpass(0.5, 70) + notch(50)  (offset -300)")
            ax1.legend(loc="upper right", fontsize=8)
            ax1.set_title("filters=: zero-phase (sosfiltfilt); the notch takes the 50 Hz mains out")
            ax1.set_xlabel("s")
            page = 4 * 10**6
            p0 = s(400)
            one_filter = [bandpass(0.5, 70)]
            served = [c.get_signal_range(path, ["Fp1"], p0 + k * page, p0 + (k + 1) * page,
                                         filters=one_filter)["array"][0] for k in range(3)]
            plain = [c.get_signal_range(path, ["Fp1"], p0 + k * page, p0 + (k + 1) * page,
                                        )["array"][0] for k in range(3)]
            sos = signal.butter(2, [0.5, 70], "bandpass", output="sos", fs=FS)
            naive = [signal.sosfiltfilt(sos, x.astype(np.float64)) for x in plain]
            long = c.get_signal_range(path, ["Fp1"], p0 - 30 * 10**6, p0 + 42 * 10**6,
                                      filters=one_filter)["array"][0]
            i = int(30 * FS)
            long = long[i:i + 3 * served[0].size]
            tt = np.arange(3 * served[0].size) / FS
            ax2.plot(tt, np.concatenate(naive), lw=0.7, color="tab:red",
                     label="each page filtered on its own by the client")
            ax2.plot(tt, np.concatenate(served), lw=0.7, color="k",
                     label="three pages filtered by the server")
            ax3.plot(tt, np.concatenate(naive) - long, lw=0.8, color="tab:red",
                     label="client, page by page")
            ax3.plot(tt, np.concatenate(served) - long, lw=0.8, color="k",
                     label="server, page by page")
            for ax in (ax2, ax3):
                for k in (1, 2):
                    ax.axvline(k * served[0].size / FS, color="0.5", ls=":")
                ax.legend(loc="upper right", fontsize=8)
                ax.set_xlabel("s")
            ax2.set_title("three consecutive 4 s pages of Fp1, bandpass(0.5, 70) (dotted: page "
                          "edges)")
            ax3.set_title("difference from the same filter over a 72 s stretch (uV): the "
                          "server's pages have no edges")
            fig.tight_layout()
            fig.savefig(OUT / "derived-filters.png", dpi=90)
            plt.close(fig)

            # 3. a gap restarts the filter
            one = [("Fp1", "F3")]
            g0, g1 = s(GAP[0] - 3), s(GAP[1] + 3)
            raw = c.get_signal_range(path, None, g0, g1, montage=bipolar(one))["array"][0]
            flt = c.get_signal_range(path, None, g0, g1, montage=bipolar(one),
                                     filters=filters)["array"][0]
            t = np.arange(raw.size) / FS + GAP[0] - 3
            fig, ax = plt.subplots(figsize=(13, 3.2))
            ax.plot(t, raw, lw=0.6, color="0.6", label="Fp1-F3")
            ax.plot(t, flt - 250, lw=0.6, color="k", label="filtered (offset -250)")
            ax.axvspan(*GAP, color="tab:orange", alpha=0.15, label="gap (NaN)")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_title("a gap restarts the filter: no ringing carried across it")
            ax.set_xlabel("s")
            fig.tight_layout()
            fig.savefig(OUT / "derived-gap.png", dpi=90)
            plt.close(fig)

            # 4. overview
            whole = (T0, T0 + MINUTES * 60 * 10**6)
            ov_raw = c.get_signal_range(path, ["Fp1", "F3"], *whole, n_points=2000)
            ov = c.get_signal_range(path, None, *whole, n_points=2000, montage=bipolar(one),
                                    filters=filters)
            t = np.linspace(0, MINUTES, 2000, endpoint=False)
            fig, ax = plt.subplots(figsize=(13, 3.8))
            ax.plot(t, ov_raw["array"][0], lw=0.6, color="0.6", label="Fp1 recorded")
            ax.plot(t, ov["array"][0] - 600, lw=0.6, color="k",
                    label="Fp1-F3, bandpass + notch (offset -600)")
            ax.set_xlabel("minutes")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_title("n_points=2000 of the derived, filtered signal: drift gone, blinks kept")
            fig.tight_layout()
            fig.savefig(OUT / "derived-overview.png", dpi=90)
            plt.close(fig)

            # 5. mixed rates
            m0, m1 = s(100), s(106)
            mix = c.get_signal_range(path, ["C3", "ECG", "Resp"], m0, m1, mixed_rates=True)
            pts = c.get_signal_range(path, ["C3", "ECG", "Resp"], s(0), s(600), n_points=1200,
                                     mixed_rates=True)
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4))
            for k, (name, arr, fs) in enumerate(zip(mix["channel_names"], mix["arrays"],
                                                    mix["fs"])):
                ax1.plot(np.arange(arr.size) / fs, arr / max(1, np.nanmax(np.abs(arr))) - 2.2 * k,
                         lw=0.7, label=f"{name}: {fs:g} Hz, {arr.size} samples")
            ax1.legend(loc="upper right", fontsize=8)
            ax1.set_title("mixed_rates=True: each channel at its own rate")
            ax1.set_xlabel("s")
            ax1.set_yticks([])
            for k, (name, arr, fs) in enumerate(zip(pts["channel_names"], pts["arrays"],
                                                    pts["fs"])):
                ax2.plot(np.arange(arr.size) / fs / 60, arr / max(1, np.nanmax(np.abs(arr)))
                         - 2.2 * k, lw=0.7, label=f"{name}: {arr.size} points")
            ax2.legend(loc="upper right", fontsize=8)
            ax2.set_title("with n_points=1200: one bucket grid for every channel")
            ax2.set_xlabel("minutes")
            ax2.set_yticks([])
            fig.tight_layout()
            fig.savefig(OUT / "derived-mixed-rates.png", dpi=90)
            plt.close(fig)
    finally:
        server.stop(0)
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("derived-*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
