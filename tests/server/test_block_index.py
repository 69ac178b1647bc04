"""The block index, summarized per channel: answers equal mef3io's whole index, it is read
when reads need it (or warmed after the open), its bounds are shared by all recordings, and a
server whose index cache keeps nothing (or little) still reads exactly."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import T0, block_envelope_of as whole_index, direct_read, random_walk, write_session
from mef3io_server.server import block_index as bi
from mef3io_server.server import tile_grid as tg
from mef3io_server.server.block_index import IndexCache, Placement
from mef3io_server.server.recordings import Recording

S = 1_000_000


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


def reference_phases(path, name, grid, t0, t1):
    e = whole_index(path, name)
    starts, ends = np.asarray(e["start_uutc"]), np.asarray(e["end_uutc"])
    return tg.block_phases(grid, starts[(ends > t0) & (starts < t1)])


@pytest.mark.parametrize("cache_bytes", [1 << 20, 0])
def test_answers_equal_mef3io_s_whole_index_whatever_the_cache(gappy, small_pages, cache_bytes):
    """Random windows, pages of 7 s: has-data equals a block-by-block check of mef3io's
    whole index; the phases given for a window bound every block's there; the span
    decoded is the blocks' -- with summaries kept, or none kept (read again each time)."""
    cache = IndexCache(cache_bytes)
    rec = Recording(str(gappy), index_cache=cache)
    try:
        rng = np.random.default_rng(0)
        for name in ("a", "b"):
            ch = rec.channel(name)
            e = whole_index(gappy, name)
            starts, ends = np.asarray(e["start_uutc"]), np.asarray(e["end_uutc"])
            grid = rec.grid(ch, 256.0)
            slack = int(5e5 / ch.fs) + 1
            for _ in range(150):
                t0 = int(T0 + rng.integers(-5 * S, 125 * S))
                t1 = t0 + int(rng.integers(1, 40 * S))
                want = bool(np.any((ends > t0 - slack) & (starts < t1 + slack)))
                assert rec.has_data_many(ch, [t0], [t1]) == [want], (name, t0 - T0)
                sel = (ends > t0) & (starts < t1)
                assert rec.blocks_span(ch, t0, t1) == int((ends[sel] - starts[sel]).sum())
                got = rec.phases_in_window(ch, grid, t0, t1)
                ref = reference_phases(gappy, name, grid, t0, t1)
                assert (got.size == 0) == (ref.size == 0)
                if ref.size:
                    assert got.min() <= ref.min() + 1e-12 and got.max() >= ref.max() - 1e-12
        assert cache.nbytes <= max(cache_bytes, 0)
    finally:
        rec.close()


def test_has_data_tiles_equal_a_block_by_block_check_for_every_channel(gappy, small_pages):
    cache = IndexCache(1 << 20)
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
        assert cache.loads == 1                         # both channels' index in one call
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
        assert rec.placements([a, b], grid, T0 + 85 * S, T0 + 95 * S) == \
            [Placement.OFF_GRID, Placement.ON_GRID]
        ph = rec.phases_in_window(a, grid, T0 + 85 * S, T0 + 95 * S)
        assert ph.size and np.allclose(np.abs(ph), 0.5, atol=0.01)
        # Another grid than the channel's own (anchored half a sample later): asked of mef3io.
        shifted = tg.TileGrid(a.start_uutc + S // 512, 256.0, 2560)
        assert rec.placement(a, shifted, T0, T0 + 30 * S) is Placement.OFF_GRID
        assert rec.placement(a, shifted, T0 + 85 * S, T0 + 95 * S) is Placement.ON_GRID
    finally:
        rec.close()


def test_first_block_sets_the_grid_with_respect_mef_blocks(gappy):
    rec = Recording(str(gappy), respect_mef_blocks=True, index_cache=IndexCache(1 << 20))
    try:
        assert rec.index.first_block_samples(rec.channel("a")) == 512
        assert rec.grid(rec.channel("a"), 256.0).tile_samples % 512 == 0
    finally:
        rec.close()


def test_summaries_of_every_recording_share_one_bound(tmp_path):
    """Two recordings read in turn through one small cache: its bytes never pass the
    bound, each recording's summaries leave with it, and answers stay right."""
    paths = [write_session(tmp_path / f"r{i}.mefd", {"a": random_walk(256 * 120, i)},
                           block_length=256) for i in range(2)]
    cache = IndexCache(1500)
    recs = [Recording(str(p), index_cache=cache) for p in paths]
    try:
        for _ in range(3):
            for rec in recs:
                ch = rec.channels[0]
                assert rec.blocks_span(ch, T0, T0 + 120 * S) == 120 * S
                assert cache.nbytes <= 1500
        assert recs[0].blocks_span(recs[0].channels[0], T0, T0 + S) == S   # read again
        assert cache.kept_of(recs[0].index.owner) == 1
        recs[0].close()
        assert cache.kept_of(recs[0].index.owner) == 0
    finally:
        for rec in recs:
            if not rec.closed:
                rec.close()


def test_a_summary_is_small_and_says_where_blocks_are_off_grid(gappy):
    e = whole_index(gappy, "a")

    class Ch:
        name, fs, start_uutc = "a", 256.0, T0
    s = bi.ChannelSummary.of(Ch, T0, e["start_uutc"], e["end_uutc"])
    assert s.ordered and s.run_starts.size == 3          # before the gap, after it, segment 2
    assert list(s.off_blocks) == [0]                      # one 20480 s page: its blocks kept
    bad = bi.ChannelSummary.of(Ch, T0, [10, 0], [20, 10])
    assert not bad.ordered
    assert bi.page_span_us(256.0) == int(20480 * S) and bi.page_span_us(32000.0) == int(2048 * S)


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


def test_warming_reads_every_channels_summary_within_its_budget(tmp_path):
    """The warm-up after open: every channel's summary, in batches, no further than
    its budget; a read after it reads no index."""
    path = write_session(tmp_path / "warm.mefd", {f"c{i}": random_walk(256 * 30, i)
                                                  for i in range(6)}, block_length=256)
    cache = IndexCache(1 << 20)
    rec = Recording(str(path), index_cache=cache)
    try:
        used = rec.index.warm(1 << 20, batch=4)
        assert cache.loads == 2 and cache.kept_of(rec.index.owner) == 6
        assert used == cache.nbytes
        grid = rec.grid(rec.channels[0], 256.0)
        assert rec.has_data_tiles(rec.channels, grid, [0, 1]) == [[True, True]] * 6
        assert cache.loads == 2
    finally:
        rec.close()
    rec = Recording(str(path), index_cache=IndexCache(1 << 20))
    try:
        rec.index.warm(1, batch=2)                          # one batch, then over budget
        assert rec.index.cache.loads == 1 and rec.index.cache.kept_of(rec.index.owner) == 2
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
        assert e.index_cache.kept_of(rec.index.owner) == 2
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
