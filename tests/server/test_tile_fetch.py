"""The tile path against a fake decoder: fetch, compute-once, runs, failures, assembly.

No mef3io and no files: :mod:`fake_decoder` answers every read with samples
whose values say where they came from, and counts the reads.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from fake_decoder import S, T0, FakeChannel, FakeDecoder, FakeRecording

from mef3io_server.server import tile_grid as tg
from mef3io_server.server.errors import DecodeFailed
from mef3io_server.server.inflight import Lane
from mef3io_server.server.tile_cache import TileCache
from mef3io_server.server.tile_store import TileStore

FS = 256.0
L = 256          # 1 s tiles


@pytest.fixture
def world():
    rec = FakeRecording([FakeChannel(f"c{i}", FS) for i in range(3)], seconds=100,
                        tile_samples=L)
    dec = FakeDecoder(rec)
    store = TileStore(TileCache(64 << 20), dec, prefetch_ahead=0, prefetch_behind=0)
    store.tuning.split_ways = 1
    yield rec, dec, store
    store.close()
    dec.close()


def expected(rec, name, g0, g1):
    i = [c.name for c in rec.channels].index(name)
    return (1000.0 * i + np.arange(g0, g1)).astype(np.float32)


def test_cold_tiles_are_one_read_per_run_then_cache_hits(world):
    rec, dec, store = world
    grid = rec.grid(rec.channels[0], FS)
    tiles = store.fetch_tiles(rec, rec.channels, grid, range(5))
    assert dec.count() == 1, dec.reads                        # tiles 0..4, one run
    assert dec.reads[0][1:3] == (grid.tile_start(0), grid.tile_start(5))
    for c in rec.channels:
        for k in range(5):
            assert np.array_equal(tiles[(c.name, k)], expected(rec, c.name, k * L, k * L + L))
            assert not tiles[(c.name, k)].flags.writeable
    again = store.fetch_tiles(rec, rec.channels, grid, range(5))
    assert dec.count() == 1                                   # all from the cache
    assert all(np.shares_memory(again[k], tiles[k]) for k in tiles)
    assert store.stats.tiles_decoded == 15 and store.busy() == 0


def test_tiles_without_data_are_nan_and_never_decoded(world):
    rec, dec, store = world
    rec.gaps.append((T0 + 2 * S, T0 + 4 * S))
    grid = rec.grid(rec.channels[0], FS)
    tiles = store.fetch_tiles(rec, rec.channels[:1], grid, [2, 3, 120])
    assert dec.count() == 0
    assert all(np.isnan(t).all() and t.size == L for t in tiles.values())


def test_concurrent_readers_of_a_tile_wait_for_one_decode(world):
    rec, dec, store = world
    grid = rec.grid(rec.channels[0], FS)
    dec.hold.clear()                                          # the first decode waits
    got = []
    threads = [threading.Thread(target=lambda: got.append(
        store.fetch_tiles(rec, rec.channels, grid, [7]))) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(200):
        if store.busy() == 3:
            break
        threading.Event().wait(0.01)
    assert store.busy() == 3                                  # 3 channels x 1 tile claimed
    dec.hold.set()
    for t in threads:
        t.join(10)
    assert dec.count() == 1 and len(got) == 6
    assert all(np.shares_memory(g[("c1", 7)], got[0][("c1", 7)]) for g in got)


def test_a_failed_run_is_retried_tile_by_tile_and_only_the_damaged_tile_fails(world):
    rec, dec, store = world
    dec.damaged.append(T0 + 3 * S + 100)                      # inside tile 3
    grid = rec.grid(rec.channels[0], FS)
    with pytest.raises(DecodeFailed) as err:
        store.fetch_tiles(rec, rec.channels[:1], grid, range(6))
    msg = str(err.value)
    assert f"in [{grid.tile_start(3)}, {grid.tile_start(4)}) uUTC" in msg, msg
    assert "decoding failed: decoding" not in msg and "CrcError" in msg
    assert store.busy() == 0
    ok = store.fetch_tiles(rec, rec.channels[:1], grid, [0, 1, 2, 4, 5])
    assert len(ok) == 5 and dec.count() == 1 + 6              # the run, then 6 alone; cached
    assert np.array_equal(ok[("c0", 5)], expected(rec, "c0", 5 * L, 6 * L))


def test_a_foreground_read_joins_a_background_decode_and_raises_its_priority(world):
    rec, dec, store = world
    grid = rec.grid(rec.channels[0], FS)
    dec.hold.clear()
    started = store.fetcher.start_background(rec, rec.channels, grid, T0, 0, 2 * L)
    assert started == 6 and store.busy(Lane.BACKGROUND) == 6
    done = []
    t = threading.Thread(target=lambda: done.append(store.fetch_tiles(rec, rec.channels,
                                                                      grid, [0, 1])))
    t.start()
    threading.Event().wait(0.1)
    assert not done
    dec.hold.set()
    t.join(10)
    assert done and dec.count(Lane.FOREGROUND) == 0           # it decoded nothing itself
    assert dec.urgent_waits == 1
    assert store.stats.prefetch_tiles_decoded == 6
    assert store.stats.prefetch_hits == 6                     # prefetched, then read


def test_a_window_is_sliced_from_tiles_exactly(world):
    rec, dec, store = world
    t0 = T0 + 2 * S + 1_953                                   # half a sample in: 1.5 s in
    t1 = t0 + 5 * S
    n = tg.samples_in_window(t0, t1, FS)
    chunks = list(store.assemble_chunks(rec, rec.channels, FS, t0, t1, 300))
    assert [(j0, j1) for j0, j1, _ in chunks] == list(tg.chunk_bounds(n, 300))
    got = np.concatenate([rows for _, _, rows in chunks], axis=1)
    g0 = tg.window_offset(grid := rec.grid(rec.channels[0], FS), t0)[0]
    for i, c in enumerate(rec.channels):
        assert np.array_equal(got[i], expected(rec, c.name, g0, g0 + n)), c.name
    assert grid.tile_samples == L


def test_a_shared_window_is_assembled_once_and_kept_when_asked_twice(world):
    rec, dec, store = world
    t0, t1 = T0 + 10 * S, T0 + 12 * S
    n = tg.samples_in_window(t0, t1, FS)
    assert store.shares(n, 3)
    first = [rows for _, _, rows in store.read_chunks(rec, rec.channels, FS, t0, t1, n)]
    second = [rows for _, _, rows in store.read_chunks(rec, rec.channels, FS, t0, t1, n)]
    third = [rows for _, _, rows in store.read_chunks(rec, rec.channels, FS, t0, t1, n)]
    assert not first[0].flags.writeable
    assert np.shares_memory(third[0], second[0])              # kept after the second ask
    assert not np.shares_memory(second[0], first[0])          # the first was not kept
    assert np.array_equal(first[0], second[0])
    assert dec.count() == 1                                   # its tiles decoded once


def test_the_read_limit_names_the_setting(world):
    rec, dec, store = world
    store.tuning.max_read_bytes = 1000
    with pytest.raises(Exception, match="MAX_READ_MB"):
        next(store.assemble_chunks(rec, rec.channels, FS, T0, T0 + 10 * S, 256))
    assert dec.count() == 0


class _Token:
    """A cancel token like mef3io's (``cancel()``, ``cancelled``)."""

    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def test_a_cancelled_read_stops_and_its_waiters_decode_what_they_need(world):
    rec, dec, store = world
    grid = rec.grid(rec.channels[0], FS)
    token = _Token()
    dec.hold.clear()                              # the cancelled read's decode is stuck
    errors, got = [], []

    def cancelled_read():
        try:
            store.fetch_tiles(rec, rec.channels, grid, [20, 21], cancel=token)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    first = threading.Thread(target=cancelled_read)
    first.start()
    for _ in range(200):
        if store.busy() == 6:
            break
        threading.Event().wait(0.01)
    other = threading.Thread(target=lambda: got.append(
        store.fetch_tiles(rec, rec.channels, grid, [21])))     # joins the cancelled read
    other.start()
    threading.Event().wait(0.05)
    token.cancel()
    dec.hold.set()
    first.join(10)
    other.join(10)
    from mef3io_server.server.errors import Cancelled
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    assert store.stats.tiles_cancelled == 6 and dec.cancelled_reads >= 1
    assert got and np.array_equal(got[0][("c2", 21)], expected(rec, "c2", 21 * L, 22 * L))
    assert store.busy() == 0


def test_a_cancelled_window_decodes_nothing_more(world):
    rec, dec, store = world
    token = _Token()
    store.tuning.window_share_bytes = 0
    it = store.read_chunks(rec, rec.channels, FS, T0, T0 + 20 * S, L, cancel=token)
    next(it)
    token.cancel()
    reads = dec.count()
    with pytest.raises(Exception, match="cancelled"):
        list(it)
    assert dec.count(Lane.FOREGROUND) <= reads
