"""The block index, paged: answers equal mef3io's whole index, pages load as reads need them,
and a server whose index cache keeps nothing (or little) still reads exactly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server.server import block_index as bi
from mef3io_server.server import tile_grid as tg
from mef3io_server.server.block_index import IndexCache, Placement
from mef3io_server.server.recordings import Recording

S = 1_000_000


def whole_index(path, name):
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mef3io.Reader(str(path))
        try:
            return r.block_envelope(name)
        finally:
            r.close()


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 7 s: every few blocks cross a page boundary."""
    monkeypatch.setattr(bi, "PAGE_SECONDS_SLOW", 7.0)


@pytest.fixture
def gappy(tmp_path):
    """Two channels, 2 s blocks, a gap, a second segment starting half a sample off."""
    a = random_walk(256 * 60, 1)
    a[256 * 20:256 * 31] = np.nan
    off = T0 + 80 * S + S // 512                    # half a sample at 256 Hz
    return write_session(tmp_path / "gappy.mefd", {
        "a": [(a, 256.0, T0), (random_walk(256 * 30, 2), 256.0, off)],
        "b": (random_walk(256 * 60, 3), 256.0, T0)}, block_length=512)


@pytest.mark.parametrize("cache_bytes", [1 << 20, 0, 3000])
def test_blocks_of_any_window_are_mef3io_s_whatever_the_cache(gappy, small_pages, cache_bytes):
    """Random windows across pages: each block once, the same as mef3io's whole index
    cut to the window -- with pages kept, none kept, or a few evicted all the time."""
    cache = IndexCache(cache_bytes)
    rec = Recording(str(gappy), index_cache=cache)
    try:
        rng = np.random.default_rng(0)
        for name in ("a", "b"):
            ch = rec.channel(name)
            e = whole_index(gappy, name)
            starts, ends = np.asarray(e["start_uutc"]), np.asarray(e["end_uutc"])
            for _ in range(150):
                t0 = int(T0 + rng.integers(-5 * S, 125 * S))
                t1 = t0 + int(rng.integers(1, 40 * S))
                b = rec.index.blocks(ch, t0, t1)
                sel = (ends > t0) & (starts < t1)
                assert np.array_equal(b.starts, starts[sel]), (name, t0 - T0, t1 - T0)
                assert np.array_equal(b.ends, ends[sel])
                assert np.array_equal(b.mins, np.asarray(e["min"])[sel], equal_nan=True)
                assert b.ordered
                assert rec.blocks_span(ch, t0, t1) == int((ends[sel] - starts[sel]).sum())
        assert cache.nbytes <= max(cache_bytes, 0)
    finally:
        rec.close()


def test_has_data_tiles_equal_a_block_by_block_check_for_every_channel(gappy, small_pages):
    cache = IndexCache(2000)          # a page or two: loads and evictions all along
    rec = Recording(str(gappy), index_cache=cache)
    try:
        chans = rec.channels
        grid = rec.grid(chans[0], 256.0)
        ks = list(range(-2, 14))
        got = rec.has_data_tiles(chans, grid, ks)
        for ch, flags in zip(chans, got):
            e = whole_index(gappy, ch.name)
            slack = int(5e5 / ch.fs) + 1
            want = []
            for k in ks:
                a, b = grid.tile_window(k)
                want.append(any(int(en) > a - slack and int(st) < b + slack
                                for st, en in zip(e["start_uutc"], e["end_uutc"])))
            assert flags == want, ch.name
        assert False in got[0] and True in got[0]       # the gap and the data were asked
        assert cache.loads > 1
    finally:
        rec.close()


def test_placement_is_decided_by_the_pages_of_the_span_asked(gappy, small_pages):
    """The off-grid second segment makes only the spans holding it off grid."""
    rec = Recording(str(gappy), index_cache=IndexCache(1 << 20))
    try:
        a, b = rec.channel("a"), rec.channel("b")
        grid = tg.TileGrid(a.start_uutc, 256.0, 2560)
        assert rec.placement(a, grid, T0, T0 + 30 * S) is Placement.ON_GRID
        assert rec.placement(a, grid, T0 + 85 * S, T0 + 95 * S) is Placement.OFF_GRID
        assert rec.placement(a, grid, T0, T0 + 100 * S) is Placement.OFF_GRID
        assert rec.placement(b, grid, T0, T0 + 60 * S) is Placement.ON_GRID
        ph = rec.phases_in_window(a, grid, T0 + 85 * S, T0 + 95 * S)
        assert ph.size and np.allclose(np.abs(ph), 0.5, atol=0.01)
    finally:
        rec.close()


def test_first_block_sets_the_grid_with_respect_mef_blocks(gappy):
    rec = Recording(str(gappy), respect_mef_blocks=True, index_cache=IndexCache(1 << 20))
    try:
        assert rec.index.first_block_samples(rec.channel("a")) == 512
        assert rec.grid(rec.channel("a"), 256.0).tile_samples % 512 == 0
    finally:
        rec.close()


def test_pages_of_every_recording_share_one_bound(tmp_path, small_pages):
    """Two recordings read in turn through one small cache: its bytes never pass the
    bound, each recording's pages leave with it, and answers stay right."""
    paths = [write_session(tmp_path / f"r{i}.mefd", {"a": random_walk(256 * 120, i)},
                           block_length=256) for i in range(2)]
    cache = IndexCache(4096)
    recs = [Recording(str(p), index_cache=cache) for p in paths]
    try:
        for _ in range(3):
            for rec in recs:
                ch = rec.channels[0]
                assert rec.blocks_span(ch, T0, T0 + 120 * S) == 120 * S
                assert cache.nbytes <= 4096
        assert recs[0].blocks_span(recs[0].channels[0], T0, T0 + S) == S   # a page back in
        assert cache.pages_of(recs[0].index.owner) > 0
        recs[0].close()
        assert cache.pages_of(recs[0].index.owner) == 0
    finally:
        for rec in recs:
            if not rec.closed:
                rec.close()


def test_pages_by_rate_and_span():
    assert bi.page_span_us(256.0) == int(20480 * S)
    assert bi.page_span_us(32000.0) == int(2048 * S)
    page = bi.IndexPage.from_envelope({"start_uutc": [0, 10], "end_uutc": [10, 20],
                                       "min": [0.0, 1.0], "max": [1.0, 2.0]})
    assert page.ordered and page.nbytes == bi.PAGE_OVERHEAD_BYTES + 2 * bi.BYTES_PER_BLOCK
    bad = bi.IndexPage.from_envelope({"start_uutc": [10, 0], "end_uutc": [20, 10],
                                      "min": [0.0, 1.0], "max": [1.0, 2.0]})
    assert not bad.ordered


# ---- a real server, a recording of three pages, little or no index kept


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory):
    """16 Hz, 2 channels, ~17 h: three index pages, gaps across two page boundaries."""
    fs, n = 16.0, int(16 * 61440)
    a, b = random_walk(n, 7), random_walk(n, 8)
    for edge in (20480, 40960):
        a[int((edge - 100) * fs):int((edge + 300) * fs)] = np.nan
    return write_session(tmp_path_factory.mktemp("pages") / "pages.mefd",
                         {"a": a, "b": b}, fs=fs, block_length=1600)


@pytest.mark.parametrize("index_mb", ["0", "0.005", "64"])
def test_served_reads_equal_mef3io_with_any_index_cache(three_pages, start_server,
                                                        client_factory, index_mb):
    server = start_server(INDEX_CACHE_MB=index_mb)
    c = client_factory(server.address)
    assert c.open_file(str(three_pages))["error_message"] == ""
    rng = np.random.default_rng(int(float(index_mb) * 1000))
    spans = [(20380, 20400), (40900, 41300), (0, 30), (61400, 61460)]
    spans += [(int(s), int(s) + int(rng.integers(5, 600))) for s in rng.integers(0, 61000, 8)]
    for s0, s1 in spans + spans[:3]:            # again: from the tiles and memos
        t0, t1 = T0 + s0 * S, T0 + s1 * S
        res = c.get_signal_range(str(three_pages), ["a", "b"], t0, t1)
        assert res["error_message"] == "", (s0, s1)
        assert np.array_equal(res["array"], direct_read(three_pages, ["a", "b"], t0, t1),
                              equal_nan=True), (index_mb, s0, s1)


def test_warming_loads_each_channels_first_page_within_its_budget(tmp_path, small_pages):
    """The warm-up after open: the first page of every channel, in batches, and no
    further than its budget; a read after it loads nothing for that span."""
    path = write_session(tmp_path / "warm.mefd", {f"c{i}": random_walk(256 * 30, i)
                                                  for i in range(6)}, block_length=256)
    cache = IndexCache(1 << 20)
    rec = Recording(str(path), index_cache=cache)
    try:
        used = rec.index.warm(1 << 20, batch=4)
        assert cache.loads == 2 and cache.pages_of(rec.index.owner) == 6
        assert used == cache.nbytes
        assert rec.has_data_many(rec.channels[3], [T0], [T0 + 3 * S]) == [True]
        rec.index.pages(rec.channels, T0, T0 + 3 * S)       # within the first 7 s page
        assert cache.loads == 2
    finally:
        rec.close()
    rec = Recording(str(path), index_cache=IndexCache(1 << 20))
    try:
        rec.index.warm(1, batch=2)                          # one batch, then over budget
        assert rec.index.cache.loads == 1 and rec.index.cache.pages_of(rec.index.owner) == 2
    finally:
        rec.close()


def test_an_engine_warms_the_index_of_what_it_opens(tmp_path):
    from mef3io_server.server.config import Settings
    from mef3io_server.server.engine import Engine

    path = write_session(tmp_path / "eng.mefd", {"a": random_walk(256 * 30, 1),
                                                 "b": random_walk(256 * 30, 2)})
    e = Engine(Settings(index_cache_bytes=1 << 20))
    try:
        e.open_file("", str(path))
        rec = e.recording("", str(path))
        e.index_warmer.close()                              # waits for the warm-up
        assert e.index_cache.pages_of(rec.index.owner) == 2
    finally:
        e.close()


def test_the_memos_of_all_recordings_share_one_bound(tmp_path, monkeypatch):
    """Answers memoized by several recordings never pass the cache's memo limit: the
    largest memo starts over, and answers stay right after it did."""
    monkeypatch.setattr(IndexCache, "MIN_MEMO_ENTRIES", 50)
    paths = [write_session(tmp_path / f"m{i}.mefd", {"a": random_walk(256 * 600, i),
                                                     "b": random_walk(256 * 600, i + 9)})
             for i in range(3)]
    cache = IndexCache(0)
    assert cache.memo_limit == 50
    recs = [Recording(str(p), index_cache=cache) for p in paths]
    try:
        for rec in recs:
            grid = rec.grid(rec.channels[0], 256.0)
            for k0 in range(0, 60, 6):
                ks = list(range(k0, k0 + 6))
                assert rec.has_data_tiles(rec.channels, grid, ks) == [[True] * 6] * 2
                assert cache.memo_entries <= 50 + 12
                assert sum(r.index.memo_size for r in recs) == cache.memo_entries
        assert rec.has_data_tiles(rec.channels, grid, [61, 62]) == [[False] * 2] * 2
    finally:
        for rec in recs:
            rec.close()
    assert cache.memo_entries == 0
