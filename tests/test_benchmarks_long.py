"""benchmarks/long_recordings_bench.py: its command line and pure helpers (no data, no servers)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "long_recordings_bench.py"


@pytest.fixture(scope="module")
def lb():
    spec = importlib.util.spec_from_file_location("long_recordings_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help_runs():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for opt in ("--quick", "--only", "--sizes", "--no-published", "--ref", "--label"):
        assert opt in r.stdout


def test_bad_group_is_a_usage_error():
    r = subprocess.run([sys.executable, str(SCRIPT), "--only", "nonsense"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "nonsense" in r.stderr


def test_parse_size(lb):
    assert lb.parse_size("64ch_1h") == (64, 3600)
    assert lb.parse_size("64ch_24h") == (64, 86400)
    assert lb.parse_size("64ch_7d") == (64, 7 * 86400)
    assert lb.parse_size("8ch_10min") == (8, 600)
    assert lb.parse_size("2ch_90s") == (2, 90)
    for bad in ("64_1h", "ch_1h", "64ch", "64ch_1y", "0ch_1h", "64ch_0h"):
        with pytest.raises(ValueError):
            lb.parse_size(bad)


def test_parse_sizes_orders_by_length_then_channels(lb):
    assert lb.parse_sizes("64ch_7d,1024ch_1h,64ch_1h,64ch_1h", False) == \
        ["64ch_1h", "1024ch_1h", "64ch_7d"]
    assert lb.parse_sizes("", True) == list(lb.QUICK_SIZES)
    assert lb.parse_sizes(None, False) == list(lb.SIZES)


def test_parse_only(lb):
    assert lb.parse_only("") == list(lb.GROUPS)
    assert lb.parse_only("open, idle") == ["open", "idle"]
    with pytest.raises(ValueError):
        lb.parse_only("open,speed")


def test_formatting(lb):
    assert lb.fmt_ms(None) == "n/a"
    assert lb.fmt_ms(0.0123) == "12.3 ms"
    assert lb.fmt_ms(0.00123) == "1.23 ms"
    assert lb.fmt_ms(1.5) == "1500 ms"
    assert lb.fmt_mb(3 * 2**20) == "3.0 MB"
    assert lb.fmt_mb(-2**20, signed=True) == "-1.0 MB"
    assert lb.size_label("64ch_7d") == "64 ch x 7 days"
    assert lb.size_label("64ch_24h") == "64 ch x 24 h"
    assert lb.size_label("8ch_10min") == "8 ch x 10 min"
    assert lb.cpu_percent(100, 103, 30.0, 100) == pytest.approx(0.1)


def test_md_table(lb):
    t = lb.md_table(["a", "b"], [["x", "1"], ["y", "2"]])
    assert t.splitlines() == ["| a | b |", "|---|---:|", "| x | 1 |", "| y | 2 |"]
    with pytest.raises(ValueError):
        lb.md_table(["a", "b"], [["only one"]])


def _res(lb):
    mb = 2**20
    sizes = {
        "64ch_1h": {"ours": {"open_s": 0.010, "rss_growth": 2 * mb, "rss_after": 100 * mb,
                             "warm_read_s": 0.004},
                    "published": {"open_s": 0.050, "rss_growth": 5 * mb, "warm_read_s": 0.008},
                    "direct": {"open_s": 0.008}},
        "1024ch_1h": {"ours": {"open_s": 0.100, "warm_read_s": 0.075},
                      "published": {"open_s": 0.5, "warm_read_s": 0.120},
                      "direct": {"open_s": 0.090}},
        "64ch_7d": {"ours": {"open_s": 0.030, "rss_growth": 9 * mb, "rss_growth_2s": 6 * mb},
                    "direct": {"open_s": 0.020}},
    }
    return {"targets": {"ours": "ours", "published": "published", "direct": "direct"},
            "sizes": sizes, "idle": {"ours": {"recording": "64ch_7d", "cpu_1_pct": 0.1,
                                              "cpu_51_pct": 0.5, "rss_per_recording": 51200}},
            "idle_s": 30.0}


def test_goals(lb):
    gs = {g["goal"]: g for g in lb.goals(_res(lb))}
    o = gs["open within 2x of direct at every length and channel count"]
    assert o["met"] and o["measured"] == "worst 1.5x (64ch_7d)"
    assert gs["open 64 ch x 7 days"]["met"]
    mem = gs["memory after open, 64 ch: 7 days minus 1 h"]
    assert not mem["met"] and mem["measured"] == "+7.0 MB"      # the larger of the two figures
    warm = gs["warm 10 s x 1024 ch vs the published server"]
    assert not warm["met"] and warm["measured"].startswith("0.6")
    lin = [g for name, g in gs.items() if name.startswith("warm 10 s linear")][0]
    assert lin["met"]                                              # 62.5 -> 73 us per channel
    idle = [g for name, g in gs.items() if name.startswith("idle CPU")][0]
    assert not idle["met"]


def test_report_md_has_every_section(lb):
    text = lb.report_md(_res(lb))
    assert "### Open and memory after open" in text
    assert "| 64 ch x 7 days | 30.0 ms / n/a / 20.0 ms |" in text
    assert "### Reads of 10 s x all channels" in text
    assert "### Idle CPU and memory per open recording" in text
    assert "50 KB" in text
    assert "### Goals (issue 21), ours" in text
