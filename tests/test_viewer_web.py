"""The web viewer in a real headless Chromium (Debian's), against a real server.

Each test drives the page as a user does (keys, buttons, the picker, the
dialogs) and checks three things: what the page drew (the canvas's pixels,
the axis labels it wrote), the windows it asked for (the server's call log)
and what the server answered. Skipped, saying why, only where Chromium cannot
be installed (see tests/browser.py).
"""
from __future__ import annotations

import re
import time
import warnings

import mef3io
import numpy as np
import pytest
from browser import chromium_or_skip, start_chromium

from conftest import T0, launch_server, random_walk, write_session

CH = [f"E{i}" for i in range(8)]
S = 1_000_000
GAP = (100, 130)                 # seconds from the start, E0 only
LEFT, RIGHT, TOP, BOTTOM = 96, 70, 22, 26     # the page's plot margins (viewer.js)


def write_annotated(path):
    x = {c: random_walk(256 * 600, i) * 0.05 for i, c in enumerate(CH)}
    x["E0"][256 * GAP[0]:256 * GAP[1]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for c, v in x.items():
                w.write(c, v, T0, fs=256.0, precision=2)
            w.write_annotations([
                {"time": T0 + 20 * S, "text": "seizure onset"},
                {"time": T0 + 45 * S, "type": "EDFA", "text": "arousal", "duration": 5 * S}])
    return path


#: Electrodes of the 10-20 system (T3 by its 10-10 name T7), in no particular order.
EEG_1020 = ["O1", "Fp1", "C3", "T7", "F7", "P3", "F3", "Fp2"]
#: The longitudinal bipolar pairs among them, in the double banana's order.
BANANA = ["Fp1-F7", "F7-T7", "Fp1-F3", "F3-C3", "C3-P3", "P3-O1"]


def write_1020(path):
    """60 s at 256 Hz of slow drift, 10 Hz alpha and 50 Hz mains on 10-20 electrodes."""
    t = np.arange(256 * 60) / 256.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for i, c in enumerate(EEG_1020):
                x = (random_walk(t.size, 20 + i) * 0.5 + 20 * np.sin(2 * np.pi * 10 * t + i)
                     + 15 * np.sin(2 * np.pi * 50 * t))
                w.write(c, x, T0, fs=256.0, precision=2)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_data")
    ann = write_annotated(root / "ann.mefd")
    eeg = write_1020(root / "eeg1020.mefd")
    enc = write_session(root / "locked.mefd", {"a": random_walk(256 * 60, 4)},
                        password1="pw1", password2="pw2")
    outside = write_session(tmp_path_factory.mktemp("elsewhere") / "out.mefd",
                            {"a": random_walk(2560, 3)})
    return {"root": root, "ann": str(ann), "enc": str(enc), "outside": str(outside),
            "eeg": str(eeg)}


def http_base(handle) -> str:
    m = re.search(r"web viewer at (http://\S+?:\d+/)", handle.stderr_text())
    assert m, handle.stderr_text()
    return m.group(1)


@pytest.fixture(scope="module")
def server(data):
    chromium_or_skip()
    h = launch_server({"HTTP_PORT": "0", "DATA_ROOTS": str(data["root"]),
                       "BIND_ADDRESS": "127.0.0.1"})
    yield h
    h.stop()


@pytest.fixture(scope="module")
def browser():
    d = start_chromium(1920, 1080)
    yield d
    d.quit()


# ------------------------------------------------------------------ helpers

def wait_for(d, expr: str, timeout: float = 30.0):
    """The value of the JavaScript expression ``expr`` once it is truthy."""
    end = time.monotonic() + timeout
    while True:
        value = d.execute_script(f"try {{ return ({expr}); }} catch (e) {{ return null; }}")
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {expr}; errors: "
                                 f"{d.execute_script('return window.mefViewer && mefViewer.stats.errors')}")
        time.sleep(0.05)


def settle(d):
    """Wait until every request of the page (and its prefetches) has ended."""
    d.execute_async_script("const done = arguments[arguments.length - 1];"
                           "mefViewer.idle().then(() => done(true));")


def load(d, url: str):
    d.get("about:blank")
    d.get(url)


def open_view(driver, base: str, path: str, **view):
    from urllib.parse import urlencode

    d = driver
    load(d, base + "#" + urlencode({"path": path, **view}))
    wait_for(d, "mefViewer.stats.draws > 0")
    settle(d)


def drawn(d) -> dict:
    return d.execute_script("return mefViewer.stats.lastDraw")


def draws(d) -> int:
    return d.execute_script("return mefViewer.stats.draws")


def press(d, key, expect_draw=True, shift=False):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    before = draws(d)
    if shift:
        ActionChains(d).key_down(Keys.SHIFT).send_keys(key).key_up(Keys.SHIFT).perform()
    else:
        ActionChains(d).send_keys(key).perform()
    if expect_draw:
        wait_for(d, f"mefViewer.stats.draws > {before}")
    settle(d)


def click(d, css: str, expect_draw=True):
    before = draws(d)
    d.find_element("css selector", css).click()
    if expect_draw:
        wait_for(d, f"mefViewer.stats.draws > {before}")
        settle(d)


PIXELS = """
const [x0, x1, bands, want] = arguments;
const c = document.getElementById('traces');
const ctx = c.getContext('2d');
const w = c.width, h = c.height;
const top = 22, ph = h - 22 - 26;
const img = ctx.getImageData(0, 0, w, h).data;
const out = {ink: [], rows: [], match: 0, hash: 0};
for (let b = 0; b < bands; b++) {
  const ya = Math.floor(top + b * ph / bands), yb = Math.floor(top + (b + 1) * ph / bands);
  let ink = 0, rows = 0;
  for (let y = ya; y < yb; y++) {
    let any = false;
    for (let x = x0; x < x1; x++) {
      const i = (y * w + x) * 4;
      if (img[i] < 120 && img[i + 1] < 140) { ink++; any = true; }
    }
    if (any) rows++;
  }
  out.ink.push(ink); out.rows.push(rows);
}
for (let i = 0; i < img.length; i += 4) {
  if (want && Math.abs(img[i] - want[0]) < 8 && Math.abs(img[i + 1] - want[1]) < 8
      && Math.abs(img[i + 2] - want[2]) < 8) out.match++;
  out.hash = (out.hash * 31 + img[i] + 7 * img[i + 1] + 13 * img[i + 2]) % 1000000007;
}
return out;
"""


def pixels(d, x0=LEFT, x1=None, bands=8, want=None) -> dict:
    width = d.execute_script("return document.getElementById('traces').width")
    return d.execute_script(PIXELS, int(x0), int(x1 if x1 is not None else width - RIGHT),
                            bands, want)


def wrong_then_right(d, kind: str, wrong: str, says: str, right: str):
    """Answer the page's ``kind`` dialog (password, token) wrongly: it asks again, saying
    ``says``, with nothing drawn; then rightly, and wait for the drawing."""
    wait_for(d, f"document.getElementById('dlg-{kind}').open")
    d.find_element("id", f"inp-{kind}").send_keys(wrong)
    d.find_element("id", f"btn-{kind}").click()
    wait_for(d, f"document.getElementById('{kind}-text').textContent.includes({says!r})")
    assert d.execute_script("return mefViewer.stats.draws") == 0
    d.find_element("id", f"inp-{kind}").send_keys(right)
    d.find_element("id", f"btn-{kind}").click()
    wait_for(d, "mefViewer.stats.draws > 0")
    settle(d)


def x_of(d, t: int) -> float:
    v = drawn(d)
    return LEFT + (t - v["t0"]) / (v["t1"] - v["t0"]) * v["width"]


def signal_lines(server, window=None) -> list[str]:
    lines = [ln for ln in server.stderr_text().splitlines() if "http_signal" in ln]
    if window is not None:
        lines = [ln for ln in lines if f"window=[{window[0]}, {window[1]})" in ln]
    return lines


# ------------------------------------------------------------------ the tests

def test_page_forward_and_back_zoom_and_gain(server, browser, data):
    d, base = browser, http_base(server)
    open_view(d, base, data["ann"])
    v = drawn(d)
    assert (v["t0"], v["t1"], v["channels"], v["mode"]) == (T0, T0 + 10 * S, 8, "samples")
    assert v["labels"][0] == "2020-09-13 12:26:40" and "12:26:45" in v["labels"]
    first = pixels(d)
    assert all(ink > 500 for ink in first["ink"]), first["ink"]      # eight traces drawn
    assert len(signal_lines(server, (T0, T0 + 10 * S))) == 1

    press(d, "\ue014")                                                # ArrowRight: page forward
    v = drawn(d)
    assert (v["t0"], v["t1"]) == (T0 + 10 * S, T0 + 20 * S)
    assert v["labels"][0] == "2020-09-13 12:26:50"
    assert pixels(d)["hash"] != first["hash"]
    assert signal_lines(server, (T0 + 10 * S, T0 + 20 * S))          # asked for that page
    assert signal_lines(server, (T0 + 20 * S, T0 + 30 * S))          # and prefetched the next

    hits = d.execute_script("return mefViewer.stats.cacheHits")
    press(d, "\ue012")                                                # ArrowLeft: back
    assert (drawn(d)["t0"], drawn(d)["t1"]) == (T0, T0 + 10 * S)
    assert pixels(d)["hash"] == first["hash"]                         # the same drawing again
    assert d.execute_script("return mefViewer.stats.cacheHits") == hits + 1
    assert len(signal_lines(server, (T0, T0 + 10 * S))) == 1          # from the page's cache

    # The same with the buttons, and a scroll by a tenth of a page (Shift+Right).
    click(d, "#btn-next")
    assert drawn(d)["t0"] == T0 + 10 * S
    click(d, "#btn-prev")
    assert drawn(d)["t0"] == T0 and pixels(d)["hash"] == first["hash"]
    press(d, "\ue014", shift=True)
    assert drawn(d)["t0"] == T0 + S
    assert signal_lines(server, (T0 + S, T0 + 11 * S))
    press(d, "\ue012", shift=True)
    assert drawn(d)["t0"] == T0

    # Gain: one step up halves the microvolts per channel spacing; traces grow taller.
    press(d, "\ue013")                                                # ArrowUp
    assert drawn(d)["scaleUv"] == 50
    assert d.find_element("id", "scale-text").text == "50 \u00b5V"
    taller = pixels(d)
    assert sum(taller["rows"]) > 1.3 * sum(first["rows"]), (taller["rows"], first["rows"])
    press(d, "\ue015")                                                # ArrowDown: back to 100
    assert pixels(d)["hash"] == first["hash"]

    # Zoom out to the whole recording: one n_points read of the 10 minutes.
    from selenium.webdriver.support.ui import Select

    before = draws(d)
    Select(d.find_element("id", "sel-window")).select_by_visible_text("whole")
    wait_for(d, f"mefViewer.stats.draws > {before}")
    settle(d)
    v = drawn(d)
    assert (v["t0"], v["t1"], v["mode"]) == (T0, T0 + 600 * S, "points")
    assert v["labels"][0].startswith("2020-09-13 12:") and "12:30:00" in v["labels"]
    n_points = d.execute_script("return mefViewer.stats.requests.at(-1).n_points")
    assert n_points == round(2 * v["width"])
    (line,) = signal_lines(server, (T0, T0 + 600 * S))
    assert f"channels=8 bytes={n_points * 8 * 4} " in line
    assert all(ink > 500 for ink in pixels(d)["ink"])

    press(d, "+")                                                     # zoom in: 5 min
    assert drawn(d)["t1"] - drawn(d)["t0"] == 300 * S
    before = draws(d)
    Select(d.find_element("id", "sel-window")).select_by_visible_text("1 s")
    wait_for(d, f"mefViewer.stats.draws > {before}")
    settle(d)
    v = drawn(d)
    assert v["t1"] - v["t0"] == S and v["mode"] == "samples"
    assert all(re.fullmatch(r"(2020-09-13 )?12:\d\d:\d\d\.\d00", lb) for lb in v["labels"]), \
        v["labels"]
    assert signal_lines(server, (v["t0"], v["t1"]))


def test_gaps_records_overview_channels_and_url_state(server, browser, data):
    d, base = browser, http_base(server)
    open_view(d, base, data["ann"], t=T0 + 95 * S, d=20)
    # E0 has no data from 100 s: nothing drawn there in its band, but E1 is.
    xa, xb = x_of(d, T0 + 101 * S), x_of(d, T0 + 114 * S)
    inside = pixels(d, xa, xb)
    assert inside["ink"][0] == 0 and inside["ink"][1] > 200
    assert pixels(d, LEFT, x_of(d, T0 + 99 * S))["ink"][0] > 50
    assert pixels(d, xa, xb, want=(0xF0, 0xF0, 0xF0))["match"] > 1000    # shaded as a gap

    # Records: the list in the side panel; a click centres the view on it.
    click(d, "#btn-channels")
    items = d.find_elements("css selector", "#record-list li")
    assert [i.text[8:].strip() for i in items] == ["seizure onset", "arousal"]
    click(d, "#record-list li:nth-child(2)")
    v = drawn(d)
    assert v["t0"] == T0 + 47_500_000 - 10 * S and v["records"] == 1
    marker = pixels(d, want=(0xBF, 0x87, 0x00))["match"]
    assert marker > 100                                                # the dashed marker
    x = round(x_of(d, T0 + 45 * S))
    assert pixels(d, x - 2, x + 3, want=(0xBF, 0x87, 0x00))["match"] > 100

    # Per-channel gain and channel selection, in the side panel and the URL.
    click(d, "#channel-list li:nth-child(3) button:last-child")       # E2: x2
    assert "cg=E2%3A2" in d.current_url
    click(d, '#channel-list input[data-channel="E7"]')
    assert drawn(d)["channels"] == 7 and "ch=E0%2CE1" in d.current_url

    # The overview: a click at three quarters of the recording goes there.
    ov = d.find_element("id", "overview")
    w = ov.size["width"]
    from selenium.webdriver.common.action_chains import ActionChains

    before = draws(d)
    target_x = LEFT + 0.75 * (w - LEFT - RIGHT)
    ActionChains(d).move_to_element_with_offset(ov, int(target_x - w / 2), 0).click().perform()
    wait_for(d, f"mefViewer.stats.draws > {before}")
    settle(d)
    v = drawn(d)
    centre = (v["t0"] + v["t1"]) / 2
    assert abs(centre - (T0 + 450 * S)) < 2 * S, (centre - T0) / S

    # The URL holds the view: opening it again draws the same picture.
    click(d, "#btn-channels")                                          # the panel closes
    url, picture = d.current_url, pixels(d, bands=7)["hash"]
    state = d.execute_script("const s = mefViewer.state; return [s.t0, s.dur, s.scaleUv, "
                             "s.chGain, s.channels]")
    load(d, url)
    wait_for(d, "mefViewer.stats.draws > 0")
    settle(d)
    assert d.execute_script("const s = mefViewer.state; return [s.t0, s.dur, s.scaleUv, "
                            "s.chGain, s.channels]") == state
    assert pixels(d, bands=7)["hash"] == picture


def test_picker_lists_the_served_recordings(server, browser, data):
    d, base = browser, http_base(server)
    load(d, base)
    wait_for(d, "document.querySelectorAll('#recording-list li').length >= 3")
    paths = [li.get_attribute("data-path")
             for li in d.find_elements("css selector", "#recording-list li")]
    assert sorted(paths) == sorted([data["ann"], data["enc"], data["eeg"]])
    d.find_element("css selector", f'#recording-list li[data-path="{data["ann"]}"]').click()
    wait_for(d, "mefViewer.stats.draws > 0")
    assert drawn(d)["channels"] == 8


def test_one_to_256_channels(tmp_path_factory):
    """256 channels stacked (labels thinned to stay readable), or one."""
    chromium_or_skip()
    root = tmp_path_factory.mktemp("wide")
    path = write_session(root / "wide.mefd", {f"C{i:03d}": random_walk(256 * 20, i) * 0.3
                                              for i in range(256)})
    h = launch_server({"HTTP_PORT": "0", "DATA_ROOTS": str(root), "BIND_ADDRESS": "127.0.0.1"})
    d = start_chromium(1920, 1080)
    try:
        open_view(d, http_base(h), str(path))
        assert drawn(d)["channels"] == 64                  # the first 64 at first
        click(d, "#btn-channels")
        click(d, "#btn-all")
        v = drawn(d)
        assert v["channels"] == 256 and v["points"] == 256 * 2560
        ink = pixels(d, bands=256)["ink"]
        assert sum(1 for i in ink if i > 0) >= 250, ink     # every band has its trace
        click(d, "#btn-none")
        assert drawn(d)["channels"] == 1 and pixels(d, bands=1)["ink"][0] > 500
    finally:
        d.quit()
        h.stop()


def test_encrypted_recording_needs_its_password(server, browser, data):
    d, base = browser, http_base(server)
    load(d, base + "#path=" + data["enc"])
    wrong_then_right(d, "password", "wrong", "Wrong password", "pw2")
    assert drawn(d)["channels"] == 1 and pixels(d, bands=1)["ink"][0] > 500
    assert signal_lines(server, (T0, T0 + 10 * S))

    # Without it: the dialog is cancelled and the page says why nothing is shown.
    d.execute_script("sessionStorage.clear()")                       # a new page session
    load(d, base + "#path=" + data["enc"])
    wait_for(d, "document.getElementById('dlg-password').open")
    d.find_element("css selector", "#dlg-password button[value=cancel]").click()
    text = wait_for(d, "!document.getElementById('banner').hidden && "
                       "document.getElementById('banner').textContent")
    assert "encrypted" in text and "password" in text
    assert d.execute_script("return mefViewer.stats.draws") == 0


def test_a_path_outside_data_roots_is_refused(server, browser, data):
    d, base = browser, http_base(server)
    load(d, base + "#path=" + data["outside"])
    text = wait_for(d, "!document.getElementById('banner').hidden && "
                       "document.getElementById('banner').textContent")
    assert "DATA_ROOTS" in text or "outside" in text, text
    assert d.execute_script("return mefViewer.stats.draws") == 0
    assert any("http_open" in ln and f"file={data['outside']} " in ln and "outcome=error" in ln
               for ln in server.stderr_text().splitlines())


def test_a_montage_and_a_filter_are_drawn_logged_and_kept_in_the_url(server, browser, data):
    from selenium.webdriver.support.ui import Select

    d, base = browser, http_base(server)
    open_view(d, base, data["eeg"])
    assert d.find_element("id", "grp-montage").is_displayed()
    assert d.find_element("id", "grp-filter").is_displayed()
    def select(name):            # found again each time: the page rebuilds its options
        return Select(d.find_element("id", f"sel-{name}"))

    assert [o.text for o in select("montage").options] == ["referential", "average reference",
                                                  "bipolar (longitudinal)"]
    assert [o.text for o in select("filter").options] == ["none", "0.5-70 Hz", "0.5-70 Hz + 50 Hz notch",
                                                 "0.5-70 Hz + 60 Hz notch"]
    v = drawn(d)
    assert v["names"] == sorted(EEG_1020, key=str.lower) and v["mode"] == "samples"
    referential = pixels(d, bands=8)
    window = (T0, T0 + 10 * S)
    assert not any("montage=" in ln for ln in signal_lines(server, window))

    def choose(name, value):
        before = draws(d)
        select(name).select_by_value(value)
        wait_for(d, f"mefViewer.stats.draws > {before}")
        settle(d)

    choose("montage", "bipolar")
    v = drawn(d)
    assert v["names"] == BANANA                     # the labels the page wrote
    bipolar_px = pixels(d, bands=6)
    assert bipolar_px["hash"] != referential["hash"]
    assert all(ink > 500 for ink in bipolar_px["ink"]), bipolar_px["ink"]
    assert any("montage='bipolar' filter=''" in ln for ln in signal_lines(server, window))

    choose("filter", "0.5-70Hz-notch50")
    v = drawn(d)
    assert v["names"] == BANANA and v["mode"] == "samples"
    filtered = pixels(d, bands=6)
    assert filtered["hash"] != bipolar_px["hash"]
    # Drift and mains gone: the traces keep to fewer rows of their bands.
    assert sum(filtered["rows"]) < sum(bipolar_px["rows"]), (filtered["rows"], bipolar_px["rows"])
    asked = [ln for ln in signal_lines(server, window)
             if "montage='bipolar' filter='0.5-70Hz-notch50'" in ln]
    assert len(asked) == 1 and "outcome=ok" in asked[0]
    # The next page was prefetched with them too.
    assert any("montage='bipolar' filter='0.5-70Hz-notch50'" in ln
               for ln in signal_lines(server, (T0 + 10 * S, T0 + 20 * S)))

    # The URL keeps them: a new tab on it draws the same.
    url = d.current_url
    assert "montage=bipolar" in url and "filter=0.5-70Hz-notch50" in url
    load(d, url)
    wait_for(d, "mefViewer.stats.draws > 0")
    settle(d)
    assert drawn(d)["names"] == BANANA
    assert select("montage").first_selected_option.text == "bipolar (longitudinal)"
    assert select("filter").first_selected_option.text == "0.5-70 Hz + 50 Hz notch"
    assert pixels(d, bands=6)["hash"] == filtered["hash"]

    # The whole recording: an n_points read of the montage (no block envelope of it).
    before = draws(d)
    Select(d.find_element("id", "sel-window")).select_by_visible_text("whole")
    wait_for(d, f"mefViewer.stats.draws > {before}")
    settle(d)
    v = drawn(d)
    assert v["names"] == BANANA and v["mode"] == "points", v
    n_points = d.execute_script("return mefViewer.stats.requests.at(-1).n_points")
    (line,) = [ln for ln in signal_lines(server, (v["t0"], v["t1"]))
               if "montage='bipolar' filter='0.5-70Hz-notch50'" in ln]
    assert f"channels=8 bytes={n_points * len(BANANA) * 4} " in line
    assert all(ink > 300 for ink in pixels(d, bands=6)["ink"])

    choose("montage", "")                            # back to referential, filter kept
    assert drawn(d)["names"] == sorted(EEG_1020, key=str.lower)


def test_a_superseded_view_is_not_drawn_and_its_request_is_aborted(server, browser, data):
    d, base = browser, http_base(server)
    open_view(d, base, data["ann"])
    aborted = d.execute_script("return mefViewer.stats.aborted")
    # Two views asked at once: the first (2 minutes, not cached) is given up for the second.
    d.execute_script("mefViewer.goTo(%d); mefViewer.setDuration(120e6); mefViewer.setDuration(1e6);"
                     % (T0 + 300 * S))
    wait_for(d, "mefViewer.stats.lastDraw.t1 - mefViewer.stats.lastDraw.t0 === 1e6")
    settle(d)
    assert d.execute_script("return mefViewer.stats.aborted") > aborted
    v = drawn(d)
    t0_2min = T0 + 300 * S - 60 * S
    # The server stops a request the page gave up. A read whose tiles were already
    # cached (other tests read this region) may have been answered before the page's
    # abort reached it: that one is "ok" and quick, never a long read left running.
    for line in signal_lines(server, (t0_2min, t0_2min + 120 * S)):
        took = float(line.split("duration_ms=")[1].split()[0])
        assert "outcome=cancelled" in line or ("outcome=ok" in line and took < 250), line


@pytest.mark.parametrize("which", ["ann", "enc"])
def test_a_tab_whose_session_expired_opens_the_recording_again(which, data):
    """A tab left idle past SESSION_TTL_S reads on: the page opens the recording again
    (with the password it was opened with) and retries, instead of showing an error."""
    chromium_or_skip()
    h = launch_server({"HTTP_PORT": "0", "DATA_ROOTS": str(data["root"]),
                       "BIND_ADDRESS": "127.0.0.1", "SESSION_TTL_S": "1"})
    d = start_chromium(1280, 800)
    try:
        load(d, http_base(h) + "#path=" + data[which])
        if which == "enc":
            wait_for(d, "document.getElementById('dlg-password').open")
            d.find_element("id", "inp-password").send_keys("pw2")
            d.find_element("id", "btn-password").click()
        wait_for(d, "mefViewer.stats.draws > 0")
        settle(d)
        time.sleep(3)                                   # the session expires meanwhile
        press(d, "\ue010")                              # End: a page not read yet
        v = drawn(d)
        assert v["t1"] == d.execute_script("return mefViewer.state.info.end_uutc")
        assert d.execute_script("return mefViewer.stats.reopened") >= 1
        assert d.execute_script("return mefViewer.stats.errors") == []
        assert d.find_element("id", "banner").is_displayed() is False
    finally:
        d.quit()
        h.stop()


def test_a_wrong_token_is_asked_again(tmp_path, data):
    chromium_or_skip()
    tokens = tmp_path / "tokens"
    tokens.write_text("alice s3cret\n")
    h = launch_server({"HTTP_PORT": "0", "DATA_ROOTS": str(data["root"]),
                       "BIND_ADDRESS": "127.0.0.1", "AUTH_TOKENS_FILE": str(tokens)})
    d = start_chromium(1280, 800)
    try:
        load(d, http_base(h) + "#path=" + data["ann"])
        wrong_then_right(d, "token", "guess", "not accepted", "s3cret")
        assert drawn(d)["channels"] == 8 and pixels(d)["ink"][3] > 200
        assert any("http_signal identity=alice" in ln for ln in h.stderr_text().splitlines())
    finally:
        d.quit()
        h.stop()
