"""Decode in worker processes (``USE_PROCESS_POOL=true``), as the published server does.

Each worker holds its own mef3io reader per file. A worker that dies (killed,
crashed) breaks only its pool: the pool is rebuilt and the decode retried
(``DECODE_RETRIES`` times: one kill fails every decode queued on that pool,
and a second may hit the retry), then failed with a clear error.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import multiprocessing
import os
import threading
import time
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Optional

from ..errors import DecodeFailed
from .base import LANES, Decoder, open_reader, read_window

log = logging.getLogger("mef3io_server.decode")

DECODE_RETRIES = 2      # re-submissions after a worker death
WATCHDOG_S = 1.0        # how often pools are checked for live workers

_WORKER_READERS: "dict[tuple[str, int], object]" = {}
_WORKER_MAX_READERS = 64


def _worker_init(parent_pid: int, n_threads: int) -> None:
    """Runs once in each worker: quiet warnings, exit if the server goes away."""
    warnings.simplefilter("ignore")
    global _WORKER_THREADS
    _WORKER_THREADS = n_threads

    # Workers are forked by the forkserver, so their parent is the forkserver,
    # not the server: watch both (the parent changes when the forkserver
    # dies; the server's pid vanishes when it dies without a clean shutdown).
    start_ppid = os.getppid()

    def watch():
        # A forkserver worker's parent is the forkserver, not the server: watch
        # the server's pid itself. With pidfds (Linux >= 5.3) this thread sleeps
        # until either process ends; else it looks every 0.5 s.
        _wait_for_exit([parent_pid, start_ppid])
        while True:
            if os.getppid() != start_ppid or not _process_alive(parent_pid):
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


_WORKER_THREADS = 0


def _wait_for_exit(pids: list[int]) -> None:
    """Block until one of ``pids`` exits (pidfds, no wakeups); return at once
    when pidfds are unavailable (the caller then polls)."""
    import select

    fds = []
    try:
        for pid in pids:
            fds.append(os.pidfd_open(pid))
    except (AttributeError, OSError):
        for fd in fds:
            os.close(fd)
        return
    try:
        while True:
            try:
                if select.select(fds, [], [])[0]:
                    return
            except InterruptedError:
                continue
    finally:
        for fd in fds:
            os.close(fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_decode(path: str, generation: int, password: str, channels, t0, t1,
                   dtype: str = "float32"):
    key = (path, generation)
    reader = _WORKER_READERS.get(key)
    if reader is None:
        for old in [k for k in _WORKER_READERS if k[0] == path]:
            _WORKER_READERS.pop(old).close()
        if len(_WORKER_READERS) >= _WORKER_MAX_READERS:
            _WORKER_READERS.pop(next(iter(_WORKER_READERS))).close()
        reader = open_reader(path, password, _WORKER_THREADS)
        _WORKER_READERS[key] = reader
    return read_window(reader, channels, t0, t1, dtype)


def _worker_noop(_index: int = 0) -> int:
    """Warm-up task (``pool.map`` passes an index); returns the worker's pid."""
    return os.getpid()


@dataclass(frozen=True)
class _PoolParts:
    """What ending a process pool needs once ``shutdown(wait=False)`` dropped its references.

    ``processes`` is the pool's own dict of workers, not a copy: a worker whose
    start was in progress when the parts were taken is in it once started.
    Uses the executor's private ``_processes`` / ``_result_queue`` /
    ``_executor_manager_thread``; without them there is nothing to end.
    """

    processes: dict
    results: object
    manager: Optional[threading.Thread]

    @classmethod
    def of(cls, pool: cf.ProcessPoolExecutor) -> "_PoolParts":
        return cls(getattr(pool, "_processes", None) or {}, getattr(pool, "_result_queue", None),
                   getattr(pool, "_executor_manager_thread", None))


def _dead_workers(pool: cf.ProcessPoolExecutor) -> frozenset:
    """Pids of the workers ``pool`` still lists though they have exited, unless it knows it
    is broken. A pool's manager thread removes or reports a dead worker within
    milliseconds, so one listed for seconds means the manager is wedged."""
    if getattr(pool, "_broken", False):
        return frozenset()
    dead = set()
    for pid, proc in list((getattr(pool, "_processes", None) or {}).items()):
        try:
            if proc.exitcode is not None:
                dead.add(pid)
        except ValueError:      # a closed Process object: not ours to judge
            pass
    return frozenset(dead)


class ProcessDecoder(Decoder):
    """Decode in worker processes (forkserver), one pool per lane."""

    kind = "processes"

    #: Seconds :meth:`close` gives the workers to finish what they hold before they are killed.
    CLOSE_GRACE_S = 2.0
    #: Seconds spent ending a pool given up as wedged (its workers, then its manager thread).
    RELEASE_TIMEOUT_S = 5.0

    def __init__(self, fg_workers: int, bg_workers: int, n_threads: int = 0):
        self._sizes = {"fg": max(1, fg_workers), "bg": max(1, bg_workers)}
        self._n_threads = n_threads
        self._ctx = multiprocessing.get_context("forkserver")
        # Workers fork from a server that already imported these: a pool rebuilt
        # after a worker died serves again in milliseconds, not an import later.
        self._ctx.set_forkserver_preload(["numpy", "mef3io", __name__])
        self._lock = threading.Lock()
        self._pools: dict[str, cf.ProcessPoolExecutor] = {}
        self._restarts = 0
        self._decodes = 0
        self._decode_seconds = 0.0
        self._closed = False
        self._watchdog: Optional[threading.Thread] = None
        # Decodes submitted and not finished; the watchdog sleeps while none is.
        self._outstanding = 0
        self._busy = threading.Event()
        # Pools given up as wedged (a count), and the manager threads of those
        # that could not be released: Python joins those at exit, so the
        # server must then leave with os._exit (see ``stuck``).
        self.wedged = 0
        self._stuck: list[threading.Thread] = []

    def _pool(self, lane: str) -> cf.ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise DecodeFailed("the server is shutting down")
            pool = self._pools.get(lane)
            if pool is None:
                pool = cf.ProcessPoolExecutor(
                    self._sizes[lane], mp_context=self._ctx, initializer=_worker_init,
                    initargs=(os.getpid(), self._n_threads))
                self._pools[lane] = pool
                if self._watchdog is None:
                    self._watchdog = threading.Thread(target=self._watch_pools, daemon=True,
                                                      name="decode-watchdog")
                    self._watchdog.start()
            return pool

    def _rebuild(self, lane: str, broken: cf.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pools.get(lane) is broken:
                del self._pools[lane]
                self._restarts += 1
                log.warning("a %s decode worker died; rebuilding the pool", lane)
        try:
            broken.shutdown(wait=False, cancel_futures=True)
        except Exception:  # noqa: BLE001
            pass

    def warm_up(self) -> None:
        for lane in LANES:
            pool = self._pool(lane)
            list(pool.map(_worker_noop, range(self._sizes[lane])))

    def submit(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        # A cancel token cannot cross to a worker process: a cancelled read's
        # decodes already submitted finish (their tiles are cached).
        # Methods and functools.partial, not nested closures: a closure that
        # calls itself (the retry) is a reference cycle, and it kept every
        # finished decode's future -- and its samples -- alive until the
        # garbage collector's next pass (docs/reliability.md, "memory").
        outer: cf.Future = cf.Future()
        args = (source.path, source.generation, source.password, tuple(channels), int(t0), int(t1),
                dtype)
        with self._lock:
            self._outstanding += 1
            self._busy.set()
        outer.add_done_callback(self._decode_done)
        self._attempt(outer, lane, args, time.perf_counter(), DECODE_RETRIES)
        return outer

    def _decode_done(self, _future: cf.Future) -> None:
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._busy.clear()

    def _attempt(self, outer: cf.Future, lane: str, args: tuple, start: float,
                 tries_left: int) -> None:
        """Submit ``args`` to the lane's pool; ``outer`` settles when it is decoded or failed.

        ``start``: ``time.perf_counter()`` of the first submission (seconds).
        """
        pool = None
        try:
            pool = self._pool(lane)
            fut = pool.submit(_worker_decode, *args)
        except DecodeFailed as e:
            outer.set_exception(e)
            return
        except (BrokenProcessPool, RuntimeError):
            # A broken pool, or one shut down under us by a rebuild.
            if pool is not None:
                self._rebuild(lane, pool)
            if tries_left > 0 and not self._closed:
                self._attempt(outer, lane, args, start, tries_left - 1)
            else:
                outer.set_exception(DecodeFailed(
                    f"a decode worker process died and {DECODE_RETRIES} retries failed too"))
            return
        fut.add_done_callback(functools.partial(self._settle, outer, lane, pool, args, start,
                                                tries_left))

    def _settle(self, outer: cf.Future, lane: str, pool: cf.ProcessPoolExecutor, args: tuple,
                start: float, tries_left: int, f: cf.Future) -> None:
        """Done-callback of a pool's future: pass the result on, or retry after a worker death."""
        # A cancelled future (its pool shut down by a rebuild or by close)
        # must still settle ``outer``: f.exception() would raise.
        exc = BrokenProcessPool("cancelled") if f.cancelled() else f.exception()
        if exc is None:
            with self._lock:
                self._decodes += 1
                self._decode_seconds += time.perf_counter() - start
            outer.set_result(f.result())
        elif isinstance(exc, BrokenProcessPool):
            # This callback runs on the broken pool's own manager thread:
            # shutting that pool down (it writes the manager's wake-up pipe) or
            # re-submitting from here can deadlock it, so the rebuild and the
            # retry run on a helper thread.
            threading.Thread(target=self._retry, args=(outer, lane, pool, args, start, tries_left),
                             name="decode-retry", daemon=True).start()
        else:
            outer.set_exception(DecodeFailed(f"decoding failed: {exc}"))

    def _retry(self, outer: cf.Future, lane: str, pool: cf.ProcessPoolExecutor, args: tuple,
               start: float, tries_left: int) -> None:
        try:
            self._rebuild(lane, pool)
            if tries_left > 0 and not self._closed:
                self._attempt(outer, lane, args, start, tries_left - 1)
            elif self._closed:
                outer.set_exception(DecodeFailed("the server is shutting down"))
            else:
                outer.set_exception(DecodeFailed(
                    "a decode worker process died while decoding this "
                    f"window, and again on {DECODE_RETRIES} retries"))
        except BaseException as e:  # noqa: BLE001
            if not outer.done():
                outer.set_exception(DecodeFailed(f"decoding failed: {e}"))

    def _watch_pools(self) -> None:
        """Fail over a pool wedged by a dead worker (checked every ``WATCHDOG_S``).

        Seen under repeated SIGKILLs of workers (Python 3.11): a worker killed
        while sending its result leaves the pool's manager thread blocked in
        ``recv`` for the rest of the message; it never reports the pool
        broken, so its decodes -- and every read waiting on them -- hung.
        The sign is a worker the pool still lists though it has exited, on
        two checks in a row (:func:`_dead_workers`). A pool with no worker
        yet is no sign: its workers are still starting (the forkserver's
        first start imports numpy and mef3io, which takes seconds on a busy
        machine; giving such a pool up failed the server's start and leaked
        the worker that started afterwards). A wedged pool is rebuilt, its
        unfinished decodes are failed as a worker death (which retries them
        on the new pool), and it is ended (see :meth:`_end_pool`). While no
        decode is outstanding the watchdog sleeps (no wakeups on an idle server).
        """
        suspects: dict[int, frozenset] = {}     # id(pool) -> dead pids seen last check
        while not self._closed:
            # A pool wedges only the decodes sent to it: with none outstanding
            # there is nothing to watch, and this thread sleeps until one is.
            self._busy.wait()
            time.sleep(WATCHDOG_S)
            with self._lock:
                pools = list(self._pools.items())
            seen: dict[int, frozenset] = {}
            for lane, pool in pools:
                dead = _dead_workers(pool)
                if dead & suspects.get(id(pool), frozenset()):
                    self._give_up(lane, pool)
                elif dead:
                    seen[id(pool)] = dead
            suspects = seen
            # Hold no pool between checks: a given-up pool must be freed.
            pools = pool = None

    def _give_up(self, lane: str, pool: cf.ProcessPoolExecutor) -> None:
        """Rebuild ``lane`` without ``pool``, fail its unfinished decodes (to be
        retried), and end it (a method, so nothing of it outlives the call)."""
        log.warning("the %s decode pool is wedged by a dead worker; rebuilding", lane)
        self.wedged += 1
        # Taken before the rebuild: shutdown() drops the pool's references.
        parts = _PoolParts.of(pool)
        items = getattr(pool, "_pending_work_items", None)
        self._rebuild(lane, pool)
        # Fail the unfinished decodes, taking them out of the pool's own table
        # (the manager thread fails whatever is left there once it is
        # released, and a future cannot be failed twice).
        for work_id in list(items or ()):
            item = items.pop(work_id, None)
            try:
                if item is not None and not item.future.done():
                    item.future.set_exception(BrokenProcessPool("its decode worker died"))
            except Exception:  # noqa: BLE001 - finished meanwhile
                pass
        self._end_pool(parts, time.monotonic() + self.RELEASE_TIMEOUT_S, grace_s=0.0)

    def _end_pool(self, parts: _PoolParts, deadline: float, grace_s: float) -> None:
        """End a pool already shut down: no worker and no manager thread of it is left.

        Its workers get ``grace_s`` seconds to finish what they hold and exit
        (the manager sends them a sentinel once the pool's work is done);
        those still running then are killed. A manager blocked reading the
        rest of a result a killed worker never finished cannot see
        end-of-file, because this process holds a write end of the result
        pipe too: closing ours makes the read fail, and the manager then takes
        the pool's own broken-pool path (fails what is left, closes its pipes)
        and exits. Waits until ``deadline`` (``time.monotonic()``); a manager
        still blocked then is counted in :attr:`stuck`.
        """
        exit_by = min(deadline, time.monotonic() + grace_s)
        for proc in list(parts.processes.values()):
            try:
                proc.join(max(0.0, exit_by - time.monotonic()))
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - already reaped
                pass
        manager = parts.manager
        if manager is None or manager is threading.current_thread():
            return
        manager.join(min(0.5, max(0.0, deadline - time.monotonic())))
        if manager.is_alive():
            writer = getattr(parts.results, "_writer", None)
            if writer is not None:
                try:
                    writer.close()
                except OSError:
                    pass
            manager.join(max(0.0, deadline - time.monotonic()))
        if manager.is_alive():
            log.warning("a decode pool's manager thread did not end; it stays until the "
                        "server exits")
            with self._lock:
                self._stuck.append(manager)

    @property
    def stuck(self) -> int:
        """Manager threads of ended pools still blocked (Python joins them at exit)."""
        with self._lock:
            self._stuck = [t for t in self._stuck if t.is_alive()]
            return len(self._stuck)

    def worker_pids(self) -> list[int]:
        with self._lock:
            pools = list(self._pools.values())
        pids = []
        for p in pools:
            procs = getattr(p, "_processes", None) or {}
            pids.extend(procs.keys())
        return pids

    def close(self) -> None:
        """Stop decoding: unfinished decodes fail ("shutting down"); when this returns no
        worker process of this decoder is left (each gets ``CLOSE_GRACE_S`` seconds)."""
        with self._lock:
            self._closed = True
            self._busy.set()            # the watchdog wakes and ends
            pools = list(self._pools.values())
            self._pools.clear()
        parts = [_PoolParts.of(p) for p in pools]
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self.CLOSE_GRACE_S + self.RELEASE_TIMEOUT_S
        for part in parts:
            self._end_pool(part, deadline, grace_s=self.CLOSE_GRACE_S)

    def stats(self) -> dict:
        with self._lock:
            return {"decodes": self._decodes, "decode_seconds": self._decode_seconds,
                    "worker_restarts": self._restarts}


def stop_worker_helpers() -> None:
    """Stop multiprocessing's forkserver and resource tracker now, after
    :meth:`ProcessDecoder.close`, so that no child outlives a server's drain (best effort).

    The tracker unlinks whatever semaphores are still registered with it when it
    stops; the pools' queues unlink their own when they are freed, and a
    semaphore unlinked twice printed ``FileNotFoundError`` tracebacks (and a
    restarted tracker a ``KeyError``) at every shutdown. So the ended pools are
    collected first, and the tracker is stopped only when no semaphore is left
    in this process; otherwise it ends by itself once this process exits.
    """
    import gc
    from multiprocessing import forkserver, resource_tracker, synchronize, util

    gc.collect()
    helpers = [getattr(forkserver, "_forkserver", None)]
    registry = getattr(util, "_finalizer_registry", {})
    if not any(getattr(f, "_callback", None) is synchronize.SemLock._cleanup
               for f in list(registry.values())):
        helpers.append(getattr(resource_tracker, "_resource_tracker", None))
    for helper in helpers:
        try:
            helper._stop()
        except Exception:  # noqa: BLE001 - not running, or a Python without _stop
            log.debug("could not stop a multiprocessing helper", exc_info=True)


