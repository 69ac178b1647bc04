"""Recording: the per-channel block index questions the tile store asks."""
from __future__ import annotations

import numpy as np

from conftest import T0, random_walk
from mef3io_server.server.recordings import Recording

S = 1_000_000


def overlaps(ch, a: int, b: int) -> bool:
    """The reference, block by block in Python integers: a block overlaps ``[a, b)``
    with half a sample of slack."""
    slack = int(5e5 / ch.fs) + 1
    return any(int(e) > a - slack and int(s) < b + slack
               for s, e in zip(ch.block_starts, ch.block_ends))


def test_has_data_many_answers_as_each_window_checked_block_by_block(write_recording):
    """Over windows before, across, inside and after blocks and a 30 s gap."""
    data = random_walk(256 * 120, 3)
    data[256 * 40:256 * 70] = np.nan                     # a gap: no blocks there
    path = write_recording("hd", {"a": data}, block_length=256 * 5)
    rec = Recording(str(path))
    try:
        ch = rec.channels[0]
        rng = np.random.default_rng(0)
        t0s = T0 + rng.integers(-20 * S, 140 * S, 400)
        t1s = t0s + rng.integers(1, 20 * S, 400)
        got = rec.has_data_many(ch, t0s, t1s)
        assert got == [overlaps(ch, int(a), int(b)) for a, b in zip(t0s, t1s)]
        assert True in got and False in got               # both answers were asked for
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
        big, small = 2**63 - 1, -2**63
        got = rec.has_data_many(ch, [big - 10, small, T0], [big + 10**9, small + 10, T0 + S])
        assert got == [False, False, True]
        assert got == [overlaps(ch, big - 10, big + 10**9), overlaps(ch, small, small + 10),
                       overlaps(ch, T0, T0 + S)]
    finally:
        rec.close()
