"""Recordings: one open MEF 3.0 session, its metadata, block index and tile grids.

A :class:`Recording` is opened once per file, however many clients read it.
It holds the shared mef3io reader (used by the thread decoder), the channel
metadata a ``FileInfo`` answers with, each channel's MEF block index (from
``block_envelope``: times only, nothing decoded), and one
:class:`~mef3io_server.server.tile_grid.TileGrid` per (channel, served rate).

Times are uUTC, rates Hz. A channel's span is ``[start_uutc, end_uutc)`` as
mef3io reports it.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import logging

import numpy as np

from . import tile_grid as tg
from .decode import Source, open_reader
from .pinning import Pinner
from .errors import PasswordRequired, RecordingNotFound, RecordingUnreadable, UnknownChannel

log = logging.getLogger("mef3io_server.recordings")


@dataclass
class ChannelInfo:
    """Metadata of one channel (rates in Hz, times in uUTC)."""

    name: str
    fs: float
    start_uutc: int
    end_uutc: int
    n_samples: int
    units: str
    block_starts: np.ndarray = field(repr=False)   # int64, one per MEF block
    block_ends: np.ndarray = field(repr=False)     # int64, just past each block's last sample
    block_samples: int = 0                         # the channel's (first) block length
    block_min: Optional[np.ndarray] = field(default=None, repr=False)   # float64, per block
    block_max: Optional[np.ndarray] = field(default=None, repr=False)   # (units; NaN: unset)
    # Block starts and ends in time order, as a MEF index is: where it is not
    # (a damaged .tidx), nothing is concluded from it (see Recording).
    index_ordered: bool = True
    # A stored count times this is a value in ``units`` (MEF units_conversion_factor).
    units_factor: float = 1.0
    description: str = ""                          # MEF channel_description


def _classify_open_error(path: str, exc: Exception, password_given: bool = False,
                         opened_as: str = "") -> Exception:
    name = type(exc).__name__
    text = str(exc).replace(opened_as, path) if opened_as else str(exc)
    if name == "PasswordError":
        if password_given:
            return PasswordRequired(f"{path} is encrypted and the password given is wrong")
        return PasswordRequired(f"{path} is encrypted: a password is needed (its level-1 or "
                                "level-2 password)")
    if name in ("IoError", "FileNotFoundError", "OSError") and (
            "not a directory or tar archive" in text or "No such file" in text):
        return RecordingNotFound(f"no MEF session at {path}")
    if "must end with .mefd" in text:
        return RecordingUnreadable(f"{path} is not a MEF session (the name must end in .mefd)")
    return RecordingUnreadable(f"{path} is not a readable MEF 3.0 session: {text}")


def index_in_order(starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether a channel's block starts and ends (uUTC) both run in time order, each
    block ending at or after its start: what searching the index by time needs."""
    return bool(np.all(starts[1:] >= starts[:-1]) and np.all(ends[1:] >= ends[:-1])
                and np.all(ends >= starts))


#: mef3io.Validator's checks of the block index, run on channels whose index is
#: out of order so the log says what mef3io finds wrong with it.
INDEX_CHECKS = ("crc.index", "index.block-offsets", "index.data-coverage",
                "index.entry-counts")


def index_findings(path: str, password: str, channels: Sequence[str]) -> str:
    """``"; mef3io.Validator: ..."`` for the log, or "" (nothing found, or it failed)."""
    try:
        import mef3io

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = mef3io.Validator(path, password=password, channels=list(channels[:10]),
                                      exact_difference_bytes=False).validate(INDEX_CHECKS)
        found = [str(f).splitlines()[0] for f in report.findings][:5]
    except Exception as e:  # noqa: BLE001 - a diagnosis only
        return f"; mef3io.Validator could not check it ({type(e).__name__})"
    return ("; mef3io.Validator: " + " | ".join(found)) if found else ""


def session_signature(path: str) -> tuple:
    """A cheap fingerprint of a session's files: (relative path, size, mtime_ns) of each.

    Appends change the size of ``.tdat``/``.tidx`` files and rewrite
    ``.tmet``; a replaced or truncated session changes sizes or inode times.
    Costs one ``stat`` per file (channels x segments x 3).
    """
    if os.path.isfile(path):
        st = os.stat(path)
        return (("", st.st_size, st.st_mtime_ns, st.st_ino),)
    entries: list = []
    _signature_of_dir(path, "", entries)
    return tuple(entries)


def _signature_of_dir(directory: str, prefix: str, entries: list) -> None:
    """Files under ``directory`` (names sorted, depth first) into ``entries``, with
    paths relative to the session: ``os.scandir`` saves a path join, a ``relpath``
    and a directory ``stat`` per file over ``os.walk`` (2.4 -> 1.3 ms for 192 files)."""
    try:
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return
    for e in items:
        try:
            if e.is_dir():
                if not e.is_symlink():      # as os.walk: linked folders are not entered
                    _signature_of_dir(e.path, prefix + e.name + "/", entries)
                continue
            st = e.stat()
        except FileNotFoundError:
            continue
        entries.append((prefix + e.name, st.st_size, st.st_mtime_ns, st.st_ino))


UNIVERSAL_HEADER_BYTES = 1024   # MEF 3.0 files start with this header (rewritten on append)
TAIL_MARK_BYTES = 4096          # bytes before a .tdat's end fingerprinted at open


def tail_marks(path: str, signature: tuple) -> dict:
    """Fingerprints of each ``.tdat``: ``{relpath: (inode, size, crc32 of its last bytes)}``.

    The last ``TAIL_MARK_BYTES`` bytes before the file's end at open time (past
    the universal header). An in-segment append by ``mef3io.Writer`` extends
    the same file and leaves those bytes alone; a rewrite or replacement with
    other data changes the inode or those bytes. One small read per file.
    """
    marks = {}
    if os.path.isfile(path):
        return marks
    for rel, size, _mtime, ino in signature:
        if not rel.endswith(".tdat"):
            continue
        marks[rel] = (ino, size, _crc_before(os.path.join(path, rel), size))
    return marks


def _crc_before(full: str, size: int) -> Optional[int]:
    a = max(UNIVERSAL_HEADER_BYTES, size - TAIL_MARK_BYTES)
    try:
        with open(full, "rb") as f:
            f.seek(a)
            data = f.read(max(0, size - a))
    except OSError:
        return None
    return zlib.crc32(data) if len(data) == max(0, size - a) else None


_INT64 = np.iinfo(np.int64)


def _int64s(times: list) -> np.ndarray:
    """uUTC times as int64, those beyond its range clipped to it (no block is there)."""
    try:
        return np.array(times, dtype=np.int64)
    except OverflowError:
        return np.array([min(max(int(t), _INT64.min), _INT64.max) for t in times],
                        dtype=np.int64)


class Recording:
    """An open MEF session (see module docstring).

    Parameters
    ----------
    path : str
        Resolved path of the ``.mefd`` directory (or ``.mefd.tar``).
    password : str
        The password that opened it ("" for none). Kept in memory only while
        the recording is open, because decode workers and re-opens after a
        change on disk need it; never logged or returned.
    """

    def __init__(self, path: str, password: str = "", *, generation: int = 0,
                 cache_epoch: Optional[int] = None, decode_threads: int = 0,
                 tile_duration_s: float = 10.0, respect_mef_blocks: bool = False,
                 pinner: Optional[Pinner] = None):
        self.path = path
        self.generation = generation
        # Tiles are keyed by (path, cache_epoch): an append keeps the epoch
        # (only tiles at the old end are dropped), a replacement bumps it.
        self.cache_epoch = generation if cache_epoch is None else cache_epoch
        self.last_checked = 0.0
        self._password = password or ""
        self._tile_duration_s = tile_duration_s
        self._respect_blocks = respect_mef_blocks
        self._decode_threads = decode_threads
        self._lock = threading.Lock()
        self._grids: dict[tuple[str, float], tg.TileGrid] = {}
        self._phases: dict[tuple[str, tg.TileGrid], np.ndarray] = {}
        # Pure functions of this version's block index, asked on every read:
        # (channel, fs, tile) -> has data; (channel, grid) -> on grid.
        self._has_data: dict[tuple, bool] = {}
        self._on_grid: dict[tuple, bool] = {}
        self.closed = False
        start = time.perf_counter()
        self.signature = session_signature(path)
        self.check_cost_s = time.perf_counter() - start    # seconds one change check takes
        # With DATA_ROOTS, mef3io only ever opens the pinned files (see .pinning).
        self.pinned = pinner.pin(path) if pinner is not None else None
        #: The path mef3io opens: the pinned view, or the session itself.
        self.open_path = self.pinned.view if self.pinned is not None else path
        try:
            self._open(path, decode_threads)
        except BaseException:
            if self.pinned is not None:
                self.pinned.close()
            raise

    def _open(self, path: str, decode_threads: int) -> None:
        self.tail_marks = tail_marks(self.open_path, self.signature)

        def failed(e: Exception, password_given: bool = False) -> Exception:
            return _classify_open_error(path, e, password_given, self.open_path)
        try:
            self.reader = open_reader(self.open_path, self._password, decode_threads)
        except Exception as e:  # noqa: BLE001 - mef3io's errors are classified below
            raise failed(e, bool(self._password)) from None
        impl = getattr(self.reader, "_impl", None)
        self.encrypted = bool(impl.password_protected()) if impl is not None else False
        try:
            names = list(self.reader.channels)
        except Exception as e:  # noqa: BLE001
            self.reader.close()
            raise failed(e) from None
        if not names:
            self.reader.close()
            raise RecordingUnreadable(f"{path} is not a MEF 3.0 session: it holds no channels")
        try:
            self.channels = self._load_channels(names)
        except Exception as e:  # noqa: BLE001
            self.reader.close()
            raise failed(e) from None
        self.by_name = {c.name: c for c in self.channels}
        self.access_level = "none"
        if self.encrypted:
            info0 = self.reader.info(names[0])
            self.access_level = "level2" if info0.get("section3_available") else "level1"
        self.start_uutc = min(c.start_uutc for c in self.channels)
        self.end_uutc = max(c.end_uutc for c in self.channels)
        # Set when a re-open after a change on disk replaced this version: its
        # tiles must no longer enter the cache, and its reader closes once the
        # reads already using it (``active_reads``) are done.
        self.superseded = False
        self.active_reads = 0

    # ---- metadata ----

    def _load_channels(self, names: Sequence[str]) -> list[ChannelInfo]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = self.reader.block_envelope(list(names))
            out = []
            for name in names:
                info = self.reader.info(name)
                e = env[name]
                starts = np.asarray(e["start_uutc"], dtype=np.int64)
                ends = np.asarray(e["end_uutc"], dtype=np.int64)
                fs = float(info["sampling_frequency"])
                block = int(round((ends[0] - starts[0]) * fs / 1e6)) if starts.size else 0
                out.append(ChannelInfo(
                    name=name, fs=fs, start_uutc=int(info["start_time"]),
                    end_uutc=int(info["end_time"]), n_samples=int(info["number_of_samples"]),
                    units=str(info.get("units_description") or ""),
                    block_starts=starts, block_ends=ends, block_samples=max(0, block),
                    block_min=np.asarray(e["min"], dtype=np.float64),
                    block_max=np.asarray(e["max"], dtype=np.float64),
                    index_ordered=index_in_order(starts, ends),
                    units_factor=float(info.get("units_conversion_factor") or 1.0),
                    description=str(info.get("channel_description") or "")))
        damaged = [c.name for c in out if not c.index_ordered]
        if damaged:
            log.warning("%s: the block index of channel(s) %s is not in time order (a damaged "
                        ".tidx); they are read straight through mef3io, uncached%s", self.path,
                        ", ".join(damaged[:10]) + (" ..." if len(damaged) > 10 else ""),
                        index_findings(self.path, self._password, damaged))
        return out

    @property
    def password(self) -> str:
        return self._password

    @property
    def source(self) -> Source:
        """What a decoder opens: the path mef3io may open (the pinned view)."""
        return Source(self.open_path, self.generation, self._password)

    @property
    def key(self) -> tuple[str, int]:
        """Identity of this version of the data: the tile cache's key prefix."""
        return (self.path, self.cache_epoch)

    def channel(self, name: str) -> ChannelInfo:
        try:
            return self.by_name[name]
        except KeyError:
            raise UnknownChannel(self.unknown_channels_message([name])) from None

    def unknown_channels_message(self, names: Sequence[str]) -> str:
        shown = ", ".join(repr(n[:80]) for n in list(names)[:5])
        more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
        avail = ", ".join(c.name for c in self.channels[:20])
        if len(self.channels) > 20:
            avail += f", ... ({len(self.channels)} in all)"
        return f"unknown channel(s) {shown}{more} in {self.path}; it has: {avail}"

    def resolve_channels(self, names: Sequence[str]) -> list[ChannelInfo]:
        """Channels by name, in the order given; empty means all, in file order."""
        if not names:
            return list(self.channels)
        missing = [n for n in names if n not in self.by_name]
        if missing:
            raise UnknownChannel(self.unknown_channels_message(missing))
        return [self.by_name[n] for n in names]

    # ---- tiles ----

    def grid(self, ch: ChannelInfo, served_fs: float) -> tg.TileGrid:
        """The tile grid of ``ch`` at ``served_fs`` Hz (anchored at the channel start)."""
        key = (ch.name, served_fs)
        g = self._grids.get(key)
        if g is None:
            block = None
            if self._respect_blocks and ch.block_samples:
                # Whole MEF blocks of the channel, expressed at the served rate.
                block = max(1, int(round(ch.block_samples * served_fs / ch.fs)))
                if served_fs < ch.fs and block % 2:
                    block *= 2      # min-max pairs: two whole blocks, never a split one
            duration = self._tile_duration_s
            if served_fs < ch.fs:
                duration = tg.reduced_tile_duration(duration, served_fs, ch.fs)
            L = tg.choose_tile_samples(duration, served_fs, block)
            if served_fs < ch.fs and L % 2:
                L += 1      # min-max reduction produces pairs
            g = tg.TileGrid(ch.start_uutc, served_fs, L)
            with self._lock:
                self._grids[key] = g
        return g

    def block_phases(self, ch: ChannelInfo, grid: tg.TileGrid) -> np.ndarray:
        """Phases of ``ch``'s MEF blocks on ``grid`` (cached), see :func:`tile_grid.block_phases`."""
        key = (ch.name, grid)
        p = self._phases.get(key)
        if p is None:
            p = tg.block_phases(grid, ch.block_starts)
            with self._lock:
                self._phases[key] = p
        return p

    def on_grid(self, ch: ChannelInfo, grid: tg.TileGrid) -> bool:
        """Every block of ``ch`` starts within tolerance of ``grid``'s samples (never
        said of a channel whose index is out of order). Memoized."""
        key = (ch.name, grid)
        v = self._on_grid.get(key)
        if v is None:
            if not ch.index_ordered:
                v = False
            else:
                p = self.block_phases(ch, grid)
                v = bool(p.size == 0 or np.max(np.abs(p)) < tg.PHASE_TOLERANCE)
            self._on_grid[key] = v
        return v

    def phases_in_window(self, ch: ChannelInfo, grid: tg.TileGrid, t0: int, t1: int) -> np.ndarray:
        """Phases of the blocks of ``ch`` overlapping ``[t0, t1)``."""
        lo = int(np.searchsorted(ch.block_ends, t0, side="right"))
        hi = int(np.searchsorted(ch.block_starts, t1, side="left"))
        return self.block_phases(ch, grid)[lo:hi]

    def has_data_many(self, ch: ChannelInfo, t0s, t1s) -> list[bool]:
        """For each window ``[t0s[i], t1s[i])`` (uUTC): whether any MEF block of ``ch``
        overlaps it (with half a sample of slack). One pass over all the windows.
        A channel whose index is out of order may have data anywhere: all True."""
        if not ch.index_ordered:
            return [True] * len(t0s)
        slack = int(5e5 / ch.fs) + 1
        lo = np.searchsorted(ch.block_ends, _int64s([t - slack for t in t0s]), side="right")
        hi = np.searchsorted(ch.block_starts, _int64s([t + slack for t in t1s]), side="left")
        return (hi > lo).tolist()

    #: Entries of the has-data memo kept per recording version (then it starts over).
    HAS_DATA_MEMO_LIMIT = 500_000

    def has_data_tiles(self, ch: ChannelInfo, grid: tg.TileGrid, ks: list[int]) -> list[bool]:
        """Whether ``ch`` has data in each tile ``ks`` of ``grid`` (memoized;
        :meth:`has_data_many` over the tiles missing from the memo)."""
        memo = self._has_data
        base = (ch.name, float(grid.fs))
        flags = [memo.get(base + (k,)) for k in ks]
        if None not in flags:
            return flags
        starts, ends = tg.tile_windows(grid, tuple(ks))
        flags = self.has_data_many(ch, starts, ends)
        if len(memo) > self.HAS_DATA_MEMO_LIMIT:
            memo.clear()
        for k, f in zip(ks, flags):
            memo[base + (k,)] = f
        return flags

    def blocks_span(self, ch: ChannelInfo, t0: int, t1: int) -> int:
        """uUTC covered by the MEF blocks of ``ch`` that overlap ``[t0, t1)`` (what a
        read of that window decodes), 0 when none does."""
        lo = int(np.searchsorted(ch.block_ends, t0, side="right"))
        hi = int(np.searchsorted(ch.block_starts, t1, side="left"))
        if hi <= lo:
            return 0
        return int((ch.block_ends[lo:hi] - ch.block_starts[lo:hi]).sum())

    def block_envelope(self, ch: ChannelInfo, t0: Optional[int], t1: Optional[int]) -> dict:
        """Per-MEF-block ``start_uutc``, ``end_uutc``, ``min``, ``max`` arrays of ``ch``
        overlapping ``[t0, t1)`` (either end None: open), from the block index only:
        the whole channel from the index read at open, a window from mef3io.
        Raises mef3io's error as is."""
        if t0 is None and t1 is None and ch.block_min is not None:
            return {"start_uutc": ch.block_starts, "end_uutc": ch.block_ends,
                    "min": ch.block_min, "max": ch.block_max}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.reader.block_envelope(ch.name, t0, t1)

    def extended_by(self, new: "Recording") -> bool:
        """Whether ``new`` (a re-open of the same path) is this version with data
        appended: nothing before each channel's old end changed.

        The same block index is not enough: a session rewritten with other
        values of the same shape has it too, so the old files' bytes must be
        intact (:meth:`data_kept_on_disk`).
        """
        if not self.data_kept_on_disk():
            return False
        if [c.name for c in self.channels] != [c.name for c in new.channels[:len(self.channels)]]:
            return False
        for a in self.channels:
            b = new.by_name.get(a.name)
            if b is None or b.fs != a.fs or b.start_uutc != a.start_uutc \
                    or b.end_uutc < a.end_uutc:
                return False
            n = a.block_starts.size
            if b.block_starts.size < n or not np.array_equal(a.block_starts, b.block_starts[:n]):
                return False
            if n > 1 and not np.array_equal(a.block_ends[:n - 1], b.block_ends[:n - 1]):
                return False
        return True

    # ---- life cycle ----

    def changed_on_disk(self) -> bool:
        """True when the session's files differ from when this recording was opened."""
        start = time.perf_counter()
        try:
            return session_signature(self.path) != self.signature
        except OSError:
            return True
        finally:
            self.check_cost_s = time.perf_counter() - start

    def data_kept_on_disk(self) -> bool:
        """True when every ``.tdat`` seen at open still holds the same bytes (maybe more).

        Same inode, not shorter, and the fingerprinted bytes before the old end
        unchanged (see :func:`tail_marks`): the change since open can only be
        an append. A ``.mefd.tar`` is never appended to: always False there.
        """
        if os.path.isfile(self.path):
            return False
        for rel, (ino, size, crc) in self.tail_marks.items():
            try:
                st = os.stat(os.path.join(self.path, rel))
            except OSError:
                return False
            # The same file as at open: its bytes are read where mef3io reads them
            # (the pinned view), never through a path that may now lead elsewhere.
            if st.st_ino != ino or st.st_size < size or crc is None \
                    or _crc_before(os.path.join(self.open_path, rel), size) != crc:
                return False
        return True

    def close(self) -> None:
        """Close the shared reader, drop the password, let the pinned files go."""
        self.closed = True
        try:
            self.reader.close()
        finally:
            self._password = ""
            if self.pinned is not None:
                self.pinned.close()
