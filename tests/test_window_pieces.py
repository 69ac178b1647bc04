"""Pieces of a window whose reads join exactly to the whole window's read."""
import numpy as np
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.server.tile_grid import samples_in_window
from mef3io_server.window_pieces import piece_samples, sample_times, split_window


@pytest.mark.parametrize("fs", [256.0, 250.0, 512.5, 1000.0, 30000.0, 333.3])
@pytest.mark.parametrize("t0, t1", [(T0, T0 + 3_600_000_000), (T0 + 123_457, T0 + 987_654_321)])
def test_pieces_cover_the_window(fs, t0, t1):
    per = piece_samples(fs, 7.0)
    pieces = split_window(t0, t1, fs, per)
    assert pieces[0].j0 == 0 and pieces[0].t0 == t0 and pieces[-1].t1 == t1
    assert pieces[-1].j1 == samples_in_window(t0, t1, fs)
    for a, b in zip(pieces, pieces[1:]):
        assert a.j1 == b.j0 and a.t1 == b.t0
    for p in pieces:   # each piece read as its own window holds exactly its samples
        assert samples_in_window(p.t0, p.t1, fs) == p.n_samples


def test_piece_size_is_whole_tiles_and_bounded():
    assert piece_samples(256.0, 60.0) == 60 * 256          # 6 tiles of 2560
    assert piece_samples(256.0, 1.0) == 2560                # at least one tile
    assert piece_samples(256.0, 60.0, n_channels=64, max_bytes=64 * 4 * 5120) == 5120
    n = piece_samples(256.0, 60.0, n_channels=64, max_bytes=64 * 4 * 100)   # < one tile
    assert n % 4 == 0 and 0 < n <= 100                      # whole exact periods (4 at 256 Hz)


def test_pieces_line_up_with_tiles_from_the_anchor():
    fs, per = 256.0, 2560                                   # one 10 s tile
    t0 = T0 + 3_000_000                                     # 3 s after the anchor
    pieces = split_window(t0, T0 + 60_000_000, fs, per, anchor_uutc=T0)
    assert pieces[0].t1 == T0 + 10_000_000
    assert [p.t0 for p in pieces[1:]] == [T0 + k * 10_000_000 for k in range(1, 6)]


def test_sample_times():
    t = sample_times(T0, 0, 9, 256.0)
    assert t.dtype == np.int64
    assert list(t - T0) == [0, 3906, 7813, 11719, 15625, 19531, 23438, 27344, 31250]


@pytest.mark.parametrize("fs", [256.0, 512.5])
def test_piece_reads_join_to_the_direct_read(write_recording, fs):
    n = int(fs * 95)
    x = random_walk(n, seed=3)
    x[int(fs * 20):int(fs * 31)] = np.nan
    path = write_recording(f"pieces_{int(fs)}", {"a": (x, fs), "b": (-x, fs)})
    t0, t1 = T0 + 1_234_567, T0 + 93_000_001
    whole = direct_read(path, ["a", "b"], t0, t1)
    pieces = split_window(t0, t1, fs, piece_samples(fs, 10.0), anchor_uutc=T0)
    joined = np.concatenate([direct_read(path, ["a", "b"], p.t0, p.t1) for p in pieces], axis=1)
    assert len(pieces) > 5
    assert np.array_equal(whole, joined, equal_nan=True)


def test_pieces_off_the_anchor_grid_stay_near_tile_edges():
    fs, per = 256.0, 2560
    t0 = T0 + 3_000_001                                     # not on the anchor's sample grid
    pieces = split_window(t0, T0 + 60_000_000, fs, per, anchor_uutc=T0)
    for p in pieces[1:]:
        assert (p.t0 - t0) * 256 % 1_000_000 == 0           # whole exact periods: exact joins
        off = (p.t0 - T0) % 10_000_000
        assert min(off, 10_000_000 - off) < 4 * 1e6 / fs    # within an exact period of a tile edge
