"""TileStore (engine level): in-flight dedup, cache reuse, prefetch lane, equality."""
from __future__ import annotations

import threading

import numpy as np

from conftest import T0, direct_read, random_walk
from mef3io_server.server.config import Settings
from mef3io_server.server.engine import Engine

S = 1_000_000


def read_all(engine, cid, path, chans, t0, t1):
    r = engine.read_signal(cid, str(path), list(chans), t0, t1)
    return np.concatenate([rows for _, _, _, rows in r.chunks], axis=1)


def test_concurrent_cold_reads_decode_each_tile_once(write_recording):
    path = write_recording("dedup", {f"c{i}": random_walk(256 * 120, i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, min_parallel_tiles=1))
    try:
        e.open_file("", str(path))
        t0, t1 = T0 + 5 * S + 7, T0 + 75 * S      # tiles 0..7 of 3 channels
        ref = direct_read(path, [], t0, t1)
        barrier = threading.Barrier(8)
        out, errors = [], []

        def work():
            try:
                barrier.wait()
                out.append(read_all(e, "", path, [], t0, t1))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert all(np.array_equal(a, ref, equal_nan=True) for a in out) and len(out) == 8
        assert e.store.stats.tiles_decoded == 8 * 3, "a tile was decoded more than once"
        # a warm re-read decodes nothing
        assert np.array_equal(read_all(e, "", path, [], t0, t1), ref, equal_nan=True)
        assert e.store.stats.tiles_decoded == 24
        # served from the cache: the window itself (read by 8 at once, so kept) or its tiles
        assert e.cache.stats().hits >= 1
    finally:
        e.close()


def test_prefetch_warms_the_next_window_with_identical_data(write_recording):
    path = write_recording("pf", {"a": random_walk(256 * 200, 1), "b": random_walk(256 * 200, 2)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=1,
                        prefetch_behind_windows=0))
    try:
        e.open_file("", str(path))
        read_all(e, "", path, ["a", "b"], T0 + 40 * S, T0 + 60 * S)
        # wait for the background lane (planned off the request thread) to
        # decode the next window's tiles: 2 tiles x 2 channels
        deadline = 400
        while (e.store.stats.prefetch_tiles_decoded < 4 or e.store._inflight) and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        st = e.store.stats
        foreground = st.tiles_decoded - st.prefetch_tiles_decoded
        assert st.prefetch_tiles_decoded >= 4
        got = read_all(e, "", path, ["a", "b"], T0 + 60 * S, T0 + 80 * S)
        assert np.array_equal(got, direct_read(path, ["a", "b"], T0 + 60 * S, T0 + 80 * S),
                              equal_nan=True)
        st = e.store.stats
        assert st.prefetch_hits >= 4
        # the second window came from the cache: the foreground decoded nothing
        assert st.tiles_decoded - st.prefetch_tiles_decoded == foreground
    finally:
        e.close()


def test_closed_file_drops_prefetched_and_cached_tiles(write_recording):
    path = write_recording("drop", {"a": random_walk(256 * 100, 1)})
    e = Engine(Settings(tile_duration_s=5.0, prefetch_ahead_windows=2,
                        prefetch_behind_windows=2))
    try:
        e.open_file("x", str(path))
        read_all(e, "x", path, ["a"], T0 + 30 * S, T0 + 40 * S)
        e.close_file("x", str(path))
        for _ in range(100):
            if not e.store._inflight:
                break
            threading.Event().wait(0.05)
        threading.Event().wait(0.2)
        assert len(e.cache) == 0
        assert not e.store._prefetched
    finally:
        e.close()


def test_a_window_asked_for_again_is_kept_and_one_read_once_is_not(write_recording):
    path = write_recording("win", {f"c{i}": random_walk(256 * 120, i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    try:
        e.open_file("", str(path))
        t0, t1 = T0 + 12 * S + 3, T0 + 31 * S
        ref = direct_read(path, [], t0, t1)
        first = read_all(e, "", path, [], t0, t1)
        tiles_only = e.cache.stats().items           # 3 channels x 3 tiles, no window
        assert tiles_only == 9
        assert np.array_equal(read_all(e, "", path, [], t0, t1), ref, equal_nan=True)
        assert e.cache.stats().items == tiles_only + 1   # asked for twice: kept
        hits = e.cache.stats().hits
        r = e.read_signal("", str(path), [], t0, t1)
        (_, _, _, rows), = list(r.chunks)
        assert e.cache.stats().hits == hits + 1          # one lookup, no tile touched
        assert not rows.flags.writeable                  # shared: nobody may change it
        assert np.array_equal(rows, ref, equal_nan=True)
        assert np.array_equal(first, ref, equal_nan=True)
        assert e.store.stats.tiles_decoded == 9
    finally:
        e.close()
