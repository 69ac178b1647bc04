"""The threads that run gRPC calls, so that no caller can hold everyone else's.

A synchronous gRPC server runs each call on a thread of a pool, and a
streaming call holds its thread until its last message is sent: a client that
stops reading, or a flood of slow calls, would otherwise take every thread of
one shared pool. So calls are run by kind and by caller:

* **Health** (``grpc.health.v1.Health``): two threads of their own. ``Check``
  is answered at once; ``Watch`` streams are non-blocking (they hold no
  thread while they wait for a change), however many are open.
* **Refused** calls (no accepted token): two threads of their own; they are
  refused at once, and cannot delay anyone who has a token.
* Per **identity** (:mod:`.callers`; one for the whole server without tokens):
  ``MAX_WORKERS`` threads for streaming calls (reads, envelopes, listings,
  records, segments), and ``MAX_WORKERS // 4`` (at least 2) for the small
  unary calls (open, info, close, list open files), so an identity's streams
  never delay its small calls, and one identity's calls queue behind its own,
  never behind another's.

Pools are made when an identity first calls and kept (identities are the
token file's names, a short list; past :data:`MAX_IDENTITY_POOLS` new ones
share one overflow set).

:class:`StallWatchdog`: a streaming call whose client has not taken the
message handed to it for ``STREAM_STALL_TIMEOUT_S`` is cancelled, which frees
its thread (gRPC would otherwise wait for that client for ever).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

log = logging.getLogger("mef3io_server.workers")

#: Identities with pools of their own; later ones share the overflow pools.
MAX_IDENTITY_POOLS = 256
OVERFLOW = "\x00overflow"


class WorkerPools:
    """Thread pools by kind of call and identity (see module docstring)."""

    HEALTH_WORKERS = 2
    REFUSED_WORKERS = 2

    def __init__(self, stream_workers: int):
        self.stream_workers = max(1, stream_workers)
        self.call_workers = max(2, stream_workers // 4)
        self._lock = threading.Lock()
        self._closed = False
        self.health = ThreadPoolExecutor(self.HEALTH_WORKERS, thread_name_prefix="grpc-health")
        self.refused = ThreadPoolExecutor(self.REFUSED_WORKERS,
                                          thread_name_prefix="grpc-refused")
        self._by_identity: dict[str, tuple[ThreadPoolExecutor, ThreadPoolExecutor]] = {}

    def for_call(self, identity: str, streaming: bool) -> ThreadPoolExecutor:
        """The pool that runs a call of ``identity`` (streaming or not)."""
        pools = self._by_identity.get(identity)
        if pools is None:
            with self._lock:
                pools = self._by_identity.get(identity)
                if pools is None:
                    if len(self._by_identity) >= MAX_IDENTITY_POOLS:
                        identity = OVERFLOW
                        pools = self._by_identity.get(identity)
                    if pools is None:
                        n = len(self._by_identity)
                        pools = (ThreadPoolExecutor(self.stream_workers,
                                                    thread_name_prefix=f"grpc-{n}-stream"),
                                 ThreadPoolExecutor(self.call_workers,
                                                    thread_name_prefix=f"grpc-{n}-call"))
                        self._by_identity[identity] = pools
        return pools[0] if streaming else pools[1]

    def close(self, wait: bool = False) -> None:
        """Stop every pool (queued calls are dropped; running ones finish)."""
        with self._lock:
            pools = [self.health, self.refused] + [p for pair in self._by_identity.values()
                                                   for p in pair]
        for p in pools:
            p.shutdown(wait=wait, cancel_futures=True)


class StallWatchdog:
    """Cancels streaming calls whose client stopped taking messages.

    The call observer reports each message it hands to gRPC (:meth:`handed`)
    and each time gRPC asks for the next one, i.e. the previous one was sent
    (:meth:`taken`). A message not taken within ``timeout_s`` seconds means
    the client stopped reading: ``cancel()`` is called (the call's
    ``context.cancel``), and ``on_stall`` is told.
    """

    def __init__(self, timeout_s: Optional[float],
                 on_stall: Callable[[object], None] = lambda key: None):
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self.stalled = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, object, Callable[[], None]]] = {}
        # Set when a message is handed while none was waiting, and on close:
        # the thread sleeps without a timeout while no message waits.
        self._work = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if timeout_s:
            self._thread = threading.Thread(target=self._run, name="stall-watchdog",
                                            daemon=True)
            self._thread.start()

    def handed(self, key: object, cancel: Callable[[], None]) -> None:
        """A message of call ``key`` was handed to gRPC now."""
        if self.timeout_s:
            with self._lock:
                first = not self._waiting
                self._waiting[id(key)] = (time.monotonic(), key, cancel)
            if first:
                self._work.set()

    def taken(self, key: object) -> None:
        """gRPC sent call ``key``'s message (or the call ended)."""
        if self.timeout_s:
            with self._lock:
                self._waiting.pop(id(key), None)

    def check(self, now: Optional[float] = None) -> int:
        """Cancel the calls stalled longer than the timeout; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [(k, v) for k, v in self._waiting.items() if now - v[0] > self.timeout_s]
            for k, _ in late:
                del self._waiting[k]
        for _, (_, key, cancel) in late:
            self.stalled += 1
            try:
                self.on_stall(key)
                cancel()
            except Exception:  # noqa: BLE001 - the watchdog must never die
                log.exception("cancelling a stalled call failed")
        return len(late)

    def _run(self) -> None:
        """Check every ``min(1 s, timeout/4)`` while messages wait; while none
        waits, sleep until one is handed (no wakeups on an idle server)."""
        interval = min(1.0, self.timeout_s / 4)
        while not self._stop.is_set():
            with self._lock:
                idle = not self._waiting
                if idle:
                    self._work.clear()
            if idle:
                self._work.wait()
                continue
            if self._stop.wait(interval):
                return
            self.check()

    def close(self) -> None:
        self._stop.set()
        self._work.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
