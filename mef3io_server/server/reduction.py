"""Reduction of a signal to fewer points, keeping its shape.

Buckets
-------
Both reductions cut ``N`` evenly spaced samples into ``b`` buckets by index:
bucket ``i`` is samples ``[floor(i*N/b), floor((i+1)*N/b))`` (:func:`bucket_edges`).
Widths differ by at most one sample. NaN marks a gap: it is never a bucket's
minimum or maximum, and a bucket with no finite sample yields NaN.

* :func:`minmax_ordered` -- the ``cache_fs`` reduction: ``pairs`` buckets, each
  giving its minimum and maximum *in the order they occur* (2 values per
  bucket), so a spike survives at any rate.
* :func:`reduce_to_points` / :class:`PointReducer` -- the ``n_points``
  reduction, MinMaxLTTB (Van Der Donckt et al. 2023) with one output point per
  bucket: each bucket's candidates are its minimum and maximum (the MinMax
  preselection, computed here chunk by chunk so a window of any length
  streams through in bounded memory), and the Largest-Triangle-Three-Buckets
  pass of ``tsdownsample`` picks one of the two. Afterwards each row's overall
  minimum and maximum are put back into their buckets, so the amplitude is
  never understated (when both fall in the same bucket, only one point exists
  there: the one farther from the row's mean level is kept).

Why not ``tsdownsample.MinMaxLTTBDownsampler`` end to end: its MinMax bins and
LTTB buckets are its own (measured: 1693 of 2000 index buckets hit for a
100 000-sample random walk), so its points are not one per evenly spaced
output slot, which ``fs = n_points / window`` and NaN gaps staying where they
are both need. The sequential LTTB pass, the costly part, is tsdownsample's.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np


def bucket_edges(n: int, buckets: int) -> np.ndarray:
    """Start indices of ``buckets`` index buckets over ``n`` samples, plus ``n``."""
    return (np.arange(buckets + 1, dtype=np.int64) * n) // max(1, buckets)


def bucket_extremes(x: np.ndarray, edges: np.ndarray):
    """First position and value of each bucket's minimum and maximum, NaN ignored.

    ``x``: 2-D (rows, samples) float array; ``edges``: non-decreasing bucket
    edges into its columns (``edges[0]`` .. ``edges[-1]``), consecutive buckets
    ``[edges[i], edges[i+1])``. Returns ``(lo_pos, lo_val, hi_pos, hi_val)``,
    each ``(rows, buckets)``; positions are column indices of ``x``, ``-1``
    with NaN values for a bucket holding no finite sample (or no sample).
    """
    rows = x.shape[0]
    edges = np.asarray(edges, dtype=np.int64)
    starts, widths = edges[:-1], np.diff(edges)
    nb = starts.size
    lo_pos = np.full((rows, nb), -1, dtype=np.int64)
    hi_pos = np.full((rows, nb), -1, dtype=np.int64)
    lo_val = np.full((rows, nb), np.nan, dtype=np.float32)
    hi_val = np.full((rows, nb), np.nan, dtype=np.float32)
    if nb == 0 or rows == 0:
        return lo_pos, lo_val, hi_pos, hi_val
    W = int(widths.max())
    if W == 0:
        return lo_pos, lo_val, hi_pos, hi_val
    if rows * W * 4 > _BLOCK_BYTES and nb == 1 and W > 1:
        return _split_extremes(x, int(starts[0]), int(starts[0] + widths[0]))
    per = max(1, _BLOCK_BYTES // (rows * W * 4))
    if nb > per:
        # In blocks of buckets (a very wide bucket alone): the work copies stay small.
        out = (lo_pos, lo_val, hi_pos, hi_val)
        for i in range(0, nb, per):
            part = bucket_extremes(x, edges[i:i + per + 1])
            for whole, piece in zip(out, part):
                whole[:, i:i + per] = piece
        return out
    narrow = W <= _NARROW
    if int(widths.min()) == W and not narrow:
        # Uniform wide buckets: a strided view, no gather.
        v = x[:, starts[0]:starts[0] + nb * W].reshape(rows, nb, W)
    else:
        # Pad short buckets by repeating their own last sample: that never
        # changes a bucket's extremes nor where they first occur.
        last = np.minimum(np.maximum(starts + widths - 1, starts), x.shape[1] - 1)
        cols = np.minimum(starts[:, None] + np.arange(W, dtype=np.int64)[None, :], last[:, None])
        v = np.take(x, cols.T if narrow else cols, axis=1)
    # Narrow buckets are laid out (rows, W, buckets), wide ones (rows, buckets, W).
    axis = 1 if narrow else -1
    empty = widths == 0
    nan = np.isnan(v) if np.isnan(v).any() else None
    lo_src = v if nan is None else np.where(nan, np.inf, v)
    hi_src = v if nan is None else np.where(nan, -np.inf, v)
    i_lo, lo_v = _first_extreme(lo_src, np.less, narrow)
    i_hi, hi_v = _first_extreme(hi_src, np.greater, narrow)
    if nan is None:
        has = np.broadcast_to(~empty[None, :], (rows, nb))
    else:
        has = ~nan.all(axis=axis) & ~empty[None, :]
    lo_pos = np.where(has, starts[None, :] + i_lo, -1)
    hi_pos = np.where(has, starts[None, :] + i_hi, -1)
    lo_val = np.where(has, lo_v, np.float32(np.nan)).astype(np.float32, copy=False)
    hi_val = np.where(has, hi_v, np.float32(np.nan)).astype(np.float32, copy=False)
    return lo_pos, lo_val, hi_pos, hi_val


_NARROW = 32   # buckets up to this wide are scanned column by column
#: Samples (bytes of float32) :func:`bucket_extremes` works on at once: its copies
#: (gathered buckets, NaN masks, their index) are a few times this, whatever the input.
_BLOCK_BYTES = 4 << 20


def combine_extremes(first, then):
    """Extremes of two consecutive ranges, each ``(lo_pos, lo_val, hi_pos, hi_val)``
    of arrays of the same shape (``-1``/NaN: no finite sample): the first range's
    extreme wins a tie, so a minimum or maximum is still its first occurrence."""
    lo = (then[0] >= 0) & ((first[0] < 0) | (then[1] < first[1]))
    hi = (then[2] >= 0) & ((first[2] < 0) | (then[3] > first[3]))
    return (np.where(lo, then[0], first[0]), np.where(lo, then[1], first[1]),
            np.where(hi, then[2], first[2]), np.where(hi, then[3], first[3]))


def _split_extremes(x: np.ndarray, a: int, b: int):
    """:func:`bucket_extremes` of the one bucket ``[a, b)``, too wide to work on at
    once: cut into pieces of at most :data:`_BLOCK_BYTES`, combined in order."""
    step = max(1, _BLOCK_BYTES // (x.shape[0] * 4))
    acc = None
    for s in range(a, b, step):
        part = bucket_extremes(x, np.array([s, min(b, s + step)]))
        acc = part if acc is None else combine_extremes(acc, part)
    return acc


def _first_extreme(v: np.ndarray, better, narrow: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index (in its bucket) and value of each bucket's first extreme.

    ``better`` is ``np.less`` (minimum) or ``np.greater`` (maximum). Narrow
    buckets come as ``(rows, W, buckets)`` and are scanned sample by sample
    (numpy's arg-reductions along a short axis are slow); wide ones as
    ``(rows, buckets, W)`` for ``argmin``/``argmax``.
    """
    if not narrow:
        i = (v.argmin if better is np.less else v.argmax)(axis=-1)
        return i, np.take_along_axis(v, i[..., None], axis=-1)[..., 0]
    ext = v.min(axis=1) if better is np.less else v.max(axis=1)
    idx = np.full(ext.shape, v.shape[1] - 1, dtype=np.int64)
    for w in range(v.shape[1] - 2, -1, -1):     # the first occurrence is written last
        idx = np.where(v[:, w, :] == ext, w, idx)
    return idx, ext


def minmax_ordered(x: np.ndarray, pairs: int) -> np.ndarray:
    """Reduce the last axis of ``x`` to ``2 * pairs`` values: per bucket, (min, max) in time order.

    ``x``: 1-D or 2-D (channels, samples) float array cut into ``pairs``
    buckets (see module docstring). Output pair ``i`` is bucket ``i``'s
    minimum and maximum, whichever occurs first first (the first occurrence of
    each when repeated); a bucket with one finite sample gives it twice; a
    bucket with no finite value, or no sample at all (more pairs than
    samples), gives (NaN, NaN). Output dtype float32.
    """
    x = np.asarray(x)
    squeeze = x.ndim == 1
    x2 = np.atleast_2d(x).astype(np.float32, copy=False)
    rows, n = x2.shape
    out = np.full((rows, 2 * pairs), np.nan, dtype=np.float32)
    if n == 0 or pairs <= 0:
        return out[0] if squeeze else out
    lo_pos, lo_val, hi_pos, hi_val = bucket_extremes(x2, bucket_edges(n, pairs))
    min_first = lo_pos <= hi_pos
    out[:, 0::2] = np.where(min_first, lo_val, hi_val)
    out[:, 1::2] = np.where(min_first, hi_val, lo_val)
    return out[0] if squeeze else out


class PointReducer:
    """MinMaxLTTB of a window to ``n_out`` points per row, fed chunk by chunk.

    The window has ``n_total`` samples per row (known up front), cut into
    ``n_out`` buckets (see module docstring). :meth:`feed` takes consecutive
    column chunks ``(rows, m)`` of any sizes; only each bucket's min and max
    are kept (a bucket spanning several chunks keeps its running extremes, not
    its samples), so memory is ``O(rows * (n_out + chunk))`` whatever
    ``n_total``: :data:`STATE_BYTES_PER_POINT` per output point, plus the chunk
    being fed, plus :meth:`result`'s work on at most
    :data:`CHOOSE_BLOCK_POINTS` points at a time. :meth:`result` returns
    ``(positions, values)``: ``(rows, n_out)`` int64 window indices (``-1``
    where the bucket holds no finite sample) and float32 values (NaN there).
    """

    def __init__(self, rows: int, n_total: int, n_out: int):
        if n_out < 1:
            raise ValueError(f"n_out must be at least 1, not {n_out}")
        if n_total < n_out:
            raise ValueError(f"{n_total} samples cannot make {n_out} points (never upsampled)")
        self.rows, self.n_total, self.n_out = rows, n_total, n_out
        self.edges = bucket_edges(n_total, n_out)
        shape = (rows, n_out)
        self.lo_pos = np.full(shape, -1, dtype=np.int64)
        self.hi_pos = np.full(shape, -1, dtype=np.int64)
        self.lo_val = np.full(shape, np.nan, dtype=np.float32)
        self.hi_val = np.full(shape, np.nan, dtype=np.float32)
        # Running extremes (lo_pos, lo_val, hi_pos, hi_val), each (rows,), of the one
        # bucket the chunks fed so far end inside; None when they end on an edge.
        self._open: Optional[tuple] = None
        self._fed = 0
        self._done = 0                             # buckets finished

    def feed(self, chunk: np.ndarray) -> None:
        """Take the next ``chunk`` (rows, m) of the window, in order."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.rows:
            raise ValueError(f"chunk of shape {chunk.shape}, expected ({self.rows}, m)")
        if self._fed + chunk.shape[1] > self.n_total:
            raise ValueError("fed more samples than the window holds")
        start = self._fed                      # window index of chunk[:, 0]
        end = start + chunk.shape[1]
        self._fed = end
        if self._open is not None:
            # The bucket left open by the last chunk: its extremes, extended.
            stop = int(self.edges[self._done + 1])
            self._extend_open(chunk, start, min(stop, end))
            if stop > end:
                return
            self._close_open()
        # Buckets wholly inside the chunk, straight from it (no copy of the chunk).
        last = int(np.searchsorted(self.edges, end, side="right")) - 1
        if last > self._done:
            self._store(chunk, start, self.edges[self._done:last + 1])
        cut = max(int(self.edges[self._done]), start)   # (a skip may end mid-bucket)
        if cut < end:
            self._extend_open(chunk, start, end, cut)

    def _extend_open(self, chunk: np.ndarray, start: int, stop: int,
                     cut: Optional[int] = None) -> None:
        """Fold window samples ``[cut or start, stop)`` of ``chunk`` into the open bucket."""
        a = (start if cut is None else cut) - start
        lp, lv, hp, hv = bucket_extremes(chunk[:, a:stop - start],
                                         np.array([0, stop - start - a]))
        part = (np.where(lp[:, 0] >= 0, lp[:, 0] + start + a, -1), lv[:, 0],
                np.where(hp[:, 0] >= 0, hp[:, 0] + start + a, -1), hv[:, 0])
        self._open = part if self._open is None else combine_extremes(self._open, part)

    def _close_open(self) -> None:
        """The open bucket is complete (or the window ends): store its extremes."""
        k = self._done
        self.lo_pos[:, k], self.lo_val[:, k], self.hi_pos[:, k], self.hi_val[:, k] = self._open
        self._open = None
        self._done = k + 1

    def skip(self, m: int) -> None:
        """Advance over ``m`` samples that hold no data, without materialising them.

        For the parts of a window outside the recording: an ``n_points`` read
        of any length then costs only the data it covers. Skipped samples are
        NaN: they never become points; a bucket wholly skipped has none.
        A skip must start the window (nothing fed yet) or end it.
        """
        if m <= 0:
            return
        end = self._fed + m
        if end > self.n_total:
            raise ValueError("skipped past the end of the window")
        if self._fed and end != self.n_total:
            raise ValueError("a skip must start or end the window")
        self._fed = end
        if self._open is not None:
            # The open bucket ends by the window's end: finish it with what it got.
            self._close_open()
        self._done = max(self._done, int(np.searchsorted(self.edges, end, side="right")) - 1)

    def _store(self, x: np.ndarray, x_start: int, edges: np.ndarray) -> None:
        """Extremes of the buckets ``edges`` (window indices) from ``x`` starting at ``x_start``.

        Edges outside ``x`` are clipped to it: the part of a bucket not in
        ``x`` was skipped (no data).
        """
        lp, lv, hp, hv = bucket_extremes(x, np.clip(edges - x_start, 0, x.shape[1]))
        sl = slice(self._done, self._done + edges.size - 1)
        has = lp >= 0
        self.lo_pos[:, sl] = np.where(has, lp + x_start, -1)
        self.hi_pos[:, sl] = np.where(has, hp + x_start, -1)
        self.lo_val[:, sl] = lv
        self.hi_val[:, sl] = hv
        self._done = sl.stop

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, values)`` of the chosen points (see class docstring)."""
        if self._fed != self.n_total:
            raise ValueError(f"fed {self._fed} of {self.n_total} samples")
        if self._open is not None:          # (a window fed to its very end)
            self._close_open()
        pos = np.empty((self.rows, self.n_out), dtype=np.int64)
        val = np.empty((self.rows, self.n_out), dtype=np.float32)
        step = max(1, CHOOSE_BLOCK_POINTS // self.n_out)
        for r in range(0, self.rows, step):
            rs = slice(r, r + step)
            pos[rs], val[rs] = choose_points(self.lo_pos[rs], self.lo_val[rs],
                                             self.hi_pos[rs], self.hi_val[rs], self.edges)
        return pos, val


#: Bytes a :class:`PointReducer` keeps per output point (both extremes' positions
#: and values) until :meth:`~PointReducer.result`.
STATE_BYTES_PER_POINT = 2 * 8 + 2 * 4
#: Points :meth:`PointReducer.result` chooses among at once (rows in blocks): its
#: temporaries (~100 bytes a point) stay near 25 MB however many points are asked.
CHOOSE_BLOCK_POINTS = 1 << 18


def _lttb_pick(a_pos, a_val, b_pos, b_val) -> np.ndarray:
    """Per bucket of each row, 0 (take candidate a) or 1 (take b); rows of >= 3 buckets.

    ``a`` is each bucket's earlier candidate, ``b`` its later one (equal when
    the bucket holds one finite sample); all ``(rows, n)`` float64, every
    bucket filled (the caller stands in for buckets without data).
    """
    from tsdownsample import LTTBDownsampler

    rows, n = a_pos.shape
    pick = np.empty((rows, n), dtype=np.int64)
    # Buckets 0 and n-1 are LTTB's fixed end points: take the candidate
    # farther from the next (previous) bucket's mean level.
    nxt = (a_val[:, 1] + b_val[:, 1]) / 2
    pick[:, 0] = np.abs(b_val[:, 0] - nxt) > np.abs(a_val[:, 0] - nxt)
    prv = (a_val[:, -2] + b_val[:, -2]) / 2
    pick[:, -1] = np.abs(b_val[:, -1] - prv) > np.abs(a_val[:, -1] - prv)
    # Layout [p0, a1, b1, ..., a_{n-2}, b_{n-2}, p_last]: tsdownsample's LTTB
    # then has exactly one bucket per pair (its bucket size is
    # (len - 2) / (n - 2) = 2), so it picks one candidate of each bucket.
    m = 2 * (n - 2) + 2
    r = np.arange(rows)
    xs = np.empty((rows, m), dtype=np.float64)
    ys = np.empty((rows, m), dtype=np.float64)
    xs[:, 1:-1:2], xs[:, 2:-1:2] = a_pos[:, 1:-1], b_pos[:, 1:-1]
    ys[:, 1:-1:2], ys[:, 2:-1:2] = a_val[:, 1:-1], b_val[:, 1:-1]
    for col, k in ((0, 0), (m - 1, n - 1)):
        xs[:, col] = np.where(pick[:, k] == 1, b_pos[r, k], a_pos[r, k])
        ys[:, col] = np.where(pick[:, k] == 1, b_val[r, k], a_val[r, k])
    lttb = LTTBDownsampler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(rows):
            sel = np.asarray(lttb.downsample(xs[i], ys[i], n_out=n), dtype=np.int64)
            pick[i, 1:-1] = (sel[1:-1] - 1) % 2
    return pick


def choose_points(lo_pos, lo_val, hi_pos, hi_val, edges) -> tuple[np.ndarray, np.ndarray]:
    """One point per bucket from each bucket's min and max (see module docstring).

    All inputs ``(rows, n)`` as made by :func:`bucket_extremes`; ``edges`` the
    ``n + 1`` bucket edges (for empty buckets' stand-in positions). Returns
    ``(positions, values)``; ``-1`` / NaN for buckets without finite data.
    """
    rows, n = lo_pos.shape
    edges = np.asarray(edges, dtype=np.int64)
    has = lo_pos >= 0
    any_data = has.any(axis=1)
    first_lo = lo_pos <= hi_pos
    a_pos = np.where(first_lo, lo_pos, hi_pos).astype(np.float64)
    b_pos = np.where(first_lo, hi_pos, lo_pos).astype(np.float64)
    a_val = np.where(first_lo, lo_val, hi_val).astype(np.float64)
    b_val = np.where(first_lo, hi_val, lo_val).astype(np.float64)
    mid = (a_val + b_val) / 2
    level = np.where(has, mid, 0.0).sum(axis=1) / np.maximum(has.sum(axis=1), 1)
    if not has.all():
        # Gaps: stand-ins at the bucket centre carrying the last level seen
        # (the first one before any data) so the line passes through; their
        # output is NaN below.
        idx = np.where(has, np.arange(n)[None, :], -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        idx = np.where(idx < 0, np.argmax(has, axis=1)[:, None], idx)
        fill = np.take_along_axis(mid, idx, axis=1)
        centre = np.broadcast_to((edges[:-1] + edges[1:] - 1) / 2.0, (rows, n))
        a_val, b_val = np.where(has, a_val, fill), np.where(has, b_val, fill)
        a_pos, b_pos = np.where(has, a_pos, centre), np.where(has, b_pos, centre)
    if n >= 3 and any_data.any():
        pick = np.zeros((rows, n), dtype=np.int64)
        pick[any_data] = _lttb_pick(a_pos[any_data], a_val[any_data],
                                    b_pos[any_data], b_val[any_data])
    else:
        pick = (np.abs(b_val - level[:, None]) > np.abs(a_val - level[:, None])).astype(np.int64)
    pos = np.where(has, np.where(pick == 1, b_pos, a_pos), -1).astype(np.int64)
    val = np.where(has, np.where(pick == 1, b_val, a_val), np.nan).astype(np.float32)
    # Never understate the amplitude: the overall extremes go back in.
    r = np.flatnonzero(any_data)
    lv = np.where(has, lo_val, np.inf)[r]
    hv = np.where(has, hi_val, -np.inf)[r]
    k_lo, k_hi = lv.argmin(axis=1), hv.argmax(axis=1)
    g_lo, g_hi = lv[np.arange(r.size), k_lo], hv[np.arange(r.size), k_hi]
    same = k_lo == k_hi
    hi_wins = (g_hi - level[r]) >= (level[r] - g_lo)
    put_lo = ~same | ~hi_wins
    put_hi = ~same | hi_wins
    pos[r[put_lo], k_lo[put_lo]] = lo_pos[r[put_lo], k_lo[put_lo]]
    val[r[put_lo], k_lo[put_lo]] = g_lo[put_lo]
    pos[r[put_hi], k_hi[put_hi]] = hi_pos[r[put_hi], k_hi[put_hi]]
    val[r[put_hi], k_hi[put_hi]] = g_hi[put_hi]
    return pos, val


def reduce_to_points(x: np.ndarray, n_out: int) -> np.ndarray:
    """Each row of ``x`` (channels, samples) reduced to exactly ``n_out`` real samples.

    Rows with no more than ``n_out`` samples come back unchanged (never
    upsampled). See :class:`PointReducer` for the streaming form.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    if x.shape[1] <= n_out:
        return x
    red = PointReducer(x.shape[0], x.shape[1], n_out)
    red.feed(x)
    return red.result()[1]
