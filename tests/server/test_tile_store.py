"""TileStore (engine level): in-flight dedup, cache reuse, prefetch lane, equality."""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk
from mef3io_server.server import tile_grid as tg
from mef3io_server.server.config import Settings
from mef3io_server.server.cache_keys import tile_key, window_key
from mef3io_server.server.engine import Engine
from mef3io_server.server.inflight import Lane

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
        while (e.store.stats.prefetch_tiles_decoded < 4 or e.store.busy()) and deadline:
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
            if not e.store.busy():
                break
            threading.Event().wait(0.05)
        threading.Event().wait(0.2)
        assert len(e.cache) == 0
        assert not e.store.prefetched.keys()
    finally:
        e.close()


# ------------------------------------------------------------ runs of tiles

def _engine_rec(e):
    """The engine's one open Recording."""
    (rec,) = e.sessions.open_recordings()
    return rec


class _TileReference:
    """Each tile as decoded alone: the mef3io read of its own window (one reader)."""

    def __init__(self, path):
        import warnings

        import mef3io
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.reader = mef3io.Reader(str(path), warn_declarations=False)

    def tile(self, grid, ch, k, native):
        import warnings

        from mef3io_server.server.reduction import minmax_ordered
        a, b = grid.tile_window(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = np.asarray(self.reader.read([ch], a, b, dtype="float32")).reshape(1, -1)
        if grid.fs < native:
            return minmax_ordered(rows, grid.tile_samples // 2)[0]
        return rows[0]

    def close(self):
        self.reader.close()


def test_cold_multi_tile_read_is_one_mef3io_read_and_exact(write_recording):
    path = write_recording("run", {f"c{i}": random_walk(256 * 120, 10 + i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    try:
        e.open_file("", str(path))
        e.store.tuning.split_ways = 1                      # no cutting for parallelism
        t0, t1 = T0 + 5 * S + 7, T0 + 75 * S        # tiles 0..7 of 3 channels, one chunk
        before = e.decoder.stats()["decodes"]
        got = read_all(e, "", path, [], t0, t1)
        assert np.array_equal(got, direct_read(path, [], t0, t1), equal_nan=True)
        assert e.store.stats.tiles_decoded == 8 * 3
        assert e.decoder.stats()["decodes"] - before == 1, "8 consecutive tiles, one mef3io read"
    finally:
        e.close()


def test_run_decoded_tiles_equal_tiles_decoded_alone(tmp_path):
    """Split runs == per-tile reads: gaps, segments off the grid by +-0.26/-0.44
    samples, a fractional rate, reduced (cache_fs) tiles, runs cut by the byte cap."""
    from conftest import write_session
    from mef3io_server.server import tile_grid as tg
    gap = random_walk(256 * 200, 1)
    gap[256 * 13 + 5:256 * 15 + 100] = np.nan
    path = write_session(tmp_path / "runs.mefd", {
        "a": gap,
        "b": [(random_walk(256 * 10, 2), 256.0, T0),
              (random_walk(256 * 10, 3), 256.0, T0 + 12 * S + 1000),
              (random_walk(256 * 10, 4), 256.0, T0 + 25 * S - 1700)],
        "f": (random_walk(int(512.5 * 200), 5), 512.5),
    })
    e = Engine(Settings(tile_duration_s=1.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    ref = _TileReference(path)
    try:
        e.open_file("", str(path), cache_fs=128, allow_mixed_rates=True)
        rec = _engine_rec(e)
        store = e.store
        store.tuning.split_ways = 1
        checked = 0
        for served in (None, 128.0):       # reduced tiles: 32 s
            for ch_names in (["a", "b"], ["f"]):
                chans = [rec.channel(n) for n in ch_names]
                native = chans[0].fs
                fs = native if served is None else served
                grid = rec.grid(chans[0], fs)
                # runs cut at 6 tiles by the byte cap (native float32 of the group)
                store.tuning.run_max_bytes = 6 * int(grid.tile_samples * native / fs) * len(chans) * 4
                n_tiles = -(-tg.samples_in_window(rec.start_uutc, rec.end_uutc, fs)
                            // grid.tile_samples)
                ks = list(range(n_tiles))
                before = e.decoder.stats()["decodes"]
                tiles = store.fetch_tiles(rec, chans, grid, ks)
                reads = e.decoder.stats()["decodes"] - before
                assert 0 < reads < len(ks), (ch_names, fs, reads, len(ks))
                for ch in ch_names:
                    for k in ks:
                        want = ref.tile(grid, ch, k, native)
                        assert np.array_equal(tiles[(ch, k)], want, equal_nan=True), (ch, fs, k)
                        checked += 1
        assert checked > 200
    finally:
        ref.close()
        e.close()


@pytest.mark.parametrize("lane", ["fg", "bg"])   # decoded in the caller / on the workers
def test_damaged_block_in_a_run_fails_only_its_own_tiles(tmp_path, lane):
    from conftest import write_session
    from mef3io_server.server.errors import DecodeFailed
    path = write_session(tmp_path / "bad.mefd", {"a": random_walk(256 * 60, 1)},
                         block_length=512)
    tdat = next(path.rglob("a.timd/*.segd/*.tdat"))
    data = bytearray(tdat.read_bytes())
    at = len(data) // 2
    data[at:at + 64] = bytes(x ^ 0xFF for x in data[at:at + 64])
    tdat.write_bytes(bytes(data))
    e = Engine(Settings(tile_duration_s=1.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    ref = _TileReference(path)
    try:
        e.open_file("", str(path))
        rec = _engine_rec(e)
        ch = rec.channel("a")
        grid = rec.grid(ch, ch.fs)
        e.store.tuning.split_ways = 1
        try:
            e.store.fetch_tiles(rec, [ch], grid, range(60), lane)
            raise AssertionError("a damaged block read without error")
        except DecodeFailed as exc:
            msg = str(exc)
        assert "channel a" in msg and "CRC" in msg, msg
        a, b = (int(x) for x in msg.split("in [", 1)[1].split(") uUTC", 1)[0].split(", "))
        assert b - a == S, "the error names the damaged tile's own 1 s window, not the run's"
        k_bad = (a - grid.anchor_uutc) // S
        assert grid.tile_window(k_bad) == (a, b)
        with pytest.raises(Exception):       # a tile mef3io itself refuses
            ref.tile(grid, "a", k_bad, ch.fs)
        for _ in range(400):                 # the other tiles' decodes may still be running
            if not e.store.busy():
                break
            threading.Event().wait(0.01)
        decodes = e.decoder.stats()["decodes"]
        good = bad = 0
        for k in range(60):
            try:
                want = ref.tile(grid, "a", k, ch.fs)
            except Exception:  # noqa: BLE001 - mef3io refuses this tile too
                bad += 1
                continue
            got = e.store.fetch_tiles(rec, [ch], grid, [k])[("a", k)]
            assert np.array_equal(got, want, equal_nan=True), k
            good += 1
        assert bad >= 1 and good >= 50
        # the intact tiles of the failed run were decoded (one by one) and cached
        assert e.decoder.stats()["decodes"] == decodes
    finally:
        ref.close()
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


def test_a_window_of_several_chunks_is_kept_and_streamed_in_chunks(write_recording):
    """Sharing and keeping windows does not depend on CHUNK_BYTES: a window of
    several chunks (up to TileStore.WINDOW_SHARE_BYTES) is kept like a one-chunk
    window and still streamed in chunks of at most CHUNK_BYTES, exactly."""
    path = write_recording("winc", {f"c{i}": random_walk(256 * 120, i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, chunk_bytes=4096))
    try:
        e.open_file("", str(path))
        t0, t1 = T0 + 12 * S + 3, T0 + 31 * S
        ref = direct_read(path, [], t0, t1)
        for _ in range(2):
            r = e.read_signal("", str(path), [], t0, t1)
            chunks = list(r.chunks)
            assert len(chunks) > 1 and all(rows.nbytes <= 4096 for *_, rows in chunks)
            got = np.concatenate([rows for *_, rows in chunks], axis=1)
            assert np.array_equal(got, ref, equal_nan=True)
            assert [j0 for _, _, j0, _ in chunks] == \
                list(np.cumsum([0] + [rows.shape[1] for *_, rows in chunks[:-1]]))
        assert e.cache.stats().items == 9 + 1          # 9 tiles, and the window
        decoded = e.store.stats.tiles_decoded
        hits = e.cache.stats().hits
        again = np.concatenate([rows for *_, rows in e.read_signal(
            "", str(path), [], t0, t1).chunks], axis=1)
        assert np.array_equal(again, ref, equal_nan=True)
        assert e.cache.stats().hits == hits + 1 and e.store.stats.tiles_decoded == decoded
    finally:
        e.close()


def test_close_with_background_decodes_queued_returns(write_recording):
    """Engine.close() while prefetch runs are still queued: the cancelled runs are
    failed, not retried tile by tile into the pool being shut down (that deadlocked)."""
    path = write_recording("closing", {f"c{i}": random_walk(256 * 600, i) for i in range(32)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_processes=1))
    e.open_file("", str(path))
    rec = e.recording("", str(path))
    chans = list(rec.channels)
    started = e.store.prefetch(rec, chans, 256.0, T0, T0 + 60 * S, extra_ahead=8)
    assert started > 0
    pending = e.store.inflight.unsettled()
    assert pending, "nothing queued: the test would not exercise close with pending work"
    closer = threading.Thread(target=e.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "Engine.close() hung with background decodes queued"
    assert all(f.done() for f in pending)


def test_cold_window_with_far_larger_tiles_is_decoded_first_then_its_tiles(tmp_path):
    """Short MEF blocks (here 1 s) and 10 s tiles: a cold 2 s window straddling two
    tiles is read directly (exactly a direct read), and its tiles are decoded in
    the background afterwards; the next read of the area comes from them."""
    from conftest import write_session

    path = write_session(tmp_path / "short_blocks.mefd",
                         {f"c{i}": random_walk(512 * 40, i) for i in range(4)},
                         fs=512.0, block_length=512)
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    try:
        e.open_file("", str(path))
        t0, t1 = T0 + 9 * S, T0 + 11 * S          # tiles 0 and 1: 20 s of blocks for 2 s
        got = read_all(e, "", path, [], t0, t1)
        assert np.array_equal(got, direct_read(path, [], t0, t1), equal_nan=True)
        assert e.store.stats.window_first_reads == 1
        deadline = 400
        while e.store.stats.tiles_decoded < 8 and deadline:      # 2 tiles x 4 channels
            threading.Event().wait(0.05)
            deadline -= 1
        assert e.store.stats.tiles_decoded == 8
        t2, t3 = T0 + 9 * S + 12_345, T0 + 10 * S + 500_000  # inside those tiles: warm
        assert np.array_equal(read_all(e, "", path, [], t2, t3),
                              direct_read(path, [], t2, t3), equal_nan=True)
        assert e.store.stats.window_first_reads == 1 and e.store.stats.tiles_decoded == 8
        # A window whose tiles hold little more than its own blocks is read from tiles.
        read_all(e, "", path, [], T0 + 20 * S, T0 + 30 * S)
        assert e.store.stats.window_first_reads == 1
    finally:
        e.close()


def test_window_first_is_never_used_with_ten_second_blocks(write_recording):
    """256 Hz with 10 s blocks (mef3io's default) and 10 s tiles: a direct read decodes
    the same blocks as the tiles, so cold reads always go through the tiles."""
    path = write_recording("std", {f"c{i}": random_walk(256 * 60, i) for i in range(2)})
    e = Engine(Settings(tile_duration_s=10.0))
    try:
        e.open_file("", str(path))
        for t0 in (T0 + 3 * S, T0 + 15 * S + 17, T0 + 41 * S):
            assert np.array_equal(read_all(e, "", path, [], t0, t0 + 2 * S),
                                  direct_read(path, [], t0, t0 + 2 * S), equal_nan=True)
        assert e.store.stats.window_first_reads == 0
    finally:
        e.close()


def test_a_steady_readers_next_window_is_assembled_ahead_and_exact(write_recording):
    """Paging forward by whole windows: after two pages the next one is assembled
    in the background from its tiles and served by one cache lookup, exactly."""
    path = write_recording("pages", {f"c{i}": random_walk(256 * 120, i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0))
    try:
        e.open_file("", str(path))
        span = 10 * S + 250_000                       # not tile-aligned: assembled from pieces
        for i in range(4):
            t0 = T0 + 3 * S + i * span
            got = read_all(e, "", path, [], t0, t0 + span)
            assert np.array_equal(got, direct_read(path, [], t0, t0 + span), equal_nan=True)
            deadline = 400                            # let the background assembler run
            while e.store.stats.windows_preassembled < i and deadline:
                threading.Event().wait(0.05)
                deadline -= 1
        st = e.store.stats
        assert st.windows_preassembled >= 2           # after the 2nd and 3rd pages
        hits = e.cache.stats().hits
        t0 = T0 + 3 * S + 4 * span                    # assembled after the 4th page
        deadline = 400
        while _window_key(e, path, t0, t0 + span) not in e.cache and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        r = e.read_signal("", str(path), [], t0, t0 + span)
        (_, _, _, rows), = list(r.chunks)
        assert e.cache.stats().hits == hits + 1       # one lookup: the window itself
        assert np.array_equal(rows, direct_read(path, [], t0, t0 + span), equal_nan=True)
    finally:
        e.close()


def _window_key(e, path, t0, t1):
    rec, chans, fs = _ctx(e, path)
    return window_key(rec.key, [c.name for c in chans], fs, t0, t1)


def _ctx(e, path):
    rec = e.recording("", str(path))
    return rec, list(rec.channels), 256.0


def _gated_engine(write_recording, name: str, seconds: int):
    """A recording of 2 channels, and an engine without prefetch whose demand gate
    holds background decodes for up to 60 s (so a read that waited it out shows)."""
    path = write_recording(name, {f"c{i}": random_walk(256 * seconds, i) for i in range(2)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    e.decoder.gate.max_wait_s = 60.0
    e.open_file("", str(path))
    return path, e, e.decoder.gate


def test_a_read_waiting_for_prefetch_does_not_wait_for_other_decodes(write_recording):
    """Prefetch yields to foreground decodes (demand_gate), but a read that needs a
    tile prefetch owns makes it urgent: it is served at once, exactly, even while
    another foreground decode holds the gate."""
    path, e, gate = _gated_engine(write_recording, "gate", 120)
    try:
        rec, chans, fs = _ctx(e, path)
        t0, t1 = T0 + 50 * S, T0 + 60 * S
        with gate.demand():             # another client's decode, running for long
            started = e.store.prefetch(rec, chans, fs, t0 - (t1 - t0), t0)   # nothing: off
            assert started == 0
            e.store.tuning.prefetch_ahead = 1
            assert e.store.prefetch(rec, chans, fs, t0 - (t1 - t0), t0) > 0
            time.sleep(0.3)
            assert e.store.busy(Lane.BACKGROUND), "prefetch ran during a foreground decode"
            begin = time.monotonic()
            got = read_all(e, "", path, [], t0, t1)
            assert time.monotonic() - begin < 30, "the read waited for the gate"
        assert np.array_equal(got, direct_read(path, [], t0, t1), equal_nan=True)
        st = e.store.stats
        assert st.tiles_decoded == st.prefetch_tiles_decoded   # the read used prefetch's tiles
        assert gate.waits >= 1
    finally:
        e.close()


def test_a_read_is_not_split_over_the_cores_when_they_all_decode_for_others(write_recording):
    """A cold tile of many channels is decoded as parallel mef3io reads (one per core)
    when the cores are free, and whole in the reader's own thread when every core
    already decodes for other reads (the parts would only queue); both exact."""
    path = write_recording("nosplit", {f"c{i}": random_walk(256 * 60, i) for i in range(16)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0))
    try:
        if e.store.split_ways < 2 or e.decoder.kind != "threads":
            pytest.skip("one core: reads are never split")
        e.open_file("", str(path))
        gate = e.decoder.gate

        def decodes():
            return e.decoder.stats()["decodes"]

        t0 = T0 + 10 * S
        before = decodes()
        got = read_all(e, "", path, [], t0, t0 + 10 * S)
        assert decodes() - before == 2                    # 16 channels: two parts at once
        assert np.array_equal(got, direct_read(path, [], t0, t0 + 10 * S), equal_nan=True)
        t0 = T0 + 30 * S
        before = decodes()
        with contextlib.ExitStack() as busy:              # every core decoding for others
            for _ in range(e.store.split_ways):
                busy.enter_context(gate.demand())
            got = read_all(e, "", path, [], t0, t0 + 10 * S)
        assert decodes() - before == 1                    # one read, in this thread
        assert np.array_equal(got, direct_read(path, [], t0, t0 + 10 * S), equal_nan=True)
    finally:
        e.close()


def test_a_read_waiting_for_a_tile_the_background_lane_fetches_does_not_wait_out_the_gate(
        write_recording):
    """The background lane also fetches tiles itself (a steady reader's next window
    assembled ahead): a foreground read that needs one of them while another read
    decodes makes it urgent too, and gets it exactly."""
    path, e, gate = _gated_engine(write_recording, "bgfetch", 60)
    try:
        rec, chans, fs = _ctx(e, path)
        grid = rec.grid(chans[0], fs)
        k = 3
        t0, t1 = grid.tile_window(k)
        done = threading.Event()
        with gate.demand():             # another read's decode, running for long
            bg = threading.Thread(target=lambda: (e.store.fetch_tiles(rec, chans, grid, [k], "bg"),
                                                  done.set()), daemon=True)
            bg.start()
            time.sleep(0.3)
            assert not done.is_set() and e.store.busy(Lane.BACKGROUND), "the background fetch ran"
            begin = time.monotonic()
            got = e.store.fetch_tiles(rec, chans, grid, [k], "fg")
            assert time.monotonic() - begin < 30, "the read waited for the gate"
        assert done.wait(30)
        ref = direct_read(path, [c.name for c in chans], int(t0), int(t1))
        for i, ch in enumerate(chans):
            assert np.array_equal(got[(ch.name, k)], ref[i], equal_nan=True)
        assert e.store.stats.tiles_decoded == len(chans)        # decoded once, by the lane
    finally:
        e.close()


def test_a_reads_prefetch_starts_after_the_grace(write_recording):
    """The next window is planned and decoded only ``prefetch_grace_s`` after a read's
    last chunk (the client takes its answer in first), then exactly as usual."""
    path = write_recording("grace", {"a": random_walk(256 * 120, 1), "b": random_walk(256 * 120, 2)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=1,
                        prefetch_behind_windows=0))
    e.store.tuning.prefetch_grace_s = 0.6
    try:
        e.open_file("", str(path))
        read_all(e, "", path, ["a", "b"], T0 + 40 * S, T0 + 50 * S)
        t = time.monotonic()
        threading.Event().wait(0.3)
        st = e.store.stats
        if time.monotonic() - t < 0.55:          # (a stalled machine proves nothing here)
            assert st.prefetch_tiles_decoded == 0 and not e.store.busy()
        deadline = 400
        while st.prefetch_tiles_decoded < 2 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert st.prefetch_tiles_decoded == 2
        got = read_all(e, "", path, ["a", "b"], T0 + 50 * S, T0 + 60 * S)
        assert np.array_equal(got, direct_read(path, ["a", "b"], T0 + 50 * S, T0 + 60 * S),
                              equal_nan=True)
        assert st.prefetch_hits >= 2
    finally:
        e.close()


def test_a_steady_readers_next_windows_are_planned_once(write_recording):
    """Each page plans the windows ahead of it; those its previous pages planned
    already are not checked again (tile by tile) while fresh, and every page is
    still served from prefetched tiles, exactly."""
    path = write_recording("plan", {f"c{i}": random_walk(256 * 200, i) for i in range(3)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=1,
                        prefetch_behind_windows=0))
    e.store.tuning.prefetch_grace_s = 0.0
    try:
        e.open_file("", str(path))
        st = e.store.stats

        def settle():
            deadline = 400
            while True:
                e.store.prefetcher.settled()
                if not e.store.busy() or not deadline:
                    return
                threading.Event().wait(0.02)
                deadline -= 1

        for i in range(5):
            t0 = T0 + i * 10 * S
            got = read_all(e, "", path, [], t0, t0 + 10 * S)
            assert np.array_equal(got, direct_read(path, [], t0, t0 + 10 * S), equal_nan=True)
            settle()
        # page 0 plans page 1; page 1 (steady: 1 + 2 ahead) plans 2, 3, 4; pages 2, 3
        # and 4 each plan one new window and skip the two planned before
        assert (st.prefetch_windows_planned, st.prefetch_windows_skipped) == (1 + 3 + 3, 6)
        assert st.prefetch_hits >= 4 * 3                  # pages 1-4 came from prefetch
        e.store.tuning.planned_fresh_s = 0.0                     # stale plans: checked again
        read_all(e, "", path, [], T0 + 50 * S, T0 + 60 * S)
        settle()
        assert (st.prefetch_windows_planned, st.prefetch_windows_skipped) == (10, 6)
    finally:
        e.close()


def test_tiles_read_while_prefetch_decoded_them_count_as_prefetch_hits(write_recording):
    """A read that waits for tiles the background lane is decoding uses prefetched
    tiles: they count as prefetch hits and leave the set of prefetched-unread
    tiles (which once kept every such key until 100 000 of them)."""
    path = write_recording("waited", {f"c{i}": random_walk(256 * 200, i) for i in range(4)})
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=1,
                        prefetch_behind_windows=0))
    e.store.tuning.prefetch_grace_s = 0.0
    st = e.store.stats
    try:
        e.open_file("", str(path))
        rec = e.recording("", str(path))
        gate = e.decoder.gate
        with gate.demand():                       # hold the background lane: the window
            e.store.prefetch(rec, list(rec.channels), 256.0, T0, T0 + 10 * S)   # after it
            assert e.store.busy(Lane.BACKGROUND) == 4     # claimed, not decoding yet
            got = read_all(e, "", path, [], T0 + 10 * S, T0 + 20 * S)   # urgent: waits
        assert np.array_equal(got, direct_read(path, [], T0 + 10 * S, T0 + 20 * S),
                              equal_nan=True)
        assert st.prefetch_hits == 4                  # 4 channels x 1 tile, all waited on
        read_tiles = {(rec.key, f"c{i}", 256.0, 1) for i in range(4)}
        assert not read_tiles & e.store.prefetched.keys()
    finally:
        e.close()


def test_a_window_first_read_split_over_the_cores_streams_its_parts_exactly(tmp_path):
    """A window-first read of many channels is decoded as parallel mef3io reads of
    disjoint channel sets; each chunk is cut from those parts (never joined into
    one array first), in the order asked, NaN for NaN, whatever the chunking."""
    from conftest import write_session

    chans = {f"c{i:02d}": random_walk(512 * 40, i) for i in range(20)}
    chans["c07"][3000:4100] = np.nan                  # a gap inside the window
    path = write_session(tmp_path / "split_first.mefd", chans, fs=512.0, block_length=512)
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, chunk_bytes=8192))
    try:
        e.open_file("", str(path))
        rng = np.random.default_rng(5)
        order = [f"c{i:02d}" for i in rng.permutation(20)]
        t0, t1 = T0 + 5 * S + 3_000, T0 + 14 * S           # straddles tiles 0 and 1
        r = e.read_signal("", str(path), order, t0, t1)
        chunks = list(r.chunks)
        assert e.store.stats.window_first_reads == 1 and len(chunks) > 5
        assert len(e.store.split_channels(list(e.recording("", str(path)).channels))) == 2
        got = np.concatenate([rows for *_, rows in chunks], axis=1)
        assert np.array_equal(got, direct_read(path, order, t0, t1), equal_nan=True)
        assert np.isnan(got[order.index("c07")]).any()
    finally:
        e.close()


@pytest.mark.parametrize("cache_chunks, ahead", [(1000, 4), (8, 2)])
def test_a_long_reads_next_chunks_decode_while_one_is_sent(write_recording, cache_chunks,
                                                          ahead):
    """A window of many chunks: while a chunk is being sent, the tiles of the next
    chunks (up to TileStore.DECODE_AHEAD_BYTES, and a quarter of the cache) are
    already decoding, one background job per chunk, and no further; the answer
    is exact."""
    path = write_recording("ahead", {f"c{i}": random_walk(256 * 200, i) for i in range(4)})
    chunk = 4 * 2560 * 4                        # 10 s of the 4 channels: one tile each
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, chunk_bytes=chunk,
                        tile_cache_bytes=cache_chunks * chunk))
    try:
        e.open_file("", str(path))
        e.store.tuning.window_share_bytes = 0           # streamed in chunks, never shared whole
        e.store.tuning.decode_ahead_bytes = 4 * chunk
        rec = e.recording("", str(path))
        t0, t1 = T0, T0 + 150 * S                # 15 chunks, tiles 0..14
        r = e.read_signal("", str(path), [], t0, t1)
        it = iter(r.chunks)
        first = next(it)

        def started(k):
            keys = [tile_key(rec.key, f"c{i}", 256.0, k) for i in range(4)]
            return all(key in e.store.inflight or key in e.cache for key in keys)

        assert [k for k in range(15) if started(k)] == list(range(ahead + 1))
        got = np.concatenate([first[-1]] + [rows for *_, rows in it], axis=1)
        assert np.array_equal(got, direct_read(path, [], t0, t1), equal_nan=True)
    finally:
        e.close()


def test_a_window_of_many_chunks_per_tile_looks_each_tile_up_once(write_recording):
    """Chunks much shorter than a tile (many channels, CHUNK_BYTES fixed): a warm read
    looks each of its tiles up once, not once per chunk, and is exact -- mid-tile
    starts and a read through a gap included."""
    data = {f"c{i}": random_walk(256 * 60, i) for i in range(3)}
    data["c1"][256 * 21:256 * 24] = np.nan
    path = write_recording("hand", data)
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, chunk_bytes=4096))
    try:
        e.open_file("", str(path))
        e.store.tuning.window_share_bytes = 0           # streamed in chunks, never shared whole
        for t0, t1 in [(T0 + 12 * S + 3, T0 + 31 * S), (T0 + 20 * S, T0 + 30 * S)]:
            ref = direct_read(path, [], t0, t1)
            assert np.array_equal(read_all(e, "", path, [], t0, t1), ref, equal_nan=True)
            hits = e.cache.stats().hits
            r = e.read_signal("", str(path), [], t0, t1)
            chunks = list(r.chunks)
            assert len(chunks) > 6                       # 341 samples a chunk
            got = np.concatenate([rows for *_, rows in chunks], axis=1)
            assert np.array_equal(got, ref, equal_nan=True)
            rec = e.recording("", str(path))
            grid = rec.grid(rec.channels[0], 256.0)
            M, _ = tg.window_offset(grid, t0)
            tiles = len(grid.tiles_for_span(M, M + got.shape[1]))
            assert e.cache.stats().hits - hits == 3 * tiles
    finally:
        e.close()


def test_a_read_whose_big_block_index_is_unread_goes_to_mef3io_then_to_tiles(write_recording):
    """Channels whose unread block index holds more blocks than direct_first_index_blocks:
    the read is mef3io's, exact; the index and the window's tiles are read in the
    background, and the same window is then sliced from those tiles, exact."""
    data = {f"c{i}": random_walk(256 * 120, i) for i in range(3)}
    data["c2"][256 * 30:256 * 41] = np.nan
    path = write_recording("unread", data, block_length=256)      # 120 blocks a channel
    e = Engine(Settings(tile_duration_s=10.0, prefetch_ahead_windows=0,
                        prefetch_behind_windows=0, index_cache_bytes=1 << 20))
    try:
        e.index_warmer.close()                  # no warm-up: the index stays unread
        e.store.tuning.direct_first_index_blocks = 200
        e.open_file("", str(path))
        t0, t1 = T0 + 25 * S + 7, T0 + 47 * S
        ref = direct_read(path, [], t0, t1)
        assert np.array_equal(read_all(e, "", path, [], t0, t1), ref, equal_nan=True)
        stats = e.store.stats
        assert stats.unread_index_reads == 1
        deadline = time.monotonic() + 30
        while stats.tiles_decoded < 3 * 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats.tiles_decoded == 3 * 3                        # tiles 2, 3, 4 of each
        rec = e.recording("", str(path))
        assert rec.index.unread_blocks(rec.channels) == 0
        decoded = stats.tiles_decoded
        assert np.array_equal(read_all(e, "", path, [], t0 + 1, t1), direct_read(
            path, [], t0 + 1, t1), equal_nan=True)
        assert stats.unread_index_reads == 1 and stats.tiles_decoded == decoded
    finally:
        e.close()
