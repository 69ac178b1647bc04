"""``n_points`` reads: one MinMaxLTTB point per evenly spaced bucket of a window.

The source window (at the served rate, or the native one when zoomed in:
:func:`source_rate`) streams chunk by chunk from the tile store through
:class:`.reduction.PointReducer`, so a day of many channels never sits in
memory; only the span that can hold data is read (:func:`data_span`). The
answer is cached like a tile (:func:`.cache_keys.points_key`: same budget, TTL
and eviction), so a viewer's redraw of the same view costs a lookup.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from . import tile_grid as tg
from .cache_keys import points_key
from .memory_budget import MemoryBudget
from .reads import ReadCounters, SignalRead, ValueReads
from .recordings import ChannelInfo, Recording
from .reduction import STATE_BYTES_PER_POINT, PointReducer


def source_rate(chans: Sequence[ChannelInfo], fs: float, t0: int, t1: int,
                n_points: int) -> float:
    """The rate an ``n_points`` read reduces from: ``fs`` (the session's served
    rate) when the window holds at least ``2 * n_points`` samples there, else
    the channels' native rate when they share one (zoomed in)."""
    native = {c.fs for c in chans}
    if fs < max(native) and len(native) == 1 \
            and tg.samples_in_window(t0, t1, fs) < 2 * n_points:
        return native.pop()
    return fs


def data_span(chans: Sequence[ChannelInfo], fs: float, t0: int, t1: int, n_src: int):
    """``(s0, s1, a, b)``: the source samples ``[s0, s1)`` of an ``n_points`` window
    that can hold data, and their window ``[a, b)`` in uUTC on the same grid.

    Outside the channels' spans every sample is NaN, so a window of days
    (or the whole int64 range) around an hour of data reads that hour.
    ``s0``/``s1`` fall on whole microseconds of the window's grid (multiples
    of :func:`tile_grid.exact_period_samples`); without such a grid the
    whole window is read.
    """
    q = tg.exact_period_samples(fs)
    if not q:
        return 0, n_src, t0, t1
    lo = min(c.start_uutc for c in chans)
    hi = max(c.end_uutc for c in chans)
    rate = Fraction(fs) / 10**6
    s0 = max(0, math.floor((lo - t0) * rate) - 1)
    s1 = min(n_src, math.ceil((hi - t0) * rate) + 1)
    s0 -= s0 % q
    if s1 < n_src:
        s1 = min(n_src, s1 + (-s1) % q)
    if s1 <= s0:
        return s0, s0, t0, t0
    a, b = tg.chunk_span(t0, t1, fs, n_src, s0, s1)
    return s0, s1, a, b


class PointReads:
    """Build ``n_points`` reads (see module docstring)."""

    def __init__(self, values: ValueReads, memory: MemoryBudget, counters: ReadCounters,
                 source_bytes: int, chunk_bytes: int):
        self.values = values
        self.store = values.store
        self.memory = memory
        self.counters = counters
        self.source_bytes = source_bytes
        self.chunk_bytes = chunk_bytes

    def read(self, rec: Recording, chans: Sequence[ChannelInfo], src_fs: float, t0: int,
             t1: int, n_points: int, client_path: str, cancel=None) -> SignalRead:
        """One point per bucket, streamed.

        Output point ``k`` is a real sample of source bucket ``k`` (samples
        ``[floor(k*N/n), floor((k+1)*N/n))`` of the ``N``-sample source window),
        NaN when that bucket holds no data; ``fs = n_points / window_seconds``.

        A channel asked for more than once is reduced once (its rows are
        repeated as asked when sent). Memory outside the cache -- the
        reduction's state per point, its answer and one source chunk -- is
        reserved from ``POINTS_MEMORY_MB`` (:mod:`.memory_budget`): a read
        that could never fit is refused, others wait for their turn.
        """
        n_src = tg.samples_in_window(t0, t1, src_fs)
        out_fs = n_points / ((t1 - t0) / 1e6)
        q = tg.exact_period_samples(src_fs) or 1
        unique = list({c.name: c for c in chans}.values())
        rows = None if len(unique) == len(chans) \
            else np.array([[c.name for c in unique].index(c.name) for c in chans])
        per = tg.chunk_samples(len(unique), self.source_bytes, multiple_of=q)
        need = n_points * len(unique) * (STATE_BYTES_PER_POINT + 4) \
            + min(per, n_src) * len(unique) * 4
        what = f"n_points={n_points} x {len(unique)} channels"
        self.memory.check(need, what)
        counters = self.counters
        counters.read_started()
        result_key = points_key(rec.key, [c.name for c in unique], src_fs, t0, t1, n_points)
        cache = self.store.cache

        def chunks():
            reduced = cache.get(result_key)
            if reduced is None:
                with self.memory.reserve(need, what):
                    reducer = PointReducer(len(unique), n_src, n_points)
                    s0, s1, a, b = data_span(unique, src_fs, t0, t1, n_src)
                    reducer.skip(s0)        # before the data: nothing to read
                    if s1 > s0:
                        for _, _, src in self.store.read_chunks(rec, unique, src_fs, a, b, per,
                                                                limit_bytes=False,
                                                                cancel=cancel):
                            reducer.feed(src)
                    reducer.skip(n_src - s1)   # after the data
                    _, reduced = reducer.result()
                    del reducer
                reduced.flags.writeable = False
                if not rec.closed:
                    cache.put(result_key, reduced)
                self.values.prefetch(rec, unique, src_fs, t0, t1)
            per_chunk = tg.chunk_samples(len(chans), self.chunk_bytes)
            for j0, j1 in tg.chunk_bounds(n_points, per_chunk):
                a = t0 + (j0 * (t1 - t0)) // n_points
                b = t0 + (j1 * (t1 - t0)) // n_points
                out = np.ascontiguousarray(reduced[:, j0:j1] if rows is None
                                           else reduced[rows, j0:j1])
                counters.served(out.nbytes)
                yield a, b, j0, out

        return SignalRead(client_path, [c.name for c in chans], out_fs, n_points, t0, t1,
                          self.values.versions.tracked(rec, counters.counted(chunks())))
