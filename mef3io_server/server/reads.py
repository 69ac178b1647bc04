"""Reads: a request checked once, then streamed as timed chunks.

The checks every read shares (the window, the channel limit, the served
rate, ``dtype`` and ``n_points``) are here, each written once. A checked read
is a :class:`SignalRead`: its metadata and an iterator of ``(start_uutc,
end_uutc, j0, rows)`` chunks. :class:`ValueReads` builds the two plain kinds:
float32 values from the tile store, and the stored int32 samples decoded
chunk by chunk. ``n_points`` reads are :mod:`.points`.

Units: times uUTC (int), rates Hz (float), sizes bytes; windows half-open.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .decode import DTYPES, RAW_GAP, Decoder
from .errors import BadRequest, Cancelled, ResourceLimit, ServerError
from .recordings import ChannelInfo, Recording
from .tile_store import TileStore
from .versions import Versions

log = logging.getLogger("mef3io_server.engine")


@dataclass
class FileInfo:
    """What OpenFile / FileInfo answer (per-channel lists are parallel)."""

    client_path: str
    channel_names: list[str]
    sampling_rates: list[float]
    served_rates: list[float]
    channel_start_uutc: list[int]
    channel_end_uutc: list[int]
    units: list[str]
    start_uutc: int
    end_uutc: int
    cache_fs: Optional[float]
    encrypted: bool
    access_level: str
    units_factors: list[float] = field(default_factory=list)   # value = stored count x factor
    descriptions: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_uutc - self.start_uutc) / 1e6


@dataclass
class SignalRead:
    """A validated read, ready to stream: metadata plus a chunk iterator.

    ``chunks`` yields ``(start_uutc, end_uutc, j0, rows)`` with ``rows`` a
    ``(n_channels, n)`` array of ``dtype`` (float32 values, or int32 stored
    samples); the chunks join along time to the whole window.
    """

    client_path: str
    channel_names: list[str]
    fs: float
    n_samples: int
    start_uutc: int
    end_uutc: int
    chunks: Iterator[tuple[int, int, int, np.ndarray]]
    dtype: str = "float32"
    #: The chunks are read-only slices of a window other readers share (so their
    #: encoding may be shared too); else each chunk is this read's own array.
    shared: bool = False


class ReadCounters:
    """Reads started, reads cancelled (the client went away before the end), and
    bytes of samples served, since start."""

    def __init__(self):
        self.reads = 0
        self.reads_cancelled = 0
        self.bytes_served = 0
        self._lock = threading.Lock()

    def read_started(self) -> None:
        with self._lock:
            self.reads += 1

    def read_cancelled(self) -> None:
        with self._lock:
            self.reads_cancelled += 1

    def counted(self, it: Iterator) -> Iterator:
        """``it``, counting a read cancelled when it ends early because the client
        went away (closed, or :class:`.errors.Cancelled`), not when it fails."""
        try:
            yield from it
        except (GeneratorExit, Cancelled):
            self.read_cancelled()
            raise

    def served(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_served += nbytes


# ------------------------------------------------------------ checks (each once)

def check_order(t0: Optional[int], t1: Optional[int], explain: bool = True) -> None:
    """Refuse an empty or inverted window (either end may be open: None)."""
    if t0 is not None and t1 is not None and t1 <= t0:
        raise BadRequest(f"empty or inverted window: start_uutc={t0} is not before "
                         f"end_uutc={t1}" + (" (windows are half-open [start, end))"
                                             if explain else ""))


def check_window(t0, t1) -> None:
    """Both ends whole microseconds, and the window not empty or inverted."""
    for name, v in (("start_uutc", t0), ("end_uutc", t1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise BadRequest(f"{name} must be an integer number of microseconds")
    check_order(t0, t1)


def check_channel_count(n: int, limit: int, what: str = "read") -> None:
    """At most ``MAX_CHANNELS_PER_READ`` channels in one ``what``."""
    if n > limit:
        raise ResourceLimit(f"{n} channels in one {what}; the limit is {limit} "
                            "(MAX_CHANNELS_PER_READ)")


def check_kind(dtype: str, n_points) -> None:
    """A known ``dtype``, and ``n_points`` (when given) a whole number >= 1 of float32."""
    if dtype not in DTYPES:
        raise BadRequest(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype != "float32" and n_points is not None:
        raise BadRequest(f"dtype={dtype} serves stored samples and cannot be combined "
                         "with n_points (a reduction of values); ask for float32")
    if n_points is not None:
        if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)):
            raise BadRequest(f"n_points must be a whole number of points, not {n_points!r}")
        if n_points < 1:
            raise BadRequest(f"n_points must be at least 1 (points per channel), "
                             f"not {n_points}")


def served_rates(chans: Sequence[ChannelInfo], cache_fs: Optional[float]) -> list[float]:
    """Rate (Hz) each channel is served at: its own, or ``cache_fs`` when lower."""
    if cache_fs is None:
        return [c.fs for c in chans]
    return [min(c.fs, cache_fs) for c in chans]


def one_rate(chans: Sequence[ChannelInfo], cache_fs: Optional[float]) -> float:
    """The one rate the channels of a read are served at (refused when they differ)."""
    served = served_rates(chans, cache_fs)
    distinct = sorted(set(served))
    if len(distinct) > 1:
        by_rate: dict[float, list[str]] = {}
        for c, r in zip(chans, served):
            by_rate.setdefault(r, []).append(c.name)
        desc = "; ".join(f"{r:g} Hz: {', '.join(n[:5])}{' ...' if len(n) > 5 else ''}"
                         for r, n in by_rate.items())
        raise BadRequest("the channels of one read must share a sampling rate, but these "
                         f"differ ({desc}); read each rate separately")
    return distinct[0]


def window_samples(t0: int, t1: int, fs: float) -> int:
    """Samples of ``[t0, t1)`` at ``fs`` Hz; refused when none."""
    n = tg.samples_in_window(t0, t1, fs)
    if n <= 0:
        raise BadRequest(f"the window [{t0}, {t1}) is shorter than half a sample at "
                         f"{fs:g} Hz and holds no samples")
    return n


def samples_per_chunk(n_channels: int, fs: float, chunk_bytes: int) -> int:
    """Samples per streamed chunk: at most ``CHUNK_BYTES`` of 4-byte samples, a
    whole number of the rate's exact periods when that fits."""
    per = tg.chunk_samples(n_channels, chunk_bytes,
                           multiple_of=tg.exact_period_samples(fs) or 1)
    if per * n_channels * 4 > chunk_bytes and per > 1:
        per = max(1, chunk_bytes // (n_channels * 4))
    return per


# ------------------------------------------------------------ values and stored samples

class ValueReads:
    """Float32 reads from the tile store, and int32 reads of the stored samples."""

    def __init__(self, store: TileStore, decoder: Decoder, versions: Versions,
                 counters: ReadCounters, chunk_bytes: int, max_read_bytes: int):
        self.store = store
        self.decoder = decoder
        self.versions = versions
        self.counters = counters
        self.chunk_bytes = chunk_bytes
        self.max_read_bytes = max_read_bytes

    def values(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, n: int,
               t0: int, t1: int, client_path: str, cancel=None) -> SignalRead:
        """``n`` float32 samples of ``chans`` over ``[t0, t1)`` at ``fs`` Hz, streamed.
        ``cancel``: the read's cancel token (:func:`.decode.cancel_token`)."""
        per = samples_per_chunk(len(chans), fs, self.chunk_bytes)
        counters = self.counters
        counters.read_started()

        def chunks():
            for j0, j1, rows in self.store.read_chunks(rec, chans, fs, t0, t1, per,
                                                       cancel=cancel):
                a, b = tg.chunk_span(t0, t1, fs, n, j0, j1)
                counters.served(rows.nbytes)
                yield a, b, j0, rows
            # Planned once gRPC asks for the message after the last, i.e. once the
            # last chunk is sent: planning and decoding the next windows would
            # otherwise compete with encoding and sending it (docs/benchmarks.md).
            self.prefetch(rec, chans, fs, t0, t1)

        return SignalRead(client_path, [c.name for c in chans], fs, n, t0, t1,
                          self.versions.tracked(rec, counters.counted(chunks())),
                          shared=self.store.shares(n, len(chans)))

    def prefetch(self, rec, chans, fs, t0, t1) -> None:
        try:
            self.store.prefetch_later(rec, chans, fs, t0, t1)   # planned off this thread
        except Exception:  # noqa: BLE001 - best effort
            log.debug("prefetch failed", exc_info=True)

    def stored(self, rec: Recording, chans: Sequence[ChannelInfo], fs: float, n: int,
               t0: int, t1: int, dtype: str, client_path: str, cancel=None) -> SignalRead:
        """A read of the stored samples (``dtype="int32"``), decoded chunk by chunk.

        Each chunk is one raw read through the decoder (nothing cached: the
        tiles hold values), on the window's grid as a float32 read, with
        :data:`.decode.RAW_GAP` where a channel has no data. Only at the
        channels' recorded rate (a session opened with a lower ``cache_fs``
        serves values, not samples).
        """
        names = [c.name for c in chans]
        slow = [c.name for c in chans if c.fs != fs]
        if slow:
            raise BadRequest(f"dtype={dtype} serves the stored samples at the recorded rate, "
                             f"but this session serves {', '.join(slow[:5])} at {fs:g} Hz "
                             "(cache_fs); open the file without cache_fs to read samples")
        nbytes = n * len(chans) * 4
        if nbytes > self.max_read_bytes:
            raise ResourceLimit(
                f"the window holds {n} samples x {len(chans)} channels = "
                f"{nbytes / 2**20:.0f} MB of {dtype}, over the server's limit of "
                f"{self.max_read_bytes / 2**20:.0f} MB (MAX_READ_MB); read it in parts")
        per = samples_per_chunk(len(chans), fs, self.chunk_bytes)
        lo = min(c.start_uutc for c in chans)
        hi = max(c.end_uutc for c in chans)
        counters = self.counters
        counters.read_started()

        def chunks():
            for j0, j1 in tg.chunk_bounds(n, per):
                a, b = tg.chunk_span(t0, t1, fs, n, j0, j1)
                if b <= lo or a >= hi:          # outside every channel: nothing to decode
                    rows = np.full((len(names), j1 - j0), RAW_GAP, dtype=np.int32)
                else:
                    rows = self.decoder.decode(rec.source, names, a, b, dtype=dtype,
                                               cancel=cancel)
                if rows.shape != (len(names), j1 - j0):
                    raise ServerError(f"reading the stored samples of {client_path} [{a}, {b}) "
                                      f"gave {rows.shape[1]} samples, not {j1 - j0}")
                counters.served(rows.nbytes)
                yield a, b, j0, rows

        return SignalRead(client_path, names, fs, n, t0, t1,
                          self.versions.tracked(rec, counters.counted(chunks())), dtype=dtype)
