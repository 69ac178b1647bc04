"""Decode planning (pure): missing tiles -> runs of one mef3io read -> channel parts."""
from __future__ import annotations

from fake_decoder import T0, FakeChannel

from mef3io_server.server import decode_plan as dp
from mef3io_server.server import tile_grid as tg


def chans(n, fs=256.0):
    return [FakeChannel(f"c{i}", fs) for i in range(n)]


def test_consecutive_tiles_of_the_same_channels_are_one_run():
    grid = tg.TileGrid(T0, 256.0, 2560)
    cs = chans(3)
    runs = dp.tile_runs(grid, {k: cs for k in (0, 1, 2, 5, 6)}, ways=1)
    assert [ks for ks, _ in runs] == [[0, 1, 2], [5, 6]]
    assert all(c is cs for _, c in runs)


def test_tiles_of_other_channel_sets_are_other_runs():
    grid = tg.TileGrid(T0, 256.0, 2560)
    a, b = chans(2), chans(1)
    runs = dp.tile_runs(grid, {0: a, 1: a, 2: b, 3: a}, ways=1)
    assert sorted(ks for ks, _ in runs) == [[0, 1], [2], [3]]


def test_runs_are_cut_at_the_byte_cap_and_never_below_the_minimum():
    grid = tg.TileGrid(T0, 256.0, 2560)
    cs = chans(4)
    tile_bytes = 2560 * 4 * 4
    runs = dp.tile_runs(grid, {k: cs for k in range(10)}, ways=1, run_max_bytes=3 * tile_bytes)
    assert [ks for ks, _ in runs] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    runs = dp.tile_runs(grid, {k: cs for k in range(4)}, ways=1, run_max_bytes=1,
                        run_min_tiles=2)
    assert [ks for ks, _ in runs] == [[0, 1], [2, 3]]


def test_runs_are_halved_until_every_core_has_a_read():
    grid = tg.TileGrid(T0, 256.0, 2560)
    cs = chans(2)                                  # too few channels to split
    runs = dp.tile_runs(grid, {k: cs for k in range(8)}, ways=4)
    assert [ks for ks, _ in runs] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    wide = chans(16)                               # split in two parts: 2 runs x 2 parts
    runs = dp.tile_runs(grid, {k: wide for k in range(8)}, ways=4)
    assert [ks for ks, _ in runs] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_a_tile_that_is_not_whole_native_samples_is_decoded_alone():
    grid = tg.TileGrid(T0, 512.5, 1000)           # 1000 / 512.5 s is not whole microseconds
    spans = [dp.tile_native_span(grid, 512.5, k) for k in range(6)]
    assert None in spans
    runs = dp.tile_runs(grid, {k: chans(1, 512.5) for k in range(6)}, ways=1)
    for ks, _ in runs:
        assert len(ks) == 1 or all(dp.tile_native_span(grid, 512.5, k) for k in ks)
    assert sorted(k for ks, _ in runs for k in ks) == list(range(6))


def test_a_reduced_tile_spans_its_native_samples():
    grid = tg.TileGrid(T0, 128.0, 4096)           # reduced from 1024 Hz: 8x the samples
    assert dp.tile_native_span(grid, 1024.0, 3) == 4096 * 8
    assert dp.run_spans(grid, 1024.0, [0, 1]) == [4096 * 8] * 2


def test_channels_split_into_contiguous_parts_of_at_least_the_minimum():
    cs = chans(64)
    parts = dp.split_channels(cs, 2)
    assert [len(p) for p in parts] == [32, 32] and sum(parts, []) == cs
    assert dp.split_channels(chans(15), 2) == [chans(15)]     # 2 x 7.5 < 8 channels
    assert [len(p) for p in dp.split_channels(chans(20), 8)] == [10, 10]
    assert dp.split_channels(cs, 1) == [cs]
