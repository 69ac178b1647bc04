"""The command line (``mef3io-server ls/info/get/plot``) run for real against a real server.

Every command runs as a subprocess (the installed entry point), talks to a
server subprocess over gRPC, and its output files are compared with direct
mef3io reads exactly. Tests of what needs the GetRecords / GetSegments /
ListRecordings RPCs skip while the client lacks them.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import T0, direct_read, launch_server, random_walk
from mef3io_server.client import Mef3Client
from mef3io_server.window_pieces import sample_times

FS = 256.0
SEG = 60          # seconds per segment
GAP = 30          # seconds between them
ANNOT_T = T0 + 20_000_000


def _has(method: str) -> bool:
    return hasattr(Mef3Client, method)


def _cli_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mef3io-server"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mef3io_server.cli"]


def run_cli(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([*_cli_cmd(), *map(str, args)], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """3 channels at 256 Hz in two segments with a 30 s gap, one at 512 Hz, two annotations."""
    import mef3io

    path = tmp_path_factory.mktemp("cli") / "cli_rec.mefd"
    n = int(SEG * FS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mef3io.Writer(str(path), overwrite=True, units="uV") as w:
            for i, name in enumerate(["a", "b", "c"]):
                w.write(name, random_walk(n, seed=i), T0, fs=FS, precision=2)
                w.write(name, random_walk(n, seed=10 + i), T0 + (SEG + GAP) * 1_000_000,
                        fs=FS, precision=2, new_segment=True)
            w.write("fast", random_walk(int((2 * SEG + GAP) * 512), seed=7), T0, fs=512.0,
                    precision=2)
            w.write_annotations([{"time": ANNOT_T, "type": "Note", "text": "eyes closed"}])
            w.write_annotations([{"time": ANNOT_T + 5_000_000, "type": "Note",
                                  "text": "spike"}], channel="b")
    return path


@pytest.fixture(scope="module")
def server(recording):
    h = launch_server({"DATA_ROOTS": str(recording.parent)})
    yield h
    h.stop()


def test_every_command_has_clear_help():
    for cmd, words in [("ls", ["ROOT", "DATA_ROOTS"]), ("info", ["FILE", "--json"]),
                       ("get", ["--channels", "--start", "--end", "--duration", ".npz", ".csv", "+1h30m",
                                "--token", "--root-certificates", "--client-id"]),
                       ("plot", ["--points", "local time", "gaps"]), ("serve", ["PATH"]),
                       ("demo", ["--output"])]:
        out = run_cli(cmd, "--help").stdout
        assert out.startswith(f"Usage: mef3io-server {cmd}")
        for w in words:
            assert w in out, (cmd, w)
    top = run_cli("--help").stdout
    for cmd in ("serve", "demo", "ls", "info", "get", "plot"):
        assert f"  {cmd} " in top


def test_info(server, recording):
    out = run_cli("info", server.address, recording).stdout
    assert str(recording) in out
    assert f"({T0} uUTC)" in out
    assert f"({T0 + (2 * SEG + GAP) * 1_000_000} uUTC, excluded)" in out
    assert "duration:  2m30s" in out
    for name in ("a", "b", "c", "fast"):
        assert any(line.split()[:2] == [name, "256" if name != "fast" else "512"]
                   for line in out.splitlines()), name


def test_info_json(server, recording):
    import json

    info = json.loads(run_cli("info", server.address, recording, "--json").stdout)
    assert info["channel_names"] == ["a", "b", "c", "fast"]
    assert info["start_uutc"] == T0


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_get_matches_a_direct_read(server, recording, tmp_path, suffix):
    out = tmp_path / f"x{suffix}"
    # +7s .. +1m43.5s crosses the gap; 10 s pieces make 10 requests.
    p = run_cli("get", server.address, recording, "-c", "c,a", "-s", "+7s", "-e", "+1m43.5s",
                "-o", out, "--piece-s", "10", "--progress")
    t0, t1 = T0 + 7_000_000, T0 + 103_500_000
    ref = direct_read(recording, ["c", "a"], t0, t1)
    assert np.isnan(ref).any() and np.isfinite(ref).any()
    assert "wrote" in p.stderr
    if suffix == ".npy":
        got = np.load(out)
        assert got.dtype == np.float32
        assert np.array_equal(got, ref, equal_nan=True)
    elif suffix == ".npz":
        z = np.load(out)
        assert np.array_equal(z["data"], ref, equal_nan=True)
        assert z["data"].dtype == np.float32
        assert list(z["channel_names"]) == ["c", "a"]
        assert float(z["fs"]) == FS
        assert int(z["start_uutc"]) == t0 and int(z["end_uutc"]) == t1
        assert np.array_equal(z["times_uutc"], sample_times(t0, 0, ref.shape[1], FS))
        assert z["times_uutc"][1] - z["times_uutc"][0] == 3906
    else:
        lines = out.read_text().splitlines()
        assert lines[0] == "time_uutc,c,a"
        table = np.loadtxt(out, delimiter=",", skiprows=1, dtype=np.float64)
        assert np.array_equal(table[:, 0].astype(np.int64), sample_times(t0, 0, ref.shape[1], FS))
        assert np.array_equal(table[:, 1:].T.astype(np.float32), ref, equal_nan=True)


def test_get_with_iso_and_uutc_times_and_default_channels(server, recording, tmp_path):
    out = tmp_path / "y.npy"
    # 2020-09-13T12:26:40Z is T0; the end as uUTC. Default channels would mix rates:
    run_cli("get", server.address, recording, "-c", "fast", "-s", "2020-09-13T12:26:45.5Z",
            "-e", str(T0 + 150_000_000), "-o", out)
    ref = direct_read(recording, ["fast"], T0 + 5_500_000, T0 + 150_000_000)
    assert np.array_equal(np.load(out), ref, equal_nan=True)
    # --duration instead of --end, from an ISO time with an offset
    run_cli("get", server.address, recording, "-c", "b", "-s", "2020-09-13T14:26:41+02:00",
            "-d", "1m30.5s", "-o", out)
    ref = direct_read(recording, ["b"], T0 + 1_000_000, T0 + 91_500_000)
    assert np.array_equal(np.load(out), ref, equal_nan=True)


def test_get_whole_channels_by_default(server, recording, tmp_path):
    out = tmp_path / "z.npy"
    run_cli("get", server.address, recording, "-c", "a", "-c", "b", "-o", out)
    ref = direct_read(recording, ["a", "b"], T0, T0 + (2 * SEG + GAP) * 1_000_000)
    assert np.array_equal(np.load(out), ref, equal_nan=True)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pixels(img, rgb, tol=0.08) -> np.ndarray:
    return np.abs(img[..., :3] - np.asarray(rgb)).max(axis=-1) < tol


def test_plot(server, recording, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "p.png"
    p = run_cli("plot", server.address, recording, "-s", "+5s", "-e", "+2m", "-o", out,
                "--points", "500")
    assert _is_png(out)
    img = mpimg.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 1000
    blue = img[..., 2] - img[..., 0] > 0.3                    # the traces (C0)
    grey = _pixels(img, (0.85, 0.85, 0.85), 0.02)              # the shaded gap
    assert blue.sum() > 2000
    # The gap (+60 s .. +90 s of a +5 s .. +120 s window) is shaded over its 30 s
    # in the rows of a, b and c, and no trace is drawn inside it.
    cols = np.nonzero(grey.sum(axis=0) > 30)[0]
    assert cols.size > 0
    axes_cols = np.nonzero(_pixels(img, (0, 0, 0), 0.05).sum(axis=0) > 100)[0]  # axes frame
    x0, x1 = axes_cols.min(), axes_cols.max()
    frac = (cols.min() - x0) / (x1 - x0), (cols.max() - x0) / (x1 - x0)
    assert abs(frac[0] - 55 / 115) < 0.02 and abs(frac[1] - 85 / 115) < 0.02, frac
    inner = slice(cols.min() + 3, cols.max() - 3)
    rows_grey = np.nonzero(grey[:, inner].any(axis=1))[0]
    top, bottom = rows_grey.min(), rows_grey.max()
    assert not blue[top:top + (bottom - top) * 2 // 3, inner].any()   # rows a, b (c: "fast" may reach in)
    if not _has("get_records"):
        assert "note:" in p.stderr   # degrades: says what it could not draw


@pytest.mark.skipif(not (_has("get_segments") and _has("get_records")),
                    reason="needs the GetSegments/GetRecords client methods (branch extras-rpc)")
def test_plot_with_gaps_and_annotations(server, recording, tmp_path):
    out = tmp_path / "g.png"
    p = run_cli("plot", server.address, recording, "--utc", "-o", out)
    assert "note:" not in p.stderr
    assert _is_png(out)
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    red = (img[..., 0] - img[..., 2] > 0.4) & (img[..., 1] < 0.4)   # annotation lines (C3)
    cols = np.nonzero(red.sum(axis=0) > 20)[0]
    assert cols.size > 0
    axes_cols = np.nonzero(_pixels(img, (0, 0, 0), 0.05).sum(axis=0) > 100)[0]
    x0, x1 = axes_cols.min(), axes_cols.max()
    # the session note at +20 s and the channel note at +25 s of a 150 s window
    for t in (20, 25):
        want = x0 + (x1 - x0) * t / 150
        assert np.abs(cols - want).min() < 4, (t, cols)


@pytest.mark.skipif(not _has("get_segments"),
                    reason="needs the GetSegments client method (branch extras-rpc)")
def test_info_shows_gaps(server, recording):
    out = run_cli("info", server.address, recording).stdout
    line_a = next(line for line in out.splitlines() if line.split()[:1] == ["a"])
    assert line_a.rstrip().endswith("1 (30s)")


@pytest.mark.skipif(not _has("list_recordings"),
                    reason="needs the ListRecordings client method (branch extras-rpc)")
def test_ls(server, recording):
    out = run_cli("ls", server.address, recording.parent).stdout
    line = next(line for line in out.splitlines() if line.startswith(str(recording)))
    assert "4 ch" in line and "256-512 Hz" in line and "2m30s" in line


def _assert_one_line_error(p: subprocess.CompletedProcess, *words):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_errors_are_one_line(server, recording, tmp_path):
    a, rec, out = server.address, str(recording), str(tmp_path / "e.npy")
    cases = [
        (["get", a, rec, "-c", "a,nope", "-o", out], ["nope"]),
        (["get", a, rec, "-c", "a", "-s", "+10x", "-o", out], ["+10x"]),
        (["get", a, rec, "-c", "a", "-s", "tomorrow", "-o", out], ["tomorrow", "ISO 8601"]),
        (["get", a, rec, "-o", out], ["different sampling rates", "--channels"]),
        (["get", a, rec, "-c", "a", "-s", "+1m", "-e", "+30s", "-o", out], ["empty window"]),
        (["get", a, rec, "-c", "a", "-e", "+1m", "-d", "5s", "-o", out], ["not both"]),
        (["get", a, rec, "-c", "a", "-d", "5 parsecs", "-o", out], ["duration"]),
        (["get", a, rec, "-c", "a", "-o", str(tmp_path / "e.txt")], [".npy"]),
        (["get", a, str(tmp_path / "missing.mefd"), "-o", out], ["cannot open"]),
        (["info", "localhost:1", rec], ["cannot reach the server"]),
        (["plot", a, rec, "-c", "zz", "-o", str(tmp_path / "e.png")], ["zz"]),
    ]
    if not _has("list_recordings"):
        cases.append((["ls", a], ["ListRecordings"]))
    else:   # a directory outside DATA_ROOTS is refused
        cases.append((["ls", a, str(tmp_path)], []))
    for args, words in cases:
        _assert_one_line_error(run_cli(*args, check=False), *words)
    assert not Path(out).exists()


def test_get_refuses_an_absurd_window_at_once(server, recording, tmp_path):
    """57 years of 3 channels: refused before anything is planned or read (it hung and grew
    to gigabytes planning 30 million pieces)."""
    out = tmp_path / "huge.npy"
    p = subprocess.run([*_cli_cmd(), "get", server.address, str(recording), "-c", "a,b,c",
                        "-s", "0", "-e", "1800000000000000", "-o", str(out)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    _assert_one_line_error(p, "free", "shorter window")
    assert not out.exists()


def test_windows_without_data_are_refused_and_partial_ones_noted(server, recording, tmp_path):
    a, rec, out = server.address, str(recording), tmp_path / "w.npy"
    for args, words in [(["-s", "+2h", "-d", "10s"], ["holds no data", "nothing read"]),
                        (["-s", str(T0 // 1_000_000), "-d", "10s"], ["looks like seconds"]),
                        (["-s", str(T0 // 1000), "-d", "10s"], ["looks like milliseconds"]),
                        (["-s", "2020-09-12T00:00:00Z", "-d", "1h"], ["holds no data"])]:
        _assert_one_line_error(run_cli("get", a, rec, "-c", "a", *args, "-o", out,
                                       check=False), *words)
        assert not out.exists()
    # Half of the window before the data: read, and said.
    p = run_cli("get", a, rec, "-c", "a", "-s", str(T0 - 10_000_000), "-d", "20s", "-o", out)
    assert "note: " in p.stderr and "starts 10s before the data" in p.stderr
    arr = np.load(out)
    assert np.isnan(arr[:, :2560]).all() and not np.isnan(arr[:, 2560:]).any()


def test_a_closed_pipe_ends_the_command_quietly(server, recording):
    """``mef3io-server info ... | head -1``: no "Broken pipe" error, the status of a SIGPIPE."""
    proc = subprocess.Popen([*_cli_cmd(), "info", server.address, str(recording)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    proc.stdout.close()                  # the reader is gone before the first line
    _, err = proc.communicate(timeout=60)
    assert err == "" and proc.returncode == 141, (proc.returncode, err)


def test_address_is_optional_and_relative_files_are_taken_from_here(server, recording,
                                                                   tmp_path):
    env = {**__import__("os").environ, "MEF3IO_ADDRESS": server.address}

    def cli(*args, cwd=None):
        return subprocess.run([*_cli_cmd(), *map(str, args)], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL, env=env, cwd=cwd)

    p = cli("info", recording)
    assert p.returncode == 0 and "channels:  4" in p.stdout, p.stderr
    p = cli("info", recording.name, cwd=recording.parent)       # relative to this directory
    assert p.returncode == 0 and f"file:      {recording}" in p.stdout, p.stderr
    p = cli("get", recording.name, "-c", "a", "-d", "1s", "-o", tmp_path / "r.npy",
            cwd=recording.parent)
    assert p.returncode == 0 and np.load(tmp_path / "r.npy").shape == (1, 256), p.stderr
    if _has("list_recordings"):
        p = cli("ls", recording.parent)                          # one argument: a ROOT
        assert p.returncode == 0 and str(recording) in p.stdout, p.stderr
    for args, words in [((server.address,), "looks like an ADDRESS"),   # the FILE forgotten
                        (("localhost",), "looks like an ADDRESS"),
                        ((), "Missing argument 'FILE'")]:
        p = cli("info", *args)
        assert p.returncode == 2 and words in p.stderr, p.stderr
    _assert_one_line_error(cli("get", recording, "-c", "a", "-d", "1s", "-o",
                               tmp_path / "no" / "x.npy"), "there is no folder")


def test_a_server_wanting_a_token_names_the_option(recording, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token-of-enough-length\n")
    h = launch_server({"AUTH_TOKENS_FILE": str(tokens), "DATA_ROOTS": str(recording.parent)})
    try:
        _assert_one_line_error(run_cli("info", h.address, recording, check=False),
                               "requires a bearer token", "--token", "MEF3IO_TOKEN")
        _assert_one_line_error(run_cli("info", h.address, recording, "--token", "nope",
                                       check=False), "did not accept the token")
        assert run_cli("info", h.address, recording, "--token",
                       "s3cret-token-of-enough-length").returncode == 0
    finally:
        h.stop()


def test_a_missing_extra_names_the_command_that_installs_it_here():
    from mef3io_server.client_commands import one_line

    msg = one_line(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"))
    root = Path(__file__).resolve().parent.parent
    assert f"{sys.executable} -m pip install -e '{root}[plot]'" in msg, msg
