"""GetSegments end to end: runs and gaps from the block index, checked three ways.

* against what was written (NaN spans and segment starts are known exactly),
* against mef3io's own gap report (``mef3io.inspect(read_index=True)``),
* against the served signal: samples inside runs are numbers, samples in gaps NaN.
"""
from __future__ import annotations

import warnings

import mef3io
import numpy as np
import pytest

from conftest import T0, random_walk

from mef3io_server import messages
from mef3io_server.server.segments import merge_blocks


def us(n, fs):
    """uUTC offset of sample n at fs Hz (exact for the rates used here)."""
    return int(round(n * 1e6 / fs))


@pytest.fixture
def gappy(write_recording):
    a = random_walk(5000, seed=1)
    a[1000:1500] = np.nan
    a[4000:4100] = np.nan
    return write_recording("gappy", {
        "a": a,
        "b": [(random_walk(1000, seed=2), 256.0, T0),
              (random_walk(700, seed=3), 256.0, T0 + 10_000_000)],
        "c": (random_walk(3000, seed=4), 100.3),
    }, block_length=300)


def test_runs_and_gaps_are_what_was_written(gappy, shared_server, client_factory):
    c = client_factory(shared_server.address)
    assert c.open_file(str(gappy), allow_mixed_rates=True)["file_opened"]
    seg = c.get_segments(str(gappy))
    assert list(seg) == ["a", "b", "c"]
    a = seg["a"]
    assert a["fs"] == 256.0
    assert a["runs"] == [
        {"start_uutc": T0, "end_uutc": T0 + us(1000, 256), "start_sample": 0,
         "number_of_samples": 1000},
        {"start_uutc": T0 + us(1500, 256), "end_uutc": T0 + us(4000, 256),
         "start_sample": 1000, "number_of_samples": 2500},
        {"start_uutc": T0 + us(4100, 256), "end_uutc": T0 + us(5000, 256),
         "start_sample": 3500, "number_of_samples": 900}]
    assert a["gaps"] == [{"start_uutc": T0 + us(1000, 256), "end_uutc": T0 + us(1500, 256)},
                         {"start_uutc": T0 + us(4000, 256), "end_uutc": T0 + us(4100, 256)}]
    b = seg["b"]
    assert [(r["start_uutc"], r["end_uutc"], r["start_sample"], r["number_of_samples"])
            for r in b["runs"]] == [(T0, T0 + us(1000, 256), 0, 1000),
                                    (T0 + 10_000_000, T0 + 10_000_000 + us(700, 256), 1000, 700)]
    cc = seg["c"]
    assert cc["fs"] == pytest.approx(100.3) and cc["gaps"] == []
    assert len(cc["runs"]) == 1 and cc["runs"][0]["number_of_samples"] == 3000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(gappy))
        assert cc["runs"][0]["end_uutc"] == r.info("c")["end_time"]
        r.close()
    only = c.get_segments(str(gappy), channels=["b"])
    assert list(only) == ["b"] and only["b"] == b


def test_gaps_agree_with_the_served_signal(gappy, shared_server, client_factory):
    c = client_factory(shared_server.address)
    c.open_file(str(gappy))
    runs = c.get_segments(str(gappy), ["a", "b"])
    for name in ("a", "b"):
        end = runs[name]["runs"][-1]["end_uutc"]
        res = c.get_signal_range(str(gappy), [name], T0, end)
        x = res["array"][0]
        t = T0 + np.rint(np.arange(x.size) * 1e6 / res["fs"]).astype(np.int64)
        inside = np.zeros(x.size, bool)
        for r in runs[name]["runs"]:
            inside |= (t >= r["start_uutc"]) & (t < r["end_uutc"])
        assert np.all(np.isfinite(x[inside])) and np.all(np.isnan(x[~inside]))
        assert inside.sum() == sum(r["number_of_samples"] for r in runs[name]["runs"])


@pytest.mark.parametrize("case", ["multi_segment", "nan_gap_long", "nan_gap_short",
                                  "fractional_fs", "multi_channel"])
def test_golden_gaps_match_mef3io(golden, case, shared_server, client_factory):
    path = golden / f"{case}.mefd"
    c = client_factory(shared_server.address)
    assert c.open_file(str(path), allow_mixed_rates=True)["file_opened"]
    seg = c.get_segments(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = mef3io.inspect(str(path), read_index=True)
        r = mef3io.Reader(str(path))
        infos = {ch: r.info(ch) for ch in r.channels}
        r.close()
    for ch in summary.channels:
        s = seg[ch.name]
        assert [(g["start_uutc"], g["end_uutc"]) for g in s["gaps"]] == \
            [tuple(g) for g in ch.gaps]
        assert sum(x["number_of_samples"] for x in s["runs"]) == infos[ch.name]["number_of_samples"]
        assert s["runs"][0]["start_uutc"] == infos[ch.name]["start_time"]
        assert s["runs"][-1]["end_uutc"] == infos[ch.name]["end_time"]


def test_thousands_of_runs(write_recording, shared_server, client_factory):
    x = random_walk(60_000, seed=5)
    x[np.arange(40, 60_000, 50)] = np.nan       # a one-sample gap every 50 samples
    path = write_recording("holes", {"a": x}, block_length=1000)
    c = client_factory(shared_server.address)
    c.open_file(str(path))
    seg = c.get_segments(str(path))["a"]
    # 1200 holes: [0, 40), 1199 runs of 49, [59991, 60000)
    assert len(seg["runs"]) == 1201 and len(seg["gaps"]) == 1200
    assert [r["number_of_samples"] for r in seg["runs"]] == [40] + [49] * 1199 + [9]
    assert [r["start_sample"] for r in seg["runs"]][:3] == [0, 40, 89]
    assert all(abs(g["end_uutc"] - g["start_uutc"] - 1e6 / 256) <= 1 for g in seg["gaps"])


def test_a_channel_split_over_messages_is_joined():
    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
    asm = messages.SegmentsAssembler()
    asm.feed(pb2.ChannelSegments(channel_name="a", sampling_rate=10.0, start_uutc=[0],
                                 end_uutc=[100], start_sample=[0], number_of_samples=[1]))
    asm.feed(pb2.ChannelSegments(channel_name="a", sampling_rate=10.0, start_uutc=[300],
                                 end_uutc=[400], start_sample=[1], number_of_samples=[1]))
    out = asm.result()["a"]
    assert [r["start_uutc"] for r in out["runs"]] == [0, 300]
    assert out["gaps"] == [{"start_uutc": 100, "end_uutc": 300}]
    with pytest.raises(RuntimeError, match="boom"):
        asm.feed(pb2.ChannelSegments(error_message="boom"))


def test_merge_blocks_half_sample_rule():
    fs = 1000.0   # 1000 us per sample: a block 400 us late is contiguous, 600 us late is not
    runs = merge_blocks("x", fs, [0, 10_000, 20_400, 31_000], [10_000, 20_000, 30_400, 41_000],
                        [0, 10, 20, 30], [10, 10, 10, 10])
    assert runs.start_uutc.tolist() == [0, 31_000]
    assert runs.end_uutc.tolist() == [30_400, 41_000]
    assert runs.start_sample.tolist() == [0, 30]
    assert runs.number_of_samples.tolist() == [30, 10]
    assert runs.gaps == [(30_400, 31_000)]
    empty = merge_blocks("y", fs, [], [], [], [])
    assert len(empty) == 0 and empty.gaps == []


def test_errors_are_clear(gappy, shared_server, client_factory):
    c = client_factory(shared_server.address)
    with pytest.raises(RuntimeError, match="OpenFile"):
        c.get_segments(str(gappy))
    c.open_file(str(gappy))
    with pytest.raises(RuntimeError, match="unknown channel"):
        c.get_segments(str(gappy), ["zz"])
    assert len(c.get_segments(str(gappy))) == 3


def test_golden_encrypted_level1(golden, shared_server, client_factory):
    """The level-1 password opens the block index: runs come back; records (none) too."""
    import json
    case = [c for c in json.loads((golden / "manifest.json").read_text())["cases"]
            if c["name"] == "enc_both"][0]
    path = str(golden / "enc_both.mefd")
    c = client_factory(shared_server.address)
    info = c.open_file(path, password=case["password1"])
    assert info["file_opened"], info["error_message"]
    seg = c.get_segments(path)
    for name, meta in case["channels"].items():
        runs = seg[name]["runs"]
        assert runs[0]["start_uutc"] == meta["start_time"]
        assert runs[-1]["end_uutc"] == meta["end_time"]
        assert sum(r["number_of_samples"] for r in runs) == meta["nsamp"]
    assert c.get_records(path) == []
    nobody = client_factory(shared_server.address)
    with pytest.raises(RuntimeError, match="encrypted"):
        nobody.get_segments(path)
