"""Decode: the one place that calls mef3io to turn a window into samples (a package).

Two interchangeable implementations sit behind :class:`Decoder`:

* :class:`ThreadDecoder` (default) decodes in threads of the server process.
  mef3io releases the GIL and decodes a multi-channel read on its own thread
  pool, and the result never crosses a pipe.
* :class:`ProcessDecoder` (``USE_PROCESS_POOL=true``) decodes in worker
  processes, each holding its own mef3io reader per file, as the published
  server does. A worker that dies (killed, crashed) breaks only its pool: the
  pool is rebuilt and the decode retried (``DECODE_RETRIES`` times: one kill
  fails every decode queued on that pool, and a second may hit the retry),
  then failed with a clear error.

Both have two lanes: ``"fg"`` for reads a client is waiting on and ``"bg"`` for
prefetch, with separate workers, so prefetch can never starve a foreground read.
In the thread decoder a background decode also waits to start until no
foreground decode runs (:mod:`.demand_gate`), so prefetch uses idle cores
instead of competing for busy ones.
Every decode returns a ``float32`` array of shape ``(len(channels), n)`` with
``n = round_half_up((t1 - t0) * fs / 1e6)``, exactly
``mef3io.Reader.read(channels, t0, t1, dtype="float32")``; with
``dtype="int32"``, the stored sample values on the same grid instead (see
:func:`read_window`).
"""
from __future__ import annotations

from typing import Callable

from .base import (DTYPES, LANES, RAW_GAP, Decoder, Source, cancel_token, load_mef3io,
                   open_reader, read_window)
from .processes import DECODE_RETRIES, WATCHDOG_S, ProcessDecoder, stop_worker_helpers
from .threads import ThreadDecoder

__all__ = ["DTYPES", "LANES", "RAW_GAP", "Decoder", "Source", "cancel_token", "load_mef3io",
           "open_reader", "read_window",
           "DECODE_RETRIES", "WATCHDOG_S", "ProcessDecoder", "stop_worker_helpers",
           "ThreadDecoder", "make_decoder"]


def make_decoder(settings, reader_for: Callable[[Source], object]) -> Decoder:
    """The decoder the settings ask for (``USE_PROCESS_POOL``)."""
    if settings.use_process_pool:
        return ProcessDecoder(settings.effective_reader_processes,
                              settings.effective_prefetch_processes, settings.decode_threads)
    return ThreadDecoder(settings.effective_reader_processes,
                         settings.effective_prefetch_processes, reader_for)
