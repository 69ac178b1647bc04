"""Decode on threads of the server process (the default).

mef3io releases the GIL and decodes a multi-channel read on its own thread
pool, and the result never crosses a pipe. A background decode waits to
start until no foreground decode runs (:mod:`.demand_gate`), so prefetch uses
idle cores instead of competing for busy ones.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from typing import Callable

from ..errors import Cancelled, DecodeFailed
from .base import Decoder, Source, read_window
from .demand_gate import DemandGate


class ThreadDecoder(Decoder):
    """Decode on threads of this process, one shared mef3io reader per recording.

    ``readers`` maps a :class:`Source` to an open reader; the recordings module
    registers each reader it opens, so the thread decoder reuses it.
    """

    kind = "threads"

    def __init__(self, fg_workers: int, bg_workers: int,
                 reader_for: Callable[[Source], object]):
        self._reader_for = reader_for
        # Background decodes start when no foreground decode runs (see demand_gate).
        self.gate = DemandGate()
        self._pools = {
            "fg": cf.ThreadPoolExecutor(max(1, fg_workers), thread_name_prefix="decode-fg"),
            "bg": cf.ThreadPoolExecutor(max(1, bg_workers), thread_name_prefix="decode-bg"),
        }
        self._decodes = 0
        self._decode_seconds = 0.0
        self._lock = threading.Lock()

    def _run(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        if lane == "bg":
            self.gate.wait_turn()
        if cancel is not None and cancel.cancelled:
            raise Cancelled("the read was cancelled")
        with self.gate.demand() if lane == "fg" else contextlib.nullcontext():
            start = time.perf_counter()
            out = read_window(self._reader_for(source), channels, t0, t1, dtype, cancel)
        with self._lock:
            self._decodes += 1
            self._decode_seconds += time.perf_counter() - start
        return out

    def submit(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        return self._pools[lane].submit(self._run, source, tuple(channels), t0, t1, lane, dtype,
                                        cancel)

    def urgent(self):
        return self.gate.urgent()

    def foreground_decodes(self) -> int:
        return self.gate.demand_count

    def decode(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        # The caller's thread is already a worker of the gRPC pool: decoding
        # here saves a hand-off; mef3io spreads one read over its own threads.
        try:
            return self._run(source, tuple(channels), t0, t1, lane, dtype, cancel)
        except (DecodeFailed, Cancelled):
            raise
        except Exception as e:  # noqa: BLE001 - mef3io raises many kinds
            raise DecodeFailed(f"decoding failed: {e}") from e

    def close(self) -> None:
        self.gate.close()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict:
        with self._lock:
            return {"decodes": self._decodes, "decode_seconds": self._decode_seconds,
                    "worker_restarts": 0, "prefetch_waits": self.gate.waits,
                    "prefetch_waited_seconds": self.gate.waited_s}


