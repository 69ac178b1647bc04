"""The engine: the server's core, with no network in it.

One method per thing a client can ask (open_file, file_info, read_signal,
envelope, records, segments, list_recordings, ...); front ends (the gRPC
service, :mod:`.service`) only translate messages to these calls and back,
and tests and other front ends can use the engine directly. It wires the
parts of the data path, each a module of its own, top-down:

* :mod:`.paths` -- a client's path to a local recording;
* :mod:`.sessions` -- client sessions on recordings (``cache_fs``,
  passwords, expiry), each on one open :class:`~.recordings.Recording`;
* :mod:`.changes` and :mod:`.versions` -- re-opening recordings changed on
  disk, and closing superseded versions once their reads end;
* :mod:`.reads` -- a read checked once and streamed as timed chunks;
  :mod:`.points` -- ``n_points`` reads;
* :mod:`.tile_store` -- windows from cached tiles (grid, cache, decode).

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
from dataclasses import replace
from typing import Callable, Optional, Sequence

from . import points, reads
from . import tile_grid as tg
from .annotations import read_annotations
from .callers import Caller, as_caller
from .changes import ChangeWatcher
from .config import Settings
from .decode import Decoder, load_mef3io, make_decoder
from .derived_reads import DerivedReader, DerivedSpec
from .discovery import SummaryCache, WalkCancelled, find_recordings
from .errors import BadRequest, NotOpen, PasswordRequired, ServerError, ShuttingDown
from .memory_budget import MemoryBudget
from .password_throttle import PasswordThrottle
from .paths import PathResolver
from .pinning import Pinner
from .points import PointReads
from .reads import FileInfo, ReadCounters, SignalRead, ValueReads
from .block_index import IndexCache
from .index_warmer import IndexWarmer
from .recordings import Recording
from .segments import channel_runs
from .sessions import Session, SessionRegistry
from .tile_cache import TileCache
from .tile_store import TileStore
from .versions import Versions

__all__ = ["Engine", "FileInfo", "SignalRead"]

log = logging.getLogger("mef3io_server.engine")


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
        self.versions = Versions(lambda source: self.decoder.forget(source))
        self.decoder = decoder or make_decoder(settings, self.versions.reader_for)
        self.store = TileStore(self.cache, self.decoder,
                               min_parallel_tiles=settings.min_parallel_tiles,
                               prefetch_ahead=settings.prefetch_ahead_windows,
                               prefetch_behind=settings.prefetch_behind_windows,
                               max_read_bytes=settings.max_read_bytes)
        self.sessions = SessionRegistry(self._open_recording, self._recording_closed,
                                        on_recording_listed=self._recording_listed,
                                        session_ttl_s=settings.session_ttl_s,
                                        max_sessions=settings.max_sessions, clock=clock)
        self.counters = ReadCounters()
        self.derived = DerivedReader(self)
        self.passwords = PasswordThrottle(clock)
        self.points_memory = MemoryBudget(settings.points_memory_bytes, "POINTS_MEMORY_MB")
        self.reads = ValueReads(self.store, self.decoder, self.versions, self.counters,
                                settings.chunk_bytes, settings.max_read_bytes)
        self.points = PointReads(self.reads, self.points_memory, self.counters,
                                 settings.points_source_bytes, settings.chunk_bytes)
        #: Pages of the open recordings' block indexes (see .block_index).
        self.index_cache = IndexCache(settings.index_cache_bytes)
        self.index_warmer = IndexWarmer(self.index_cache)
        self.changes = ChangeWatcher(settings.refresh_interval_s, self.sessions, self.store,
                                     self.versions, self._open_recording,
                                     self._recording_closed, clock,
                                     notifications=settings.change_notifications)
        # Guards the indexes below (records per recording and access level, the
        # walk lock of each identity).
        self._lock = threading.Lock()
        self._annotation_indexes: "weakref.WeakKeyDictionary[Recording, dict]" = \
            weakref.WeakKeyDictionary()
        self._summaries = SummaryCache(pinner=self.pinner)    # discovery's summaries
        self._walk_locks: dict[str, threading.Lock] = {}    # identity -> its one walk
        self._stop = threading.Event()
        self._draining = False
        self._sweeper: Optional[threading.Thread] = None

    # ------------------------------------------------------------ plumbing

    def _open_recording(self, path: str, password: str, *, cache_epoch=None) -> Recording:
        s = self.settings
        rec = Recording(path, password, generation=self.versions.next_generation(),
                        cache_epoch=cache_epoch, decode_threads=s.decode_threads,
                        read_threads=self._read_threads(),
                        tile_duration_s=s.tile_duration_s,
                        respect_mef_blocks=s.respect_mef_blocks, pinner=self.pinner,
                        index_cache=self.index_cache)
        rec.last_checked = self._clock()
        self.versions.register(rec)
        self.index_warmer.warm(rec.index)
        return rec

    def _read_threads(self) -> Optional[int]:
        """mef3io threads of a recording's shared reader after its open: 1 when
        DECODE_THREADS is automatic and the tile store already runs one mef3io read
        per core (more threads inside each read only add CPU: 27 ms instead of
        35 ms of CPU per 64 ch x 10 s tile, docs/benchmarks.md); else unchanged."""
        if self.settings.decode_threads == 0 and self.decoder.kind == "threads" \
                and self.store.split_ways > 1:
            return 1
        return None

    def _recording_listed(self, rec: Recording) -> None:
        self.changes.watch_soon(rec)

    def _recording_closed(self, rec: Recording) -> None:
        self.changes.forget(rec)
        self.versions.unregister(rec)
        rec.close()
        self.store.forget(rec)
        self.decoder.forget(rec.source)

    def start(self) -> None:
        """Load mef3io, warm the decoder, start the background sweeper (cache TTL,
        session TTL) and the change checks."""
        load_mef3io()
        self.decoder.warm_up()
        ttls = [t for t in (self.settings.cache_ttl_s, self.settings.session_ttl_s) if t]
        interval = max(0.05, min([30.0] + [t / 4 for t in ttls]))   # idle: every 30 s
        self._sweeper = threading.Thread(target=self._sweep_loop, args=(interval,),
                                         name="sweeper", daemon=True)
        self._sweeper.start()
        self.changes.start(self._stop)

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
        self.changes.join(timeout=5)
        self.index_warmer.close()
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
        path = self.paths.resolve_recording(client_path)
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
        rec = self.changes.refreshed(rec, force=False)
        return self._info(rec, session, client_path)

    def close_file(self, client_id, client_path: str) -> bool:
        """End the caller's session; True when the file is still open for others."""
        # A session whose files vanished (or stopped resolving) is still found
        # under the path it was opened with: HOST_ROOT joined, then resolved.
        path = self.paths.resolve_recording(client_path) if self._resolvable(client_path) \
            else os.path.realpath(self.paths.local(client_path))
        if self.sessions.session(client_id, path) is None:
            raise NotOpen(f"{client_path} is not open by this client")
        return self.sessions.close(client_id, path)

    def _resolvable(self, client_path: str) -> bool:
        try:
            self.paths.resolve_recording(client_path)
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
        path = self.paths.resolve_recording(client_path)
        if self.sessions.session(client_id, path) is None:
            raise NotOpen(f"{client_path} is not open by this client here (its session "
                          "expired, or the server that had it stopped or no longer serves "
                          "this file): open it again")

    def file_info(self, client_id, client_path: str) -> FileInfo:
        path = self.paths.resolve_recording(client_path)
        rec, session = self.sessions.recording_for_read(client_id, path, client_path)
        rec = self.changes.refreshed(rec)
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
            served_rates=reads.served_rates(rec.channels, cache_fs),
            channel_start_uutc=[c.start_uutc for c in rec.channels],
            channel_end_uutc=[c.end_uutc for c in rec.channels],
            units=[c.units for c in rec.channels],
            units_factors=[c.units_factor for c in rec.channels],
            descriptions=[c.description for c in rec.channels],
            start_uutc=rec.start_uutc, end_uutc=rec.end_uutc, cache_fs=cache_fs,
            encrypted=rec.encrypted,
            access_level=(session.access_level if session and session.access_level
                          else rec.access_level))

    # ------------------------------------------------------------ reads

    def _read_context(self, client_id, client_path: str):
        self._check_open_for_work()
        path = self.paths.resolve_recording(client_path)
        rec, session = self.sessions.recording_for_read(client_id, path, client_path)
        rec = self.changes.refreshed(rec)
        return rec, session

    def recording(self, client_id, client_path: str) -> Recording:
        """The open :class:`Recording` a read of ``client_path`` by this client uses
        now (refreshed if its files changed): for tests, benchmarks and front ends
        that work on the core directly."""
        return self._read_context(client_id, client_path)[0]

    def read_signal(self, client_id, client_path: str, channel_names: Sequence[str],
                    t0: int, t1: int, n_points: Optional[int] = None,
                    dtype: str = "float32", cancel=None,
                    derived: Optional[DerivedSpec] = None) -> SignalRead:
        """Validate a read and return it ready to stream (nothing decoded yet).

        ``dtype``: ``"float32"`` (values in the channels' units, NaN in gaps)
        or ``"int32"`` (the stored samples, see :meth:`.reads.ValueReads.stored`).
        ``n_points``: one point per bucket (see :mod:`.points`). ``cancel``: a
        :func:`.decode.cancel_token` the front end fires when the client goes
        away: the read's own decodes stop, and it counts as cancelled.
        ``derived``: a montage and/or filters (see :mod:`.derived_reads`).
        """
        reads.check_window(t0, t1)
        reads.check_kind(dtype, n_points)
        if dtype != "float32" and derived is not None:
            raise BadRequest(f"dtype={dtype} serves stored samples and cannot be combined "
                             "with a montage or filters; ask for float32")
        reads.check_channel_count(len(channel_names), self.settings.max_channels_per_read)
        rec, session = self._read_context(client_id, client_path)
        if derived is not None:
            d = self.derived.read(rec, session, channel_names, derived, t0, t1, n_points,
                                  cancel=cancel)
            self.counters.read_started()
            return SignalRead(client_path, d.names, d.fs, d.n_samples, t0, t1,
                              self.versions.tracked(rec, self.counters.counted(d.chunks)))
        chans = rec.resolve_channels(channel_names)
        fs = reads.one_rate(chans, session.cache_fs if session else None)
        n = reads.window_samples(t0, t1, fs)
        if dtype != "float32":
            return self.reads.stored(rec, chans, fs, n, t0, t1, dtype, client_path, cancel)
        if n_points is not None:
            src_fs = points.source_rate(chans, fs, t0, t1, int(n_points))
            n_src = tg.samples_in_window(t0, t1, src_fs)
            if n_src > n_points:
                return self.points.read(rec, chans, src_fs, t0, t1, int(n_points), client_path,
                                        cancel)
            fs, n = src_fs, n_src      # few enough samples: the source window, unchanged
        return self.reads.values(rec, chans, fs, n, t0, t1, client_path, cancel)

    # ------------------------------------------------------------ envelope

    def envelope(self, client_id, client_path: str, channel_names: Sequence[str],
                 t0: Optional[int] = None, t1: Optional[int] = None):
        """Per-MEF-block (start, end, min, max) of each channel, from the block index only.

        Yields ``(channel_name, dict of numpy arrays)`` in the order asked.
        """
        reads.check_order(t0, t1, explain=False)
        reads.check_channel_count(len(channel_names), self.settings.max_channels_per_read,
                                  "envelope request")
        rec, _ = self._read_context(client_id, client_path)
        yield from self.versions.tracked(rec, self._envelope_rows(rec, channel_names, t0, t1,
                                                          client_path))

    def _envelope_rows(self, rec, channel_names, t0, t1, client_path):
        for ch in rec.resolve_channels(channel_names):
            try:
                e = rec.block_envelope(ch, t0, t1)
            except Exception as exc:  # noqa: BLE001
                raise ServerError(f"reading the block index of {ch.name} in {client_path} "
                                  f"failed: {exc}") from None
            yield ch.name, e

    # ------------------------------------------------------------ annotations, runs, discovery

    def records(self, client_id, client_path: str, channel_names: Sequence[str],
                t0: Optional[int] = None, t1: Optional[int] = None) -> list:
        """The MEF records of an open file in time order (see :mod:`.annotations`).

        Read once per recording and access level, then kept while the
        recording is open (a change on disk re-opens the recording).

        ``channel_names`` empty: session level plus every channel; else session
        level plus these channels. ``[t0, t1)`` in uUTC, either end optional.
        """
        reads.check_order(t0, t1)
        rec, session = self._read_context(client_id, client_path)
        names = [c.name for c in rec.resolve_channels(channel_names)] if channel_names else None
        # The shared reader has its first opener's access; a client whose own password
        # opens more or less than that reads with its own (never another client's).
        own = rec.encrypted and session is not None and session.access_level != rec.access_level
        level = session.access_level if own else rec.access_level
        with self._lock:
            per_rec = self._annotation_indexes.setdefault(rec, {})
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
            with self._lock:
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
        """Summaries of the recordings under a served directory (every root when None).

        Yields :class:`.discovery.RecordingSummary` with client-visible paths,
        read from metadata only and cached until each recording's files change.
        The walk stops as soon as ``wanted()`` is False (the client gave up).
        One walk per identity runs at a time (the others wait, while wanted).
        Without ``DATA_ROOTS`` a walk stays on the filesystem of the folder
        asked (so ``/`` does not walk ``/proc`` or network mounts).
        """
        self._check_open_for_work()
        index = self._summaries
        with self._lock:
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
                for found in find_recordings(local_top, recursive, self.paths.within_roots,
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
