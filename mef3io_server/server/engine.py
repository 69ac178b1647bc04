"""The engine: the server's core, with no network in it.

It wires the pieces of the data path together -- paths -> sessions ->
recordings -> tile store (grid, cache, decode) -- and offers one method per
thing a client can ask. The gRPC service (:mod:`.service`) only translates
messages to these calls and back; tests and other front ends can use the
engine directly.

Units: times uUTC (int), rates Hz (float), sizes bytes. Windows are
half-open ``[t0, t1)``.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from . import tile_grid as tg
from .annotations import read_annotations
from .callers import Caller, as_caller
from .config import Settings
from .decode import DTYPES, RAW_GAP, Decoder, Source, make_decoder
from .derived_reads import DerivedReader, DerivedSpec
from .discovery import SessionIndex, WalkCancelled, find_sessions
from .errors import (BadRequest, NotOpen, PasswordRequired, RecordingNotFound, ResourceLimit,
                     ServerError, ShuttingDown)
from .password_throttle import PasswordThrottle
from .paths import PathResolver
from .pinning import Pinner
from .recordings import ChannelInfo, Recording
from .segments import channel_runs
from .memory_budget import MemoryBudget
from .reduction import STATE_BYTES_PER_POINT, PointReducer
from .sessions import Session, SessionRegistry
from .tile_cache import TileCache
from .tile_store import TileStore

log = logging.getLogger("mef3io_server.engine")

INT64_MAX = 2**63 - 1


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


@dataclass
class EngineCounters:
    reads: int = 0
    bytes_served: int = 0


class Engine:
    """The core of mef3io-server (see module docstring)."""

    def __init__(self, settings: Settings, *, decoder: Optional[Decoder] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self.paths = PathResolver(settings.host_root, settings.data_roots)
        # With DATA_ROOTS, recordings are opened through pinned views (see .pinning).
        self.pinner = Pinner(self.paths.within_roots) if settings.data_roots else None
        self.cache = TileCache(settings.tile_cache_bytes, settings.cache_ttl_s)
        self.decoder = decoder or make_decoder(settings, self._reader_for)
        self.store = TileStore(self.cache, self.decoder,
                               min_parallel_tiles=settings.min_parallel_tiles,
                               prefetch_ahead=settings.prefetch_ahead_windows,
                               prefetch_behind=settings.prefetch_behind_windows,
                               max_read_bytes=settings.max_read_bytes)
        self.sessions = SessionRegistry(self._open_recording, self._recording_closed,
                                        session_ttl_s=settings.session_ttl_s,
                                        max_sessions=settings.max_sessions, clock=clock)
        self.counters = EngineCounters()
        self.derived = DerivedReader(self)
        self.passwords = PasswordThrottle(clock)
        self.points_memory = MemoryBudget(settings.points_memory_bytes, "POINTS_MEMORY_MB")
        self._generation = 0
        self._gen_lock = threading.RLock()   # re-entrant: _TrackedChunks may finalize under it
        # Weak: a recording opened only to check a password, or refused after
        # opening (cache_fs), is closed and dropped without being unregistered.
        self._readers: "weakref.WeakValueDictionary[tuple[str, int], Recording]" = \
            weakref.WeakValueDictionary()
        self._refresh_locks: dict[str, threading.Lock] = {}
        self._walk_locks: dict[str, threading.Lock] = {}    # identity -> its one walk
        self._stop = threading.Event()
        self._draining = False
        self._sweeper: Optional[threading.Thread] = None
        self._retired: list[Recording] = []    # superseded versions still being read
        self._refresher: Optional[threading.Thread] = None

    # ------------------------------------------------------------ plumbing

    def _next_generation(self) -> int:
        with self._gen_lock:
            self._generation += 1
            return self._generation

    def _open_recording(self, path: str, password: str, *, cache_epoch=None) -> Recording:
        s = self.settings
        rec = Recording(path, password, generation=self._next_generation(),
                        cache_epoch=cache_epoch, decode_threads=s.decode_threads,
                        tile_duration_s=s.tile_duration_s,
                        respect_mef_blocks=s.respect_mef_blocks, pinner=self.pinner)
        if s.decode_threads == 0 and self.decoder.kind == "threads" \
                and self.store.split_ways > 1:
            # Automatic: the tile store already runs one mef3io read per core
            # (split_channels); more threads inside each read only add CPU
            # (measured: 27 ms instead of 35 ms of CPU per 64 ch x 10 s tile,
            # docs/benchmarks.md). The open itself used mef3io's automatic count.
            rec.reader.n_threads = 1
        rec.last_checked = self._clock()
        with self._gen_lock:
            self._readers[(rec.source.path, rec.generation)] = rec
        return rec

    def _reader_for(self, source: Source):
        """The thread decoder's reader lookup: the open recording's shared reader."""
        rec = self._readers.get((source.path, source.generation))
        if rec is None or rec.closed:
            raise NotOpen(f"{source.path} was closed while it was being read")
        return rec.reader

    def _recording_closed(self, rec: Recording) -> None:
        with self._gen_lock:
            if self._readers.get((rec.source.path, rec.generation)) is rec:
                del self._readers[(rec.source.path, rec.generation)]
        rec.close()
        self.store.forget(rec)
        self.decoder.forget(rec.source)

    def start(self) -> None:
        """Start the background sweeper (cache TTL, session TTL) and warm the decoder."""
        self.decoder.warm_up()
        ttls = [t for t in (self.settings.cache_ttl_s, self.settings.session_ttl_s) if t]
        interval = max(0.05, min([5.0] + [t / 4 for t in ttls]))
        self._sweeper = threading.Thread(target=self._sweep_loop, args=(interval,),
                                         name="sweeper", daemon=True)
        self._sweeper.start()
        if self.settings.refresh_interval_s > 0:
            self._refresher = threading.Thread(target=self._refresh_loop, name="refresher",
                                               daemon=True)
            self._refresher.start()

    def _sweep_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sweep()

    def sweep(self) -> tuple[int, int]:
        """Apply ``CACHE_TTL_S`` and ``SESSION_TTL_S`` now; returns (tiles, sessions) dropped."""
        tiles = sessions = 0
        try:
            tiles = self.cache.evict_expired()
            sessions = self.sessions.expire()
        except Exception:  # noqa: BLE001 - the sweeper must never die
            log.exception("sweep failed")
        return tiles, sessions

    def begin_drain(self) -> None:
        """Refuse new work from now on (in-flight streams continue)."""
        self._draining = True

    def close(self) -> None:
        """Stop the sweeper, close every recording and the decode workers."""
        self._draining = True
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        self.store.close()
        self.derived.close()
        self.sessions.close_all()
        self.decoder.close()
        if self.pinner is not None:
            self.pinner.close()

    def _check_open_for_work(self) -> None:
        if self._draining:
            raise ShuttingDown("the server is shutting down and takes no new requests")

    # ------------------------------------------------------------ files

    @staticmethod
    def _served_rates_of(chans: Sequence[ChannelInfo], cache_fs: Optional[float]) -> list[float]:
        """Rate (Hz) each channel is served at: its own, or ``cache_fs`` when lower."""
        if cache_fs is None:
            return [c.fs for c in chans]
        return [min(c.fs, cache_fs) for c in chans]

    def _validate_cache_fs(self, cache_fs: Optional[float], allow_mixed: bool):
        if cache_fs is None:
            return None
        if not isinstance(cache_fs, (int, float)) or not math.isfinite(cache_fs) or cache_fs <= 0:
            raise BadRequest(f"cache_fs must be a positive, finite rate in Hz, not {cache_fs!r}")

        def check(rec: Recording):
            below = [c for c in rec.channels if c.fs < cache_fs]
            if below and not allow_mixed:
                names = ", ".join(f"{c.name} ({c.fs:g} Hz)" for c in below[:10])
                more = f" and {len(below) - 10} more" if len(below) > 10 else ""
                raise BadRequest(
                    f"cache_fs={cache_fs:g} Hz is above the recorded rate of {names}{more}; "
                    "open with allow_mixed_rates to serve those channels at their own rate")
        return check

    def open_file(self, client_id, client_path: str, *, cache_fs: Optional[float] = None,
                  allow_mixed_rates: bool = False, password: str = "",
                  protected: bool = False) -> FileInfo:
        """Open (or refresh) the caller's session on a file; returns its metadata.

        ``client_id``: the :class:`~.callers.Caller` (or a bare client id).
        ``protected``: a session of the server's own, never pushed out by
        ``MAX_SESSIONS`` (the recording preloaded at start-up). Wrong passwords
        are counted and slowed (:mod:`.password_throttle`).
        """
        self._check_open_for_work()
        caller = as_caller(client_id)
        path = self.paths.resolve_session(client_path)
        check = self._validate_cache_fs(cache_fs, allow_mixed_rates)
        if password:
            self.passwords.check(caller, path, client_path)
        try:
            session, rec = self.sessions.open(caller, path, client_path, password=password,
                                              cache_fs=cache_fs,
                                              allow_mixed_rates=allow_mixed_rates,
                                              validate=check, protected=protected)
        except PasswordRequired:
            if password:
                self.passwords.failed(caller, path, client_path)
            raise
        if password:
            self.passwords.succeeded(caller, path)
        rec = self._refreshed(rec, force=False)
        return self._info(rec, session, client_path)

    def close_file(self, client_id, client_path: str) -> bool:
        """End the caller's session; True when the file is still open for others."""
        # A session whose files vanished (or stopped resolving) is still found
        # under the path it was opened with: HOST_ROOT joined, then resolved.
        path = self.paths.resolve_session(client_path) if self._resolvable(client_path) \
            else os.path.realpath(self.paths.local(client_path))
        if self.sessions.session(client_id, path) is None:
            raise NotOpen(f"{client_path} is not open by this client")
        return self.sessions.close(client_id, path)

    def _resolvable(self, client_path: str) -> bool:
        try:
            self.paths.resolve_session(client_path)
            return True
        except ServerError:
            return False

    def require_session(self, client_id, client_path: str) -> None:
        """Raise :class:`NotOpen` unless the caller has a session of its own on the file.

        For clients that say they opened the file themselves: without their
        session a read would go through another client's (or none), without
        their ``cache_fs`` or password; after a move behind a load balancer,
        a restart or an expiry they open it again instead (see docs/cluster.md).
        """
        path = self.paths.resolve_session(client_path)
        if self.sessions.session(client_id, path) is None:
            raise NotOpen(f"{client_path} is not open by this client here (its session "
                          "expired, or the server that had it stopped or no longer serves "
                          "this file): open it again")

    def file_info(self, client_id, client_path: str) -> FileInfo:
        path = self.paths.resolve_session(client_path)
        rec, session = self.sessions.recording_for_read(client_id, path, client_path)
        rec = self._refreshed(rec)
        return self._info(rec, session, client_path)

    def list_open_files(self, caller: Optional[Caller] = None) -> list[str]:
        """The open files ``caller`` may see (all when None; see :mod:`.sessions`)."""
        return self.sessions.open_paths(caller.identity if caller is not None else None)

    def _info(self, rec: Recording, session: Optional[Session], client_path: str) -> FileInfo:
        cache_fs = session.cache_fs if session else None
        return FileInfo(
            client_path=client_path,
            channel_names=[c.name for c in rec.channels],
            sampling_rates=[c.fs for c in rec.channels],
            served_rates=self._served_rates_of(rec.channels, cache_fs),
            channel_start_uutc=[c.start_uutc for c in rec.channels],
            channel_end_uutc=[c.end_uutc for c in rec.channels],
            units=[c.units for c in rec.channels],
            start_uutc=rec.start_uutc, end_uutc=rec.end_uutc, cache_fs=cache_fs,
            encrypted=rec.encrypted,
            access_level=(session.access_level if session and session.access_level
                          else rec.access_level))

    # ------------------------------------------------------------ changes on disk

    def _refreshed(self, rec: Recording, force: bool = False,
                   background: bool = False) -> Recording:
        """``rec``, or its re-opened successor when the files changed on disk.

        Checked at most every ``REFRESH_INTERVAL_S`` per recording (a stat of
        each file). An append keeps the cached tiles except those at each
        channel's old end; any other change drops every tile of the file.
        """
        now = self._clock()
        if not force and now - rec.last_checked < self._check_interval(rec):
            return rec
        lock = self._refresh_locks.setdefault(rec.path, threading.Lock())
        with lock:
            current = self.sessions.recording(rec.path)
            if current is not None and current is not rec:
                return current
            rec.last_checked = now
            if not rec.changed_on_disk():
                return rec
            import os
            if not os.path.exists(rec.path):
                gone = self.sessions.drop_file(rec.path)
                if gone is not None:
                    self._recording_closed(gone)
                raise RecordingNotFound(
                    f"the recording at {rec.path} vanished from disk; open it again when it is back")
            try:
                new = self._open_recording(rec.path, rec.password, cache_epoch=None)
            except ServerError as e:
                if background:
                    # Maybe caught mid-rewrite: leave the sessions, and make the
                    # next request check for itself (it fails and drops them if
                    # the files are still unreadable; it never reads the old data).
                    rec.last_checked = float("-inf")
                    raise
                gone = self.sessions.drop_file(rec.path)
                if gone is not None:
                    self._recording_closed(gone)
                raise type(e)(f"the recording at {rec.path} changed on disk and can no longer "
                              f"be read: {e}") from None
            appended = self._is_append(rec, new)
            if appended:
                new.cache_epoch = rec.cache_epoch
            if not self.sessions.replace_recording(rec, new):
                new.close()
                return self.sessions.recording(rec.path) or rec
            rec.superseded = True     # from now on its tiles stay out of the cache
            if appended:
                self._evict_tails(rec, new)
            else:
                self.store.forget(rec)
            self._retire(rec)
            log.info("recording %s changed on disk (%s); re-opened", rec.path,
                     "appended" if appended else "replaced")
            return new

    @staticmethod
    def _is_append(old: Recording, new: Recording) -> bool:
        # Same block index is not enough: a session rewritten with other values
        # of the same shape has it too. The old files' bytes must be intact.
        if not old.data_kept_on_disk():
            return False
        if [c.name for c in old.channels] != [c.name for c in new.channels[:len(old.channels)]]:
            return False
        for a in old.channels:
            b = new.by_name.get(a.name)
            if b is None or b.fs != a.fs or b.start_uutc != a.start_uutc or b.end_uutc < a.end_uutc:
                return False
            n = a.block_starts.size
            if b.block_starts.size < n or not np.array_equal(a.block_starts, b.block_starts[:n]):
                return False
            if n > 1 and not np.array_equal(a.block_ends[:n - 1], b.block_ends[:n - 1]):
                return False
        return True

    def _evict_tails(self, old: Recording, new: Recording) -> None:
        """Drop tiles that reach past a channel's old end (they may now hold new data)."""
        key = old.key
        ends = {c.name: c.end_uutc for c in old.channels}

        def stale(k) -> bool:
            if k[0] != key:
                return False
            ch = old.by_name.get(k[1])
            if ch is None:
                return True
            grid = old.grid(ch, k[2])
            _, b = grid.tile_window(k[3])
            return b > ends[k[1]] - int(1e6 / ch.fs) - 1

        self.cache.evict_matching(stale)

    # ------------------------------------------------------------ reads

    def _read_context(self, client_id, client_path: str):
        self._check_open_for_work()
        path = self.paths.resolve_session(client_path)
        rec, session = self.sessions.recording_for_read(client_id, path, client_path)
        rec = self._refreshed(rec)
        return rec, session

    @staticmethod
    def _check_window(t0, t1) -> None:
        for name, v in (("start_uutc", t0), ("end_uutc", t1)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise BadRequest(f"{name} must be an integer number of microseconds")
        if t1 <= t0:
            raise BadRequest(f"empty or inverted window: start_uutc={t0} is not before "
                             f"end_uutc={t1} (windows are half-open [start, end))")

    def read_signal(self, client_id, client_path: str, channel_names: Sequence[str],
                    t0: int, t1: int, n_points: Optional[int] = None,
                    dtype: str = "float32", derived: Optional[DerivedSpec] = None) -> SignalRead:
        """Validate a read and return it ready to stream (nothing decoded yet).

        ``dtype``: ``"float32"`` (values in the channels' units, NaN in gaps)
        or ``"int32"`` (the stored samples, see :meth:`_read_stored`).
        ``derived``: a montage and/or filters (see :mod:`.derived_reads`).
        """
        self._check_window(t0, t1)
        if dtype not in DTYPES:
            raise BadRequest(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if dtype != "float32" and (n_points is not None or derived is not None):
            raise BadRequest(f"dtype={dtype} serves stored samples and cannot be combined "
                             "with n_points, a montage or filters; ask for float32")
        if len(channel_names) > self.settings.max_channels_per_read:
            raise ResourceLimit(f"{len(channel_names)} channels in one read; the limit is "
                                f"{self.settings.max_channels_per_read} (MAX_CHANNELS_PER_READ)")
        if n_points is not None:
            if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)):
                raise BadRequest(f"n_points must be a whole number of points, not {n_points!r}")
            if n_points < 1:
                raise BadRequest(f"n_points must be at least 1 (points per channel), "
                                 f"not {n_points}")
        rec, session = self._read_context(client_id, client_path)
        if derived is not None:
            d = self.derived.read(rec, session, channel_names, derived, t0, t1, n_points)
            with self._gen_lock:
                self.counters.reads += 1
            return SignalRead(client_path, d.names, d.fs, d.n_samples, t0, t1,
                              self._tracked(rec, d.chunks))
        chans = rec.resolve_channels(channel_names)
        cache_fs = session.cache_fs if session else None
        served = self._served_rates_of(chans, cache_fs)
        distinct = sorted(set(served))
        if len(distinct) > 1:
            by_rate = {}
            for c, r in zip(chans, served):
                by_rate.setdefault(r, []).append(c.name)
            desc = "; ".join(f"{r:g} Hz: {', '.join(n[:5])}{' ...' if len(n) > 5 else ''}"
                             for r, n in by_rate.items())
            raise BadRequest("the channels of one read must share a sampling rate, but these "
                             f"differ ({desc}); read each rate separately")
        fs = distinct[0]
        n = tg.samples_in_window(t0, t1, fs)
        if n <= 0:
            raise BadRequest(f"the window [{t0}, {t1}) is shorter than half a sample at "
                             f"{fs:g} Hz and holds no samples")
        names = [c.name for c in chans]
        if dtype != "float32":
            return self._read_stored(rec, chans, names, fs, n, t0, t1, dtype, client_path)
        if n_points is not None:
            src_fs = self._points_source_fs(chans, fs, t0, t1, int(n_points))
            n_src = tg.samples_in_window(t0, t1, src_fs)
            if n_src > n_points:
                return self._read_points(rec, session, chans, names, src_fs, t0, t1,
                                         int(n_points), client_path)
            fs, n = src_fs, n_src      # few enough samples: the source window, unchanged
        per = self._samples_per_chunk(len(chans), fs)
        with self._gen_lock:
            self.counters.reads += 1

        def chunks():
            it = self.store.read_chunks(rec, chans, fs, t0, t1, per)
            for j0, j1, rows in it:
                a = t0 + _offset_us(j0, fs)
                b = t1 if j1 == n else t0 + _offset_us(j1, fs)
                with self._gen_lock:
                    self.counters.bytes_served += rows.nbytes
                yield a, b, j0, rows
            # Planned once gRPC asks for the message after the last, i.e. once the
            # last chunk is sent: planning and decoding the next windows would
            # otherwise compete with encoding and sending it (docs/benchmarks.md).
            self._prefetch(rec, chans, fs, t0, t1)

        return SignalRead(client_path, names, fs, n, t0, t1, self._tracked(rec, chunks()))

    def _samples_per_chunk(self, n_channels: int, fs: float) -> int:
        """Samples per streamed chunk: at most ``CHUNK_BYTES`` of 4-byte samples, a
        whole number of the rate's exact periods when that fits."""
        per = tg.chunk_samples(n_channels, self.settings.chunk_bytes,
                               multiple_of=tg.exact_period_samples(fs) or 1)
        if per * n_channels * 4 > self.settings.chunk_bytes and per > 1:
            per = max(1, self.settings.chunk_bytes // (n_channels * 4))
        return per

    def _read_stored(self, rec, chans, names, fs, n, t0, t1, dtype, client_path) -> SignalRead:
        """A read of the stored samples (``dtype="int32"``), decoded chunk by chunk.

        Each chunk is one raw read through the decoder (nothing cached: the
        tiles hold values), on the window's grid as a float32 read, with
        :data:`.decode.RAW_GAP` where a channel has no data. Only at the
        channels' recorded rate (a session opened with a lower ``cache_fs``
        serves values, not samples).
        """
        slow = [c.name for c in chans if c.fs != fs]
        if slow:
            raise BadRequest(f"dtype={dtype} serves the stored samples at the recorded rate, "
                             f"but this session serves {', '.join(slow[:5])} at {fs:g} Hz "
                             "(cache_fs); open the file without cache_fs to read samples")
        nbytes = n * len(chans) * 4
        if nbytes > self.settings.max_read_bytes:
            raise ResourceLimit(
                f"the window holds {n} samples x {len(chans)} channels = "
                f"{nbytes / 2**20:.0f} MB of {dtype}, over the server's limit of "
                f"{self.settings.max_read_bytes / 2**20:.0f} MB (MAX_READ_MB); read it in parts")
        per = self._samples_per_chunk(len(chans), fs)
        lo = min(c.start_uutc for c in chans)
        hi = max(c.end_uutc for c in chans)
        with self._gen_lock:
            self.counters.reads += 1

        def chunks():
            for j0, j1 in tg.chunk_bounds(n, per):
                a = t0 + _offset_us(j0, fs)
                b = t1 if j1 == n else t0 + _offset_us(j1, fs)
                if b <= lo or a >= hi:          # outside every channel: nothing to decode
                    rows = np.full((len(names), j1 - j0), RAW_GAP, dtype=np.int32)
                else:
                    rows = self.decoder.decode(rec.source, names, a, b, dtype=dtype)
                if rows.shape != (len(names), j1 - j0):
                    raise ServerError(f"reading the stored samples of {client_path} [{a}, {b}) "
                                      f"gave {rows.shape[1]} samples, not {j1 - j0}")
                with self._gen_lock:
                    self.counters.bytes_served += rows.nbytes
                yield a, b, j0, rows

        return SignalRead(client_path, names, fs, n, t0, t1, self._tracked(rec, chunks()),
                          dtype=dtype)

    def _prefetch(self, rec, chans, fs, t0, t1) -> None:
        try:
            self.store.prefetch_later(rec, chans, fs, t0, t1)   # planned off this thread
        except Exception:  # noqa: BLE001 - best effort
            log.debug("prefetch failed", exc_info=True)

    @staticmethod
    def _points_source_fs(chans, fs: float, t0: int, t1: int, n_points: int) -> float:
        """The rate an ``n_points`` read reduces from: ``fs`` (the session's served
        rate) when the window holds at least ``2 * n_points`` samples there, else
        the channels' native rate when they share one (zoomed in)."""
        native = {c.fs for c in chans}
        if fs < max(native) and len(native) == 1 \
                and tg.samples_in_window(t0, t1, fs) < 2 * n_points:
            return native.pop()
        return fs

    @staticmethod
    def _points_data_span(chans, fs, t0, t1, n_src):
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
        a = t0 + int(Fraction(s0) / rate)
        b = t1 if s1 == n_src else t0 + int(Fraction(s1) / rate)
        return s0, s1, a, b

    def _read_points(self, rec, session, chans, names, src_fs, t0, t1, n_points, client_path
                     ) -> SignalRead:
        """``n_points`` reads: one MinMaxLTTB point per evenly spaced bucket, streamed.

        ``src_fs``: see :meth:`_points_source_fs`. The source window streams chunk by chunk
        through :class:`.reduction.PointReducer` (at most
        ``POINTS_SOURCE_MB`` of source samples at once), so a day of many
        channels never sits in memory; the result is cached (a viewer's
        redraw of the same view costs a lookup). Output point ``k`` is a real sample of
        source bucket ``k`` (samples ``[floor(k*N/n), floor((k+1)*N/n))`` of
        the ``N``-sample source window), NaN when that bucket holds no data;
        ``fs = n_points / window_seconds``.

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
        per = tg.chunk_samples(len(unique), self.settings.points_source_bytes, multiple_of=q)
        need = n_points * len(unique) * (STATE_BYTES_PER_POINT + 4) \
            + min(per, n_src) * len(unique) * 4
        what = f"n_points={n_points} x {len(unique)} channels"
        self.points_memory.check(need, what)
        with self._gen_lock:
            self.counters.reads += 1

        # The answer is cached like a tile (same budget, TTL and eviction: the
        # recording's key first, so closes, appends and changes drop it too).
        result_key = (rec.key, ("points",) + tuple(c.name for c in unique), float(src_fs),
                      int(t0), int(t1), int(n_points))

        def chunks():
            reduced = self.cache.get(result_key)
            if reduced is None:
                with self.points_memory.reserve(need, what):
                    reducer = PointReducer(len(unique), n_src, n_points)
                    s0, s1, a, b = self._points_data_span(unique, src_fs, t0, t1, n_src)
                    reducer.skip(s0)        # before the data: nothing to read
                    if s1 > s0:
                        for _, _, src in self.store.read_chunks(rec, unique, src_fs, a, b, per,
                                                                limit_bytes=False):
                            reducer.feed(src)
                    reducer.skip(n_src - s1)   # after the data
                    _, reduced = reducer.result()
                    del reducer
                reduced.flags.writeable = False
                if not rec.closed:
                    self.cache.put(result_key, reduced)
                self._prefetch(rec, unique, src_fs, t0, t1)
            per_chunk = tg.chunk_samples(len(chans), self.settings.chunk_bytes)
            for j0, j1 in tg.chunk_bounds(n_points, per_chunk):
                a = t0 + (j0 * (t1 - t0)) // n_points
                b = t0 + (j1 * (t1 - t0)) // n_points
                out = np.ascontiguousarray(reduced[:, j0:j1] if rows is None
                                           else reduced[rows, j0:j1])
                with self._gen_lock:
                    self.counters.bytes_served += out.nbytes
                yield a, b, j0, out

        return SignalRead(client_path, names, out_fs, n_points, t0, t1,
                          self._tracked(rec, chunks()))

    # ------------------------------------------------------------ envelope

    def envelope(self, client_id, client_path: str, channel_names: Sequence[str],
                 t0: Optional[int] = None, t1: Optional[int] = None):
        """Per-MEF-block (start, end, min, max) of each channel, from the block index only.

        Yields ``(channel_name, dict of numpy arrays)`` in the order asked.
        """
        if t0 is not None and t1 is not None and t1 <= t0:
            raise BadRequest(f"empty or inverted window: start_uutc={t0} is not before "
                             f"end_uutc={t1}")
        if len(channel_names) > self.settings.max_channels_per_read:
            raise ResourceLimit(f"{len(channel_names)} channels in one envelope request; the "
                                f"limit is {self.settings.max_channels_per_read} "
                                "(MAX_CHANNELS_PER_READ)")
        rec, _ = self._read_context(client_id, client_path)
        yield from self._tracked(rec, self._envelope_rows(rec, channel_names, t0, t1,
                                                          client_path))

    def _envelope_rows(self, rec, channel_names, t0, t1, client_path):
        chans = rec.resolve_channels(channel_names)
        import warnings
        for ch in chans:
            if t0 is None and t1 is None and ch.block_min is not None:
                # The whole channel: the block index read when the recording opened.
                yield ch.name, {"start_uutc": ch.block_starts, "end_uutc": ch.block_ends,
                                "min": ch.block_min, "max": ch.block_max}
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    e = rec.reader.block_envelope(ch.name, t0, t1)
                except Exception as exc:  # noqa: BLE001
                    raise ServerError(f"reading the block index of {ch.name} in {client_path} "
                                      f"failed: {exc}") from None
            yield ch.name, e

    # ------------------------------------------------------------ superseded versions

    def _tracked(self, rec: Recording, it: Iterator) -> "_TrackedChunks":
        return _TrackedChunks(self, rec, it)

    def _retire(self, rec: Recording) -> None:
        """Close a superseded version once no read is using it (now, or when the last ends).

        Reads that began on it keep its reader (and its generation in the
        thread decoder's lookup) until they finish, so a re-open after an
        append never fails a read in flight.
        """
        with self._gen_lock:
            self._retired.append(rec)
        self._close_retired()

    def _close_retired(self) -> None:
        with self._gen_lock:
            retired = self._retired
            idle = [r for r in retired if r.active_reads <= 0]
            self._retired = [r for r in retired if r.active_reads > 0]
            for r in idle:
                if self._readers.get((r.source.path, r.generation)) is r:
                    del self._readers[(r.source.path, r.generation)]
        for r in idle:
            r.close()
            self.decoder.forget(r.source)


    # ------------------------------------------------------------ annotations, runs, discovery

    def records(self, client_id, client_path: str, channel_names: Sequence[str],
                t0: Optional[int] = None, t1: Optional[int] = None) -> list:
        """The MEF records of an open file in time order (see :mod:`.annotations`).

        Read once per recording and access level, then kept while the
        recording is open (a change on disk re-opens the recording).

        ``channel_names`` empty: session level plus every channel; else session
        level plus these channels. ``[t0, t1)`` in uUTC, either end optional.
        """
        if t0 is not None and t1 is not None and t1 <= t0:
            raise BadRequest(f"empty or inverted window: start_uutc={t0} is not before "
                             f"end_uutc={t1} (windows are half-open [start, end))")
        rec, session = self._read_context(client_id, client_path)
        names = [c.name for c in rec.resolve_channels(channel_names)] if channel_names else None
        # The shared reader has its first opener's access; a client whose own password
        # opens more or less than that reads with its own (never another client's).
        own = rec.encrypted and session is not None and session.access_level != rec.access_level
        level = session.access_level if own else rec.access_level
        with self._gen_lock:
            indexes = getattr(self, "_annotation_indexes", None)
            if indexes is None:
                indexes = self._annotation_indexes = weakref.WeakKeyDictionary()
            per_rec = indexes.setdefault(rec, {})
            index = per_rec.get(level)
        if index is None:
            try:
                if own:
                    index = read_annotations(None, rec.open_path, session.password)
                else:
                    index = read_annotations(rec.reader, rec.open_path, rec.password)
            except Exception as exc:  # noqa: BLE001 - mef3io's errors, named for the client
                raise ServerError(f"reading the records of {client_path} failed: "
                                  f"{type(exc).__name__}: {exc}") from None
            with self._gen_lock:
                per_rec[level] = index
        return index.select(names, t0, t1)

    def segments(self, client_id, client_path: str, channel_names: Sequence[str]):
        """Contiguous runs of each channel asked (all when empty), from the block index.

        Yields :class:`.segments.ChannelRuns` in the order asked.
        """
        rec, _ = self._read_context(client_id, client_path)
        for ch in rec.resolve_channels(channel_names):
            yield channel_runs(rec.reader, ch)

    def list_recordings(self, client_root: Optional[str], recursive: bool = True,
                        wanted: Callable[[], bool] = lambda: True,
                        caller: Optional[Caller] = None):
        """Summaries of the sessions under a served directory (every root when None).

        Yields :class:`.discovery.SessionSummary` with client-visible paths,
        read from metadata only and cached until each session's files change.
        The walk stops as soon as ``wanted()`` is False (the client gave up).
        One walk per identity runs at a time (the others wait, while wanted).
        Without ``DATA_ROOTS`` a walk stays on the filesystem of the folder
        asked (so ``/`` does not walk ``/proc`` or network mounts).
        """
        self._check_open_for_work()
        with self._gen_lock:
            index = getattr(self, "_session_index", None)
            if index is None:
                index = self._session_index = SessionIndex(pinner=self.pinner)
            lock = self._walk_locks.setdefault(caller.identity if caller else "",
                                               threading.Lock())
        if client_root is None or client_root == "":
            if not self.paths.data_roots:
                raise BadRequest("no DATA_ROOTS are configured on this server, so there is no "
                                 "default to list: give the directory to list as root")
            tops = [(r, self._client_path_of(r)) for r in self.paths.data_roots]
        else:
            tops = [(self.paths.resolve_dir(client_root), os.path.normpath(client_root))]
        while not lock.acquire(timeout=0.25):
            if not wanted():
                return
        try:
            for local_top, client_top in tops:
                device = None if self.paths.data_roots else os.stat(local_top).st_dev
                for found in find_sessions(local_top, recursive, self.paths.within_roots,
                                           wanted, device):
                    if not wanted():
                        return
                    summary = index.summary(found)
                    rel = os.path.relpath(found, local_top)
                    yield replace(summary, path=os.path.join(client_top, rel))
        except WalkCancelled:
            return
        finally:
            lock.release()

    def _client_path_of(self, local: str) -> str:
        """The client's name for a local path (``HOST_ROOT`` taken off)."""
        h = self.paths.host_root
        if h and (local == h or local.startswith(h + "/")):
            return local[len(h):] or "/"
        return local
    # ------------------------------------------------------------ background change checks

    REFRESH_COST_FACTOR = 20    # re-check a recording at most every 20x what its check costs

    def _check_interval(self, rec: Recording) -> float:
        """Seconds between change checks of ``rec``: ``REFRESH_INTERVAL_S``, or longer
        for sessions of so many files that a check (one stat per file) costs more
        than 1/20 of the interval (e.g. ~0.2 s for 7 000 files -> every ~4 s)."""
        base = self.settings.refresh_interval_s
        return base if base <= 0 else max(base, self.REFRESH_COST_FACTOR * rec.check_cost_s)

    def _refresh_loop(self) -> None:
        """Re-check open recordings in the background, so no request pays for the stats.

        Requests still re-check a recording whose last check is older than its
        interval (this thread may lag), so correctness never depends on it.
        This thread wakes every quarter interval and re-checks what was last
        checked half an interval ago or more, so a check is never older than
        about 3/4 of the interval: requests find it fresh and never pay for
        the stats themselves (a page of a viewer that did waited ~2 ms more).
        """
        base = self.settings.refresh_interval_s
        while not self._stop.wait(base / 4):
            for rec in self.sessions.open_recordings():
                if self._stop.is_set():
                    return
                try:
                    if self._clock() - rec.last_checked >= self._check_interval(rec) / 2:
                        self._refreshed(rec, force=True, background=True)
                except ServerError:
                    pass            # vanished or unreadable: _refreshed dropped it already
                except Exception:  # noqa: BLE001 - the refresher must never die
                    log.exception("background change check of %s failed", rec.path)


def _offset_us(j: int, fs: float) -> int:
    """uUTC offset of window sample ``j`` at ``fs`` Hz, rounded half up (exact)."""
    if j == 0:
        return 0
    return tg.round_half_up(Fraction(j * 10**6) / Fraction(fs))


class _TrackedChunks:
    """An iterator over a read's chunks that holds its recording open until done.

    ``rec.active_reads`` is counted from creation (before the first chunk) to
    exhaustion, ``close()`` or garbage collection, whichever comes first, so a
    recording superseded by a re-open closes only after the reads that started
    on it finish (see :meth:`Engine._retire`).
    """

    def __init__(self, engine: "Engine", rec: Recording, it: Iterator):
        self._engine = engine
        self._rec = rec
        self._it = it
        self._done = False
        with engine._gen_lock:
            rec.active_reads += 1

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            with self._engine._gen_lock:
                self._rec.active_reads -= 1
            if self._rec.superseded:
                self._engine._close_retired()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
