"""Service-layer pieces that keep wire bytes: EncodedEnvelopes."""
from __future__ import annotations

import numpy as np

from mef3io_server.server.service import EncodedEnvelopes


def test_kept_envelope_messages_are_used_only_for_the_same_index_array():
    kept = EncodedEnvelopes()
    index = np.arange(10, dtype=np.int64)
    kept.put(("/a.mefd", "c1", 50_000), index, [b"m1", b"m2"])
    assert kept.get(("/a.mefd", "c1", 50_000), index) == [b"m1", b"m2"]
    # Another version of the recording (a re-open after an append) has a new array.
    assert kept.get(("/a.mefd", "c1", 50_000), index.copy()) is None
    assert kept.get(("/a.mefd", "c1", 50_000), index) is None      # and the entry is gone


def test_kept_envelope_messages_are_dropped_with_their_array_and_bounded_in_bytes():
    kept = EncodedEnvelopes()
    kept.MAX_BYTES = 100
    arrays = [np.arange(3) + i for i in range(5)]
    for i, a in enumerate(arrays):
        kept.put(("/a.mefd", f"c{i}", 1), a, [bytes(40)])
    assert kept._bytes <= 100 and len(kept._items) == 2          # LRU: the last two
    assert kept.get(("/a.mefd", "c4", 1), arrays[4]) == [bytes(40)]
    assert kept.get(("/a.mefd", "c0", 1), arrays[0]) is None
    kept.put(("/a.mefd", "big", 1), arrays[0], [bytes(101)])      # larger than the bound
    assert kept.get(("/a.mefd", "big", 1), arrays[0]) is None
    gone = np.arange(4)
    kept.put(("/a.mefd", "tmp", 1), gone, [b"x"])
    del gone                                                      # its recording closed
    assert kept.get(("/a.mefd", "tmp", 1), np.arange(4)) is None
