"""Prefetch: the windows around a read, decoded in the background before asked for.

After a read's last chunk, :meth:`Prefetcher.later` plans (on a planner
thread, after a short grace so the client takes in its answer first) the
background decode of ``prefetch_ahead`` windows of the read's size after it
and ``prefetch_behind`` before it. A *steady reader* -- whose window starts
where its previous one of the same size and channels ended -- gets
``steady_extra_ahead`` more windows ahead, and its next window assembled
whole (:meth:`.window_share.WindowShare.preassemble`), so its next page is one
cache lookup. Everything here is best effort: a failure is logged, never raised.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from typing import Sequence

from . import tile_grid as tg
from .recent_keys import RecentKeys
from .recordings import ChannelInfo, Recording
from .tile_fetch import TileFetcher
from .window_share import WindowShare

log = logging.getLogger("mef3io_server.tiles")


class Prefetcher:
    """Plan and start background decodes around reads (see module docstring)."""

    #: Keys each memory of recent plans holds (:class:`.recent_keys.RecentKeys`).
    RECENT_PLANS = 1024
    STREAMS = 1024
    PLANNED = 4096

    def __init__(self, share: WindowShare):
        self.share = share
        self.fetcher: TileFetcher = share.fetcher
        self.tuning = share.tuning
        self.stats = share.stats
        self._recent_plans = RecentKeys(self.RECENT_PLANS)  # a read's key -> when planned
        self._stream_ends = RecentKeys(self.STREAMS)        # a stream -> its last read's end
        self._planned = RecentKeys(self.PLANNED)            # a window's tiles -> when checked
        # Plans prefetches off the request thread (see later).
        self._planner = cf.ThreadPoolExecutor(1, thread_name_prefix="prefetch-plan")
        # Assembles steady readers' next windows (waits for tiles).
        self._assembler = cf.ThreadPoolExecutor(1, thread_name_prefix="preassemble")
        self._closed = False

    def now(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
            t0: int, t1: int, extra_ahead: int = 0) -> int:
        """Warm ``prefetch_ahead`` windows after and ``prefetch_behind`` before ``[t0, t1)``.

        Windows are of the request's own size, clipped to the recording; tiles
        cached or being decoded are skipped. ``extra_ahead``: more windows ahead
        for a steady reader, as many as fit in the per-request budget (a
        quarter of the cache). Returns how many tile decodes started.
        """
        t = self.tuning
        if (t.prefetch_ahead <= 0 and t.prefetch_behind <= 0) or t1 <= t0:
            return 0
        span = t1 - t0
        n = tg.samples_in_window(t0, t1, fs)
        budget = self.fetcher.cache.max_bytes // 4
        window_bytes = n * len(chans) * 4
        need = window_bytes * (t.prefetch_ahead + t.prefetch_behind)
        if need > budget:
            return 0
        room = (budget - need) // max(1, window_bytes)
        ahead = t.prefetch_ahead + max(0, min(extra_ahead, room))
        started = 0
        offsets = [i for i in range(1, ahead + 1)] + \
                  [-i for i in range(1, t.prefetch_behind + 1)]
        now = time.monotonic()
        planned = self._planned
        for (grid, native), idxs in self.share.assembler.plan_groups(rec, chans, fs).items():
            group = [chans[i] for i in idxs]
            names = tuple(c.name for c in group)
            for off in offsets:
                a = t0 + off * span
                if a >= rec.end_uutc or a + span <= rec.start_uutc:
                    continue
                # A steady reader's next windows were planned by its previous
                # reads: checking their tiles again (every channel x tile) is
                # skipped while the plan is fresh. A tile evicted meanwhile is
                # decoded by the read that needs it, as without prefetch.
                pkey = (rec.key, rec.generation, grid, a, n, names)
                if now - planned.get(pkey, -1e9) < t.planned_fresh_s:
                    with self.stats.lock:
                        self.stats.prefetch_windows_skipped += 1
                    continue
                try:
                    started += self.fetcher.start_background(rec, group, grid, a, 0, n)
                except Exception:  # noqa: BLE001 - prefetch is best effort
                    log.debug("prefetch scheduling failed", exc_info=True)
                    continue
                planned.put(pkey, now)
                with self.stats.lock:
                    self.stats.prefetch_windows_planned += 1
        return started

    def later(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float,
              t0: int, t1: int) -> cf.Future:
        """:meth:`now` on the planner thread: the caller (a read about to send its
        last chunk) does not wait for the planning. Returns its future.

        The planning (and a steady reader's next window) starts
        ``prefetch_grace_s`` seconds later: the last chunk has then reached the
        client, which still has to take it in; background decodes started at
        once would take the cores from it (benchmarks/decisions.md).
        """
        done: cf.Future = cf.Future()
        done.set_result(0)
        if self._closed:
            return done
        # A reader repeating the same window (a viewer redrawing) needs no new
        # plan each time: the same prefetch is planned at most every 0.5 s.
        key = (rec.key, rec.generation, float(fs), t0, t1, len(chans),
               chans[0].name if chans else "", chans[-1].name if chans else "")
        now = time.monotonic()
        if now - self._recent_plans.get(key, -1.0) < 0.5:
            return done
        self._recent_plans.put(key, now)
        stream = key[:2] + (float(fs), t1 - t0) + key[5:]
        steady = self._stream_ends.get(stream) == t0 and self.tuning.prefetch_ahead > 0
        self._stream_ends.put(stream, t1)
        extra = self.tuning.steady_extra_ahead if steady else 0
        due = now + self.tuning.prefetch_grace_s
        try:
            planned = self._planner.submit(self._when_due, due, self._quietly, rec,
                                           list(chans), fs, t0, t1, extra)
            if steady:
                # Its next window, assembled: the next page is a cache lookup.
                self._assembler.submit(self._when_due, due, self.share.preassemble, rec,
                                       list(chans), fs, t1, t1 + (t1 - t0))
            return planned
        except RuntimeError:        # shut down under us
            return done

    def settled(self) -> None:
        """Wait until the planning submitted so far has run (for tests)."""
        self._planner.submit(lambda: None).result()

    def forget(self, rec: Recording) -> None:
        """Drop the plans of this version of the recording."""
        key = rec.key
        self._planned.forget_where(lambda k: k[0] == key)

    def close(self) -> None:
        self._closed = True
        self._planner.shutdown(wait=False, cancel_futures=True)
        self._assembler.shutdown(wait=False, cancel_futures=True)

    def _when_due(self, due: float, fn, *args):
        """Run ``fn(*args)`` on this thread once ``time.monotonic()`` reaches ``due``."""
        wait = due - time.monotonic()
        if wait > 0 and not self._closed:
            time.sleep(wait)
        return fn(*args)

    def _quietly(self, rec, chans, fs, t0, t1, extra_ahead=0) -> int:
        try:
            return self.now(rec, chans, fs, t0, t1, extra_ahead)
        except Exception:  # noqa: BLE001 - prefetch is best effort
            log.debug("prefetch failed", exc_info=True)
            return 0

