"""Reduction of a signal to fewer points, keeping its shape.

* :func:`minmax_ordered` -- the ``cache_fs`` reduction: each output pair is
  the minimum and maximum of its bucket *in the order they occur*, so a spike
  survives at any rate.
* :func:`minmaxlttb_indices` / :func:`reduce_to_points` -- the ``n_points``
  reduction: exactly ``n`` real samples chosen by MinMaxLTTB (tsdownsample),
  each channel's overall minimum and maximum always kept.

NaN marks a gap. A bucket with no finite value yields NaN; NaN runs survive as
gaps (never invented values). Buckets are index ranges: bucket ``i`` of ``b``
over ``N`` samples is ``[floor(i*N/b), floor((i+1)*N/b))``.
"""
from __future__ import annotations

import warnings

import numpy as np


def bucket_edges(n: int, buckets: int) -> np.ndarray:
    """Start indices of ``buckets`` index buckets over ``n`` samples, plus ``n``."""
    return (np.arange(buckets + 1, dtype=np.int64) * n) // max(1, buckets)


def minmax_ordered(x: np.ndarray, pairs: int) -> np.ndarray:
    """Reduce the last axis of ``x`` to ``2 * pairs`` values: per bucket, (min, max) in time order.

    ``x``: 1-D or 2-D (channels, samples) float array. A bucket with no
    finite value gives (NaN, NaN); an empty bucket (more pairs than samples)
    gives (NaN, NaN) too. Output dtype float32.
    """
    x = np.asarray(x)
    squeeze = x.ndim == 1
    x2 = np.atleast_2d(x).astype(np.float32, copy=False)
    rows, n = x2.shape
    out = np.full((rows, 2 * pairs), np.nan, dtype=np.float32)
    if n == 0 or pairs == 0:
        return out[0] if squeeze else out
    edges = bucket_edges(n, pairs)
    nonempty = edges[1:] > edges[:-1]
    starts = edges[:-1][nonempty]
    idx_pairs = np.nonzero(nonempty)[0]
    # NaN-aware argmin/argmax per bucket via reduceat on masked copies.
    finite = np.isfinite(x2)
    lo = np.where(finite, x2, np.inf)
    hi = np.where(finite, x2, -np.inf)
    mins = np.minimum.reduceat(lo, starts, axis=1)
    maxs = np.maximum.reduceat(hi, starts, axis=1)
    # Position of the first min / first max in each bucket, to order them.
    bucket_of = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n)))
    pos = np.arange(n)
    big = n + 1
    for r in range(rows):
        is_min = lo[r] == mins[r][bucket_of]
        is_max = hi[r] == maxs[r][bucket_of]
        first_min = np.minimum.reduceat(np.where(is_min, pos, big), starts)
        first_max = np.minimum.reduceat(np.where(is_max, pos, big), starts)
        mn = mins[r].copy()
        mx = maxs[r].copy()
        empty = ~np.isfinite(mn)
        mn[empty] = np.nan
        mx[empty] = np.nan
        min_first = first_min <= first_max
        a = np.where(min_first, mn, mx)
        b = np.where(min_first, mx, mn)
        out[r, 2 * idx_pairs] = a
        out[r, 2 * idx_pairs + 1] = b
    return out[0] if squeeze else out


def minmaxlttb_indices(y: np.ndarray, n_out: int, minmax_ratio: int = 4) -> np.ndarray:
    """Indices of ``n_out`` samples of 1-D ``y`` chosen by MinMaxLTTB (tsdownsample).

    NaN samples are never chosen unless the whole input is NaN. The first and
    last finite samples, and the overall minimum and maximum, are kept (with
    ``n_out == 1``: whichever extreme lies farther from the mean).
    """
    from tsdownsample import MinMaxLTTBDownsampler

    y = np.asarray(y)
    n = y.size
    if n_out >= n:
        return np.arange(n)
    finite = np.flatnonzero(np.isfinite(y))
    if finite.size == 0:
        return np.linspace(0, n - 1, n_out).round().astype(np.int64)
    if finite.size <= n_out:
        # Every finite sample fits: keep them all, pad with evenly spaced NaN positions.
        rest = np.setdiff1d(np.arange(n), finite)
        extra = rest[np.linspace(0, rest.size - 1, n_out - finite.size).round().astype(np.int64)] \
            if n_out > finite.size else np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([finite, extra]))
    yf = y[finite].astype(np.float64, copy=False)
    if n_out == 1:
        # One point cannot keep both extremes: keep the one farther from the mean.
        return finite[[int(np.argmax(np.abs(yf - yf.mean())))]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_out >= 3:
            sel = MinMaxLTTBDownsampler().downsample(finite.astype(np.float64), yf, n_out=n_out,
                                                     minmax_ratio=minmax_ratio)
        else:
            sel = np.array([int(np.argmin(yf)), int(np.argmax(yf))])[:n_out]
    sel = np.unique(np.asarray(sel, dtype=np.int64))
    # Always keep the overall extremes.
    must = np.array([int(np.argmin(yf)), int(np.argmax(yf))])
    sel = np.union1d(sel, must)
    if sel.size > n_out:
        # Drop non-extreme points closest to their neighbours until n_out remain.
        keep = np.ones(sel.size, dtype=bool)
        protected = np.isin(sel, must)
        for i in np.argsort(np.abs(np.diff(np.append(yf[sel], yf[sel][-1]))), kind="stable"):
            if keep.sum() <= n_out:
                break
            if not protected[i]:
                keep[i] = False
        sel = sel[keep]
    elif sel.size < n_out:
        spare = np.setdiff1d(np.arange(finite.size), sel)
        fill = spare[np.linspace(0, spare.size - 1, n_out - sel.size).round().astype(np.int64)]
        sel = np.sort(np.concatenate([sel, fill]))
    return finite[sel]


def reduce_to_points(x: np.ndarray, n_out: int) -> np.ndarray:
    """Each row of ``x`` (channels, samples) reduced to exactly ``n_out`` real samples.

    Rows with no more than ``n_out`` samples come back unchanged (never upsampled).
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    if x.shape[1] <= n_out:
        return x
    out = np.empty((x.shape[0], n_out), dtype=np.float32)
    for r in range(x.shape[0]):
        out[r] = x[r, minmaxlttb_indices(x[r], n_out)]
    return out
