"""Service-layer pieces that keep wire bytes: KeptEncodings."""
from __future__ import annotations

import numpy as np

from mef3io_server.server.service import KeptEncodings


def test_kept_envelope_messages_are_used_only_for_the_same_index_array():
    kept = KeptEncodings(64 << 20)
    index = np.arange(10, dtype=np.int64)
    kept.put(("/a.mefd", "c1", 50_000), index, [b"m1", b"m2"])
    assert kept.get(("/a.mefd", "c1", 50_000), index) == [b"m1", b"m2"]
    # Another version of the recording (a re-open after an append) has a new array.
    assert kept.get(("/a.mefd", "c1", 50_000), index.copy()) is None
    assert kept.get(("/a.mefd", "c1", 50_000), index) is None      # and the entry is gone


def test_kept_envelope_messages_are_dropped_with_their_array_and_bounded_in_bytes():
    kept = KeptEncodings(100)
    arrays = [np.arange(3) + i for i in range(5)]
    for i, a in enumerate(arrays):
        kept.put(("/a.mefd", f"c{i}", 1), a, [bytes(40)])
    assert kept.nbytes <= 100 and len(kept) == 2          # LRU: the last two
    assert kept.get(("/a.mefd", "c4", 1), arrays[4]) == [bytes(40)]
    assert kept.get(("/a.mefd", "c0", 1), arrays[0]) is None
    kept.put(("/a.mefd", "big", 1), arrays[0], [bytes(101)])      # larger than the bound
    assert kept.get(("/a.mefd", "big", 1), arrays[0]) is None
    gone = np.arange(4)
    kept.put(("/a.mefd", "tmp", 1), gone, [b"x"])
    del gone                                                      # its recording closed
    assert kept.get(("/a.mefd", "tmp", 1), np.arange(4)) is None


def test_a_message_offered_once_is_not_kept_and_twice_is():
    """A window read once (a page assembled ahead) keeps no message; asked twice, it does."""
    kept = KeptEncodings(1 << 20)
    rows = np.zeros((2, 10), np.float32)
    kept.put(("/a.mefd", "w1"), rows, [b"m"], when_offered_twice=True)
    assert kept.get(("/a.mefd", "w1"), rows) is None and not len(kept)
    kept.put(("/a.mefd", "w2"), rows, [b"n"], when_offered_twice=True)
    kept.put(("/a.mefd", "w1"), rows, [b"m"], when_offered_twice=True)    # the second offer
    assert kept.get(("/a.mefd", "w1"), rows) == [b"m"]
    assert kept.get(("/a.mefd", "w2"), rows) is None


def test_a_window_kept_for_everyone_is_encoded_once_and_stays_exact(write_recording):
    """A window asked for twice is kept by the tile store; its answer is then encoded
    once and the same message sent to every later asker, exactly the direct read.
    Once the window leaves the cache (here: the file closed) the message is not used."""
    from conftest import T0, direct_read, random_walk
    from mef3io_server.client import Mef3Client
    from mef3io_server.server.app import build_server
    from mef3io_server.server.config import Settings

    path = write_recording("kept", {f"c{i}": random_walk(256 * 60, i) for i in range(4)})
    running = build_server(Settings(port=0, refresh_interval_s=0.0))
    try:
        answers = running.service.answers
        t0, t1 = T0 + 10 * 1_000_000, T0 + 20 * 1_000_000
        ref = direct_read(path, [], t0, t1)
        with Mef3Client(f"localhost:{running.port}") as c:
            c.open_file(str(path))
            got = [c.get_signal_range(str(path), [], t0, t1)["array"] for _ in range(4)]
            assert all(np.array_equal(g, ref, equal_nan=True) for g in got)
            # read 1 assembles and encodes (offered once: the message is not kept);
            # read 2 keeps the window, encodes it and keeps the message; 3 and 4 reuse it
            assert len(answers) == 1
            (key, (src, msgs, size)), = answers.entries()
            assert src() is not None and size > ref.nbytes
            assert answers.hits == 2
            # The file closed: its window leaves the tile cache, the kept message is
            # not used again (a new read assembles and encodes anew), data exact.
            c.close_file(str(path))
            c.open_file(str(path))
            assert src() is None
            again = [c.get_signal_range(str(path), [], t0, t1)["array"] for _ in range(3)]
            assert all(np.array_equal(g, ref, equal_nan=True) for g in again)
            assert answers.hits == 3                # the third read of the new window
            other = c.get_signal_range(str(path), ["c1", "c2"], t0, t1)["array"]
            assert np.array_equal(other, direct_read(path, ["c1", "c2"], t0, t1), equal_nan=True)
    finally:
        running.stop(0)
