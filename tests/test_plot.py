"""plot.py: an amplitude scale that says what it is, annotations readable, durations as spans."""
from __future__ import annotations

import re

import numpy as np
import pytest

from mef3io_server.plot import Trace, plot_traces

T0 = 1_704_067_200_000_000
S = 1_000_000


def _traces(n=3, amplitudes=(30.0, 30.0, 30.0)):
    t = T0 + np.arange(0, 120 * 256) * (S / 256)
    rng = np.random.default_rng(0)
    return [Trace(f"Ch{i + 1}", t, rng.standard_normal(t.size) * amplitudes[i], units="uV")
            for i in range(n)]


@pytest.fixture
def svg_text(monkeypatch):
    """Texts of an SVG written with fonttype "none" (text kept as <text> elements)."""
    import matplotlib

    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")

    def texts(path):
        return re.findall(r"<text\b([^>]*)>(.*?)</text>", path.read_text(), re.S)
    return texts


def test_one_amplitude_scale_with_a_scale_bar_that_says_so(tmp_path, svg_text):
    out = plot_traces(tmp_path / "p.svg", _traces(), T0, T0 + 120 * S)
    texts = [t for _, t in svg_text(out)]
    bars = [t for t in texts if re.fullmatch(r"\d+(\.\d+)? uV", t.strip())]
    assert len(bars) == 1, texts           # one bar: one scale for every row
    assert any("one amplitude scale" in t for t in texts)
    out = plot_traces(tmp_path / "c.svg", _traces(), T0, T0 + 120 * S, common_scale=False)
    texts = [t for _, t in svg_text(out)]
    assert len([t for t in texts if t.strip().endswith(" uV")]) == 3
    assert any("own amplitude scale" in t for t in texts)


def test_row_scales_share_one_scale_per_unit():
    from mef3io_server.plot import nice_step, row_scales

    tr = _traces(amplitudes=(10.0, 30.0, 1000.0))
    tr[2].units = "mV"
    common = row_scales(tr)
    assert common[0] == common[1] != common[2]      # the mV channel keeps its own
    own = row_scales(tr, common=False)
    assert own[0] < own[1] < own[2]
    assert nice_step(73) == 50 and nice_step(0.3) == 0.2 and nice_step(100) == 100


def test_annotation_text_is_horizontal_and_a_duration_is_a_span(tmp_path, svg_text):
    import matplotlib.image as mpimg

    records = [{"time_uutc": T0 + 20 * S, "duration_us": 20 * S, "type": "EDFA",
                "text": "seizure onset", "channel": None},
               {"time_uutc": T0 + 80 * S, "duration_us": None, "type": "Note",
                "text": "eyes closed", "channel": "Ch2"}]
    out = plot_traces(tmp_path / "a.svg", _traces(), T0, T0 + 120 * S, records)
    attrs = {t.strip(): a for a, t in svg_text(out)}
    for label in ("seizure onset", "eyes closed"):
        assert label in attrs, list(attrs)
        angle = re.search(r"rotate\((-?[\d.]+)", attrs[label])
        assert angle is None or float(angle.group(1)) == 0, attrs[label]   # horizontal
    png = plot_traces(tmp_path / "a.png", _traces(), T0, T0 + 120 * S, records)
    img = mpimg.imread(png)[..., :3]
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    frame = np.nonzero((img.max(axis=2) < 0.05).sum(axis=0) > 100)[0]       # axes frame
    x0, x1 = frame.min(), frame.max()
    tint = (r > 0.9) & (g < 0.93) & (g > 0.75) & (b > 0.75) & (r - b > 0.05)  # light red span
    cols = np.nonzero(tint.sum(axis=0) > 20)[0]
    assert cols.size, "no span drawn"
    frac = (cols.min() - x0) / (x1 - x0), (cols.max() - x0) / (x1 - x0)
    assert abs(frac[0] - 20 / 120) < 0.02 and abs(frac[1] - 40 / 120) < 0.02, frac
