"""Reads of derived and filtered channels: montage, then filters, then reduction.

One read of this kind, top-down:

1. the recorded channels the montage (or the plain channel list) needs are
   read at their native rate through the tile store -- the same cached,
   prefetched tiles as any read -- over the window plus the filters' padding
   on each side (:func:`.filtering.padding_samples`), on the window's own
   sample grid;
2. the montage combines them (:func:`.montage.apply_montage`, NaN rules there);
3. the filters run zero-phase over each gap-free run
   (:func:`.filtering.filter_runs`), and the padding is cut off;
4. the result is reduced like a recorded channel: to the session's
   ``cache_fs`` by order-preserving min-max, or to ``n_points`` by MinMaxLTTB
   (:mod:`.reduction`), always from the native derived samples.

A long ``n_points`` window (an overview) is computed in chunks, each with its
own padding, fed to :class:`.reduction.PointReducer`: by the filter's
tolerance each chunk equals the filter over the whole run, so the overview has
the shape of the pages. Answers are kept in the shared :class:`.tile_cache.TileCache`
under keys naming what they are made of (recording, montage, filters, inputs,
rate, window, points), so a viewer's redraw costs a lookup, and dropped with
the recording's other tiles.

Units: times uUTC, rates Hz. Windows half-open ``[t0, t1)``.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Iterator, Optional, Sequence

import numpy as np

from . import filtering
from . import tile_grid as tg
from .errors import BadRequest, ResourceLimit
from .mixed_rates import describe_rates
from .montage import Montage, apply_montage
from .recent_keys import RecentKeys
from .reduction import PointReducer, minmax_ordered


@dataclass(frozen=True)
class DerivedSpec:
    """What to compute: a montage (None: the recorded channels asked) and filters."""

    montage: Optional[Montage]
    filters: tuple[filtering.FilterSpec, ...] = ()

    def key(self) -> tuple:
        return ("derived", self.montage.signature if self.montage else None,
                filtering.signature(self.filters))


@dataclass
class DerivedStats:
    """Counts since start: answers computed (on demand, or ahead) and found in the cache."""

    computed: int = 0
    computed_ahead: int = 0
    cache_hits: int = 0


@dataclass
class DerivedRead:
    """Names, rate (Hz), samples per channel and the chunks ``(a, b, j0, rows)`` of a read."""

    names: list[str]
    fs: float
    n_samples: int
    chunks: Iterator[tuple[int, int, int, np.ndarray]]


def offset_us(j: int, fs: float) -> int:
    """uUTC offset of sample ``j`` of a window at ``fs`` Hz (rounded half up, exact)."""
    return 0 if j == 0 else tg.round_half_up(Fraction(j * 10**6) / Fraction(fs))


#: Derived rows are computed in blocks of at most this many float64 bytes
#: (see :meth:`DerivedReader._derive`).
BLOCK_BYTES = 2 << 20


class DerivedReader:
    """Runs derived/filtered reads over an engine's tile store and cache.

    ``engine``: the :class:`.engine.Engine`; only its public ``store``,
    ``cache`` and ``settings`` are used.
    """

    #: Largest derived window (float32 bytes) whose next window is computed ahead.
    AHEAD_MAX_BYTES = 4 << 20

    def __init__(self, engine):
        self.store = engine.store
        self.cache = engine.cache
        self.settings = engine.settings
        # One thread computes a pager's next derived window ahead (see _ahead).
        self._ahead_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="derived-ahead")
        self._ahead_recent = RecentKeys(256)           # windows computed ahead lately
        self._stats_lock = threading.Lock()
        self.stats = DerivedStats()

    def close(self) -> None:
        self._ahead_pool.shutdown(wait=False, cancel_futures=True)

    def read(self, rec, session, channel_names: Sequence[str], spec: DerivedSpec,
             t0: int, t1: int, n_points: Optional[int], cancel=None) -> DerivedRead:
        """Validate and plan the read (nothing decoded until its chunks are iterated).
        ``cancel``: the read's cancel token (see :func:`.decode.cancel_token`)."""
        if spec.montage is not None:
            if channel_names:
                raise BadRequest("give either channel_names or a montage, not both (a montage "
                                 "names its derived channels)")
            inputs = list(spec.montage.inputs)
            names = spec.montage.names
        else:
            inputs = [c.name for c in rec.resolve_channels(channel_names)]
            names = list(inputs)
        chans = rec.resolve_channels(inputs)
        if len({c.fs for c in chans}) > 1:
            raise BadRequest("the channels a montage or filter combines must share a sampling "
                             "rate, but these differ (" + describe_rates(inputs, [c.fs for c in
                                                                                  chans]) + ")")
        fs = chans[0].fs
        n = tg.samples_in_window(t0, t1, fs)
        if n <= 0:
            raise BadRequest(f"no samples in the window [{t0}, {t1}) at {fs:g} Hz")
        q = tg.exact_period_samples(fs)
        pad = 0
        if spec.filters:
            filtering.design(spec.filters, fs)          # checks the cut-offs against Nyquist
            if not q:
                raise BadRequest(f"filters need a rate whose sample period is a whole number "
                                 f"of microseconds over few samples; {fs:g} Hz is not")
            pad = filtering.padding_samples(spec.filters, fs)
            pad = -(-pad // q) * q
        cache_fs = session.cache_fs if session else None
        served = fs if cache_fs is None else min(fs, cache_fs)
        plan = _Plan(rec, chans, inputs, names, spec, fs, t0, t1, n, pad, q or 1, cancel)
        if n_points is None or n <= n_points:       # the window is computed whole
            self._check_size(n + 2 * pad, max(len(inputs), len(names)))
        if n_points is not None and n > n_points:
            out_fs = n_points / ((t1 - t0) / 1e6)
            return DerivedRead(names, out_fs, n_points,
                               self._points_chunks(plan, int(n_points)))
        if served < fs:                 # a session's cache_fs (n_out <= n <= any n_points)
            n_out = tg.samples_in_window(t0, t1, served)
            return DerivedRead(names, served, n_out, self._window_chunks(plan, served, n_out))
        return DerivedRead(names, fs, n, self._window_chunks(plan, fs, n))

    def _check_size(self, samples: int, rows: int) -> None:
        """Refuse a window whose native samples (float64, padding included) exceed
        ``MAX_READ_MB``: it is computed whole (an ``n_points`` read is not)."""
        nbytes = samples * rows * 8
        if nbytes > self.settings.max_read_bytes:
            raise ResourceLimit(
                f"the window with its filter padding holds {samples} samples x {rows} "
                f"channels ({nbytes / 2**20:.0f} MB to compute), over the server's limit of "
                f"{self.settings.max_read_bytes / 2**20:.0f} MB (MAX_READ_MB); read it in "
                "parts or ask for n_points")

    # ------------------------------------------------------------ computing

    def _native(self, plan: "_Plan", s0: int, s1: int, per: Optional[int] = None,
                limit_bytes: bool = True) -> Iterator[np.ndarray]:
        """Derived, filtered native samples ``[s0, s1)`` of the window (float32), in order,
        in pieces of about ``per`` samples (None: one piece).

        One read through the tile store covers ``[s0 - pad, s1 + pad)`` (its tiles
        decode ahead in the background while a piece is computed); each piece is
        computed from the samples read so far with ``pad`` samples on each side,
        so it equals the same filter over a longer stretch (module docstring).
        """
        p = plan.pad
        total = s1 - s0 + 2 * p
        per = total if per is None else per
        a = plan.t0 + plan.offset(s0 - p)
        b = a + offset_us(total, plan.fs)
        buf, buf_start, core = None, s0 - p, s0     # buf[:, 0] is window sample buf_start
        for _, j1, rows in self.store.read_chunks(plan.rec, plan.chans, plan.fs, a, b, per,
                                                  limit_bytes=limit_bytes, cancel=plan.cancel):
            buf = rows if buf is None else np.concatenate((buf, rows), axis=1)
            last = j1 == total
            upto = s1 if last else buf_start + buf.shape[1] - p
            if upto <= core or (not last and upto - core < per // 2):
                continue                            # not enough after the core yet
            yield self._derive(plan, buf, core - buf_start, upto - buf_start)
            keep = upto - p - buf_start             # the next core's left padding on
            buf, buf_start, core = buf[:, keep:], buf_start + keep, upto

    def _derive(self, plan: "_Plan", buf: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Columns ``[lo, hi)`` of the derived, filtered rows of ``buf`` (the recorded
        rows, float32), as float32, computed from all of ``buf``'s columns.

        Works in blocks of derived rows of at most :data:`BLOCK_BYTES` (float64), so
        the temporaries (montage, filter passes) stay small: allocations above
        glibc's mmap threshold (:mod:`.memory`) are fresh pages every time.
        """
        m = plan.spec.montage
        n_rows, n = len(plan.names), buf.shape[1]
        out = np.empty((n_rows, hi - lo), dtype=np.float32)
        sos = filtering.design(plan.spec.filters, plan.fs) if plan.spec.filters else None
        step = max(1, BLOCK_BYTES // (8 * max(1, n)))
        averages: dict = {}
        for r0 in range(0, n_rows, step):
            rows = range(r0, min(n_rows, r0 + step))
            if m is None:
                y = buf[r0:rows.stop].astype(np.float64)
            else:
                y = apply_montage(m, plan.inputs, buf, rows, averages)
            if sos is not None:
                y = filtering.filter_runs(sos, y)
            out[r0:rows.stop] = y[:, lo:hi]
        return out

    def _cached(self, plan: "_Plan", what: tuple, compute) -> np.ndarray:
        key = (plan.rec.key, plan.spec.key() + (tuple(plan.inputs),), float(plan.fs),
               int(plan.t0), int(plan.t1)) + what
        out = self.cache.get(key)
        if out is None:
            out = compute()
            out.flags.writeable = False
            if not plan.rec.closed and not getattr(plan.rec, "superseded", False):
                self.cache.put(key, out)
            with self._stats_lock:
                if threading.current_thread().name.startswith("derived-ahead"):
                    self.stats.computed_ahead += 1
                else:
                    self.stats.computed += 1
        else:
            with self._stats_lock:
                self.stats.cache_hits += 1
        return out

    def _prefetch(self, plan: "_Plan") -> None:
        try:
            self.store.prefetch_later(plan.rec, plan.chans, plan.fs, plan.t0, plan.t1)
        except Exception:  # noqa: BLE001 - best effort, like every prefetch
            pass

    def _ahead(self, plan: "_Plan", fs: float, n_out: int) -> None:
        """Compute the next window of a page read (same length, starting where this one
        ends) into the cache on a background thread: a viewer paging forward finds it
        there, as it finds the recorded tiles prefetched. Windows reaching past the
        recording's end (which may still grow) and large windows are left alone."""
        width = plan.t1 - plan.t0
        nxt = replace(plan, t0=plan.t1, t1=plan.t1 + width,
                      n=tg.samples_in_window(plan.t1, plan.t1 + width, plan.fs), cancel=None)
        if nxt.t1 > plan.rec.end_uutc or n_out * len(plan.names) * 4 > self.AHEAD_MAX_BYTES:
            return
        key = (plan.rec.key, plan.spec.key(), nxt.t0, nxt.t1, fs)
        if not self._ahead_recent.add(key):
            return
        n_next = tg.samples_in_window(nxt.t0, nxt.t1, fs)

        def work():
            try:
                if not plan.rec.closed:
                    self._window(nxt, fs, n_next)
            except Exception:  # noqa: BLE001 - best effort
                pass
        try:
            self._ahead_pool.submit(work)
        except RuntimeError:        # shut down
            pass

    def _window(self, plan: "_Plan", fs: float, n_out: int) -> np.ndarray:
        """The whole derived window at ``fs`` (``n_out`` samples), from the cache or computed."""
        def compute():
            y = next(self._native(plan, 0, plan.n))
            if n_out != plan.n:                 # cache_fs: order-preserving min-max
                y = minmax_ordered(y, -(-n_out // 2))[:, :n_out]
            return np.ascontiguousarray(y, dtype=np.float32)

        return self._cached(plan, ("window", float(fs)), compute)

    def _window_chunks(self, plan: "_Plan", fs: float, n_out: int):
        out = self._window(plan, fs, n_out)
        per = tg.chunk_samples(len(plan.names), self.settings.chunk_bytes,
                               multiple_of=tg.exact_period_samples(fs) or 1)
        for j0, j1 in tg.chunk_bounds(n_out, per):
            a = plan.t0 + offset_us(j0, fs)
            b = plan.t1 if j1 == n_out else plan.t0 + offset_us(j1, fs)
            yield a, b, j0, out[:, j0:j1]
        self._prefetch(plan)
        self._ahead(plan, fs, n_out)

    def _points_chunks(self, plan: "_Plan", n_points: int):
        def compute():
            reducer = PointReducer(len(plan.names), plan.n, n_points)
            s0, s1 = plan.data_span()
            reducer.skip(s0)
            per = tg.chunk_samples(max(len(plan.chans), len(plan.names)),
                                   self.settings.points_source_bytes // 2, itemsize=8,
                                   multiple_of=plan.q)
            per = max(per, 4 * plan.pad, plan.q)
            per -= per % plan.q
            if s1 > s0:
                for y in self._native(plan, s0, s1, per, limit_bytes=False):
                    reducer.feed(y)
            reducer.skip(plan.n - s1)
            return reducer.result()[1]

        out = self._cached(plan, ("points", n_points), compute)
        per = tg.chunk_samples(len(plan.names), self.settings.chunk_bytes)
        for j0, j1 in tg.chunk_bounds(n_points, per):
            a = plan.t0 + (j0 * (plan.t1 - plan.t0)) // n_points
            b = plan.t0 + (j1 * (plan.t1 - plan.t0)) // n_points
            yield a, b, j0, out[:, j0:j1]
        self._prefetch(plan)


@dataclass
class _Plan:
    rec: object
    chans: list
    inputs: list[str]
    names: list[str]
    spec: DerivedSpec
    fs: float
    t0: int
    t1: int
    n: int
    pad: int          # samples of padding per side, a multiple of q
    q: int            # samples per whole number of microseconds at fs
    cancel: object = None   # the read's cancel token (None: computed ahead, uncancelled)

    def offset(self, j: int) -> int:
        """uUTC offset of window sample ``j`` (negative before the window), exact when
        ``j`` is a multiple of ``q``."""
        return -offset_us(-j, self.fs) if j < 0 else offset_us(j, self.fs)

    def data_span(self) -> tuple[int, int]:
        """Window samples ``[s0, s1)`` that can hold data (the inputs' span), on multiples
        of ``q``: outside it every sample is NaN, so an overview of days reads the hour."""
        lo = min(c.start_uutc for c in self.chans)
        hi = max(c.end_uutc for c in self.chans)
        rate = Fraction(self.fs) / 10**6
        s0 = max(0, math.floor((lo - self.t0) * rate) - 1)
        s1 = min(self.n, math.ceil((hi - self.t0) * rate) + 1)
        s0 -= s0 % self.q
        if s1 < self.n:
            s1 = min(self.n, s1 + (-s1) % self.q)
        return s0, max(s0, s1)
