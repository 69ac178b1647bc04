"""Recording: opened from metadata only; the block index questions the tile store asks."""
from __future__ import annotations


import numpy as np

from conftest import T0, block_envelope_of, random_walk
from mef3io_server.server.block_index import IndexCache
from mef3io_server.server.recordings import Recording

S = 1_000_000


def index_of(path, name):
    """The channel's whole block index as mef3io reads it: the reference."""
    e = block_envelope_of(path, name)
    return np.asarray(e["start_uutc"]), np.asarray(e["end_uutc"])


def overlaps(index, fs, a: int, b: int) -> bool:
    """The reference, block by block in Python integers: a block overlaps ``[a, b)``
    with half a sample of slack."""
    slack = int(5e5 / fs) + 1
    return any(int(e) > a - slack and int(s) < b + slack for s, e in zip(*index))


def test_has_data_many_answers_as_each_window_checked_block_by_block(write_recording):
    """Over windows before, across, inside and after blocks and a 30 s gap."""
    data = random_walk(256 * 120, 3)
    data[256 * 40:256 * 70] = np.nan                     # a gap: no blocks there
    path = write_recording("hd", {"a": data}, block_length=256 * 5)
    rec = Recording(str(path))
    try:
        ch = rec.channels[0]
        index = index_of(path, "a")
        rng = np.random.default_rng(0)
        t0s = T0 + rng.integers(-20 * S, 140 * S, 400)
        t1s = t0s + rng.integers(1, 20 * S, 400)
        got = [rec.has_data_many(ch, [a], [b])[0] for a, b in zip(t0s, t1s)]
        assert got == [overlaps(index, ch.fs, int(a), int(b)) for a, b in zip(t0s, t1s)]
        assert True in got and False in got               # both answers were asked for
        assert rec.has_data_many(ch, t0s, t1s) == got      # all at once: the same
        assert rec.has_data_many(ch, [T0 + 50 * S], [T0 + 60 * S]) == [False]   # in the gap
        assert rec.has_data_many(ch, [], []) == []
    finally:
        rec.close()


def test_has_data_many_of_windows_beyond_int64_is_false(write_recording):
    """Windows at the ends of the uUTC range (a fuzzer's): no data, no overflow."""
    path = write_recording("edge", {"a": random_walk(256 * 20, 1)})
    rec = Recording(str(path))
    try:
        ch = rec.channels[0]
        index = index_of(path, "a")
        big, small = 2**63 - 1, -2**63
        got = [rec.has_data_many(ch, [a], [b])[0]
               for a, b in [(big - 10, big + 10**9), (small, small + 10), (T0, T0 + S)]]
        assert got == [False, False, True]
        assert got == [overlaps(index, ch.fs, big - 10, big + 10**9),
                       overlaps(index, ch.fs, small, small + 10),
                       overlaps(index, ch.fs, T0, T0 + S)]
    finally:
        rec.close()


def test_open_reads_no_block_index_and_reads_read_it_once(write_recording):
    """Opening reads no block index; a read's questions read the index of the channels
    asked once, and closing the recording drops it from the shared cache."""
    path = write_recording("lazy", {"a": random_walk(256 * 600, 2), "b": random_walk(256 * 600, 4)})
    cache = IndexCache(1 << 20)
    rec = Recording(str(path), index_cache=cache)
    try:
        assert cache.loads == 0 and len(cache) == 0
        assert [c.n_samples for c in rec.channels] == [256 * 600] * 2
        grid = rec.grid(rec.channels[0], 256.0)
        assert rec.has_data_tiles(rec.channels, grid, [0, 1]) == [[True, True], [True, True]]
        assert cache.loads == 1 and len(cache) == 2        # one call, both channels
        rec.has_data_tiles(rec.channels[:1], grid, [2, 3])
        assert cache.loads == 1                             # from the summaries kept
    finally:
        rec.close()
    assert len(cache) == 0 and cache.nbytes == 0


def test_the_engine_gives_each_reader_one_thread_when_the_store_splits_reads(write_recording):
    """DECODE_THREADS automatic and reads split over the cores: the shared reader reads
    on one thread after its open; DECODE_THREADS=3 is kept as given."""
    from mef3io_server.server.config import Settings
    from mef3io_server.server.engine import Engine

    path = write_recording("thr", {"a": random_walk(256 * 20, 1)})
    for threads, want in ((0, 1), (3, 3)):
        e = Engine(Settings(decode_threads=threads))
        try:
            e.open_file("", str(path))
            if threads == 0 and e.store.split_ways < 2:
                want = e.recording("", str(path)).reader.n_threads      # one core: unchanged
            assert e.recording("", str(path)).reader.n_threads == want
        finally:
            e.close()
