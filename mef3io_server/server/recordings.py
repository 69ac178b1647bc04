"""Recordings: one open MEF 3.0 session, its metadata, block index and tile grids.

A :class:`Recording` is opened once per file, however many clients read it.
It holds the shared mef3io reader (used by the thread decoder), the channel
metadata a ``FileInfo`` answers with (from the metadata files only: opening
costs the same for an hour as for a month), the channels' block index, paged
in as reads need it (:class:`~.block_index.BlockIndex`), and one
:class:`~mef3io_server.server.tile_grid.TileGrid` per (channel, served rate).

Words: a *recording* is what MEF 3.0 calls a session (a ``.mefd`` folder
on disk); in this code *session* means only a client's open of a recording
(:mod:`.sessions`, ``SESSION_TTL_S``, ``MAX_SESSIONS``), except in MEF's
"session level" of records.

Times are uUTC, rates Hz. A channel's span is ``[start_uutc, end_uutc)`` as
mef3io reports it.
"""
from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Optional, Sequence

import logging

import numpy as np

from . import tile_grid as tg
from .block_index import BlockIndex, IndexCache, Placement
from .fingerprints import marks_intact, recording_signature, tail_marks
from .decode import Source, open_reader
from .pinning import Pinner
from .errors import PasswordRequired, RecordingNotFound, RecordingUnreadable, UnknownChannel

log = logging.getLogger("mef3io_server.recordings")


@dataclass
class ChannelInfo:
    """Metadata of one channel (rates in Hz, times in uUTC), as mef3io's ``info``
    reads it from the metadata files (its block index is in :class:`BlockIndex`)."""

    name: str
    fs: float
    start_uutc: int
    end_uutc: int
    n_samples: int
    units: str
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


def index_sizes(signature: tuple, names: Sequence[str]) -> dict[str, int]:
    """Blocks in each channel's ``.tidx`` files, from their sizes in ``signature``
    (a 1024-byte header, then 56 bytes per block): known without reading them."""
    wanted = {f"{n}.timd/": n for n in names}
    out = dict.fromkeys(names, 0)
    for rel, size, _mtime, _ino in signature:
        if rel.endswith(".tidx"):
            n = wanted.get(rel[:rel.find("/") + 1])
            if n is not None:
                out[n] += max(0, (size - 1024) // 56)
    return out


class Recording:
    """An open recording: one MEF 3.0 session on disk (see module docstring).

    Parameters
    ----------
    path : str
        Resolved path of the ``.mefd`` directory (or ``.mefd.tar``).
    password : str
        The password that opened it ("" for none). Kept in memory only while
        the recording is open, because decode workers and re-opens after a
        change on disk need it; never logged or returned.
    decode_threads : int
        mef3io threads of the shared reader while it opens (0: mef3io's count).
    read_threads : int, optional
        Its threads for the reads after the open (None: as while opening).
    index_cache : IndexCache, optional
        Where the block index's pages are kept (the engine's, shared by every
        recording); a private one of ``DEFAULT_INDEX_CACHE_BYTES`` when None.
    """

    DEFAULT_INDEX_CACHE_BYTES = 64 * 2**20

    def __init__(self, path: str, password: str = "", *, generation: int = 0,
                 cache_epoch: Optional[int] = None, decode_threads: int = 0,
                 read_threads: Optional[int] = None,
                 tile_duration_s: float = 10.0, respect_mef_blocks: bool = False,
                 pinner: Optional[Pinner] = None, index_cache: Optional[IndexCache] = None):
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
        self._read_threads = read_threads
        self._lock = threading.Lock()
        self._grids: dict[tuple[str, float], tg.TileGrid] = {}
        self._index_cache = index_cache if index_cache is not None \
            else IndexCache(self.DEFAULT_INDEX_CACHE_BYTES)
        self.closed = False
        start = time.perf_counter()
        signature = recording_signature(path)
        self.check_cost_s = time.perf_counter() - start    # seconds one change check takes
        # Only a digest is kept: a change check compares the next one with it.
        self.signature_digest = hash(signature)
        self._signature: Optional[tuple] = signature       # until the open is done
        # With DATA_ROOTS, mef3io only ever opens the pinned files (see .pinning).
        self.pinned = pinner.pin(path) if pinner is not None else None
        #: The path mef3io opens: the pinned view, or the recording itself.
        self.open_path = self.pinned.view if self.pinned is not None else path
        try:
            self._open(path, decode_threads)
        except BaseException:
            if self.pinned is not None:
                self.pinned.close()
            raise

    def _open(self, path: str, decode_threads: int) -> None:
        signature = self._signature
        self._open_reader(path, decode_threads)
        # The files' marks are read after the open, on a thread: at the sizes
        # the signature (taken before mef3io read anything) saw, so an append
        # meanwhile leaves them as they were, and the open does not wait for
        # reading a few KiB of every data and index file (benchmarks/decisions.md).
        self._marks: Future = Future()
        threading.Thread(target=self._read_marks, args=(signature,), name="tail-marks",
                         daemon=True).start()

    def _read_marks(self, signature: tuple) -> None:
        try:
            self._marks.set_result(tail_marks(self.open_path, signature, self._pinned_files))
        except BaseException as e:  # noqa: BLE001 - said by data_kept_on_disk
            log.debug("reading the tail marks of %s failed: %s", self.path, e)
            self._marks.set_result(None)

    @property
    def tail_marks(self) -> Optional[dict]:
        """The files' tail marks taken at open (:func:`.fingerprints.tail_marks`;
        waits while they are being read); None when they could not be read."""
        return self._marks.result()

    def _open_reader(self, path: str, decode_threads: int) -> None:
        def failed(e: Exception, password_given: bool = False) -> Exception:
            return _classify_open_error(path, e, password_given, self.open_path)
        try:
            self.reader = open_reader(self.open_path, self._password, decode_threads)
        except Exception as e:  # noqa: BLE001 - mef3io's errors are classified below
            raise failed(e, bool(self._password)) from None
        if self._read_threads is not None:
            self.reader.n_threads = self._read_threads
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
        #: The channels' block index, paged in as reads need it.
        self.index = BlockIndex(self._load_index, self.channels, self.start_uutc,
                                self._index_cache, on_disorder=self._index_disordered)
        self.index.sizes = index_sizes(self._signature, [c.name for c in self.channels])
        self._signature = None
        # Set when a re-open after a change on disk replaced this version: its
        # tiles must no longer enter the cache, and its reader closes once the
        # reads already using it (``active_reads``) are done.
        self.superseded = False
        self.active_reads = 0

    # ---- metadata ----

    def _load_channels(self, names: Sequence[str]) -> list[ChannelInfo]:
        """Each channel's metadata, from mef3io's ``info`` (metadata files only)."""
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                info = self.reader.info(name)
                out.append(ChannelInfo(
                    name=name, fs=float(info["sampling_frequency"]),
                    start_uutc=int(info["start_time"]), end_uutc=int(info["end_time"]),
                    n_samples=int(info["number_of_samples"]),
                    units=str(info.get("units_description") or ""),
                    units_factor=float(info.get("units_conversion_factor") or 1.0),
                    description=str(info.get("channel_description") or "")))
        return out

    def _load_index(self, names: list, t0: int, t1: int) -> dict:
        """mef3io's block envelope of ``names`` over ``[t0, t1)`` (the index's loader)."""
        return self.reader.block_envelope(list(names), t0, t1)

    def _index_disordered(self, names: list) -> None:
        log.warning("%s: the block index of channel(s) %s is not in time order (a damaged "
                    ".tidx); they are read straight through mef3io, uncached%s", self.path,
                    ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
                    index_findings(self.path, self._password, names))

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
            first = self.index.first_block_samples(ch) if self._respect_blocks else 0
            if first:
                # Whole MEF blocks of the channel, expressed at the served rate.
                block = max(1, int(round(first * served_fs / ch.fs)))
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

    def placement(self, ch: ChannelInfo, grid: tg.TileGrid, t0: int, t1: int) -> Placement:
        """Where the blocks of ``ch`` over ``[t0, t1)`` uUTC sit on ``grid`` (see
        :meth:`.block_index.BlockIndex.placement`)."""
        return self.index.placement(ch, grid, t0, t1)

    def placements(self, chans: Sequence[ChannelInfo], grid: tg.TileGrid, t0: int,
                   t1: int) -> list[Placement]:
        """:meth:`placement` of each of ``chans``, in one pass."""
        return self.index.placements(chans, grid, t0, t1)

    def unread_index_blocks(self, chans: Sequence[ChannelInfo]) -> int:
        """Blocks of the block indexes of ``chans`` not read yet (see
        :meth:`.block_index.BlockIndex.unread_blocks`)."""
        return self.index.unread_blocks(chans)

    def phases_in_window(self, ch: ChannelInfo, grid: tg.TileGrid, t0: int, t1: int) -> np.ndarray:
        """Phases of the blocks of ``ch`` overlapping ``[t0, t1)``."""
        return self.index.phases_in_window(ch, grid, t0, t1)

    def has_data_many(self, ch: ChannelInfo, t0s, t1s) -> list[bool]:
        """For each window ``[t0s[i], t1s[i])`` (uUTC): whether any MEF block of ``ch``
        overlaps it (with half a sample of slack). A channel whose index is out of
        order may have data anywhere: all True."""
        return self.index.has_data_many(ch, t0s, t1s)

    def has_data_tiles(self, chans: Sequence[ChannelInfo], grid: tg.TileGrid,
                       ks: list[int]) -> list[list[bool]]:
        """For each of ``chans`` (all on ``grid``), whether it has data in each tile
        ``ks`` (memoized per tile, see :meth:`.block_index.BlockIndex.has_data_tiles`)."""
        return self.index.has_data_tiles(chans, grid, ks)

    def blocks_span(self, ch: ChannelInfo, t0: int, t1: int) -> int:
        """uUTC covered by the MEF blocks of ``ch`` that overlap ``[t0, t1)`` (what a
        read of that window decodes), 0 when none does."""
        return self.index.blocks_span(ch, t0, t1)

    def block_envelope(self, ch: ChannelInfo, t0: Optional[int], t1: Optional[int]) -> dict:
        """Per-MEF-block ``start_uutc``, ``end_uutc``, ``min``, ``max`` arrays of ``ch``
        overlapping ``[t0, t1)`` (either end None: open), from the block index only
        (nothing decoded). Raises mef3io's error as is."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.reader.block_envelope(ch.name, t0, t1)

    def extended_by(self, new: "Recording") -> bool:
        """Whether ``new`` (a re-open of the same path) is this version with data
        appended: the same channels (and maybe more), each at the same rate and
        start, ending no earlier, and the bytes of every data and index file seen
        at open intact (:meth:`data_kept_on_disk`): a recording rewritten with other
        values of the same shape changes those bytes."""
        if not self.data_kept_on_disk():
            return False
        if [c.name for c in self.channels] != [c.name for c in new.channels[:len(self.channels)]]:
            return False
        for a in self.channels:
            b = new.by_name.get(a.name)
            if b is None or b.fs != a.fs or b.start_uutc != a.start_uutc \
                    or b.end_uutc < a.end_uutc or b.n_samples < a.n_samples:
                return False
        return True

    # ---- life cycle ----

    def changed_on_disk(self) -> bool:
        """True when the recording's files differ from when this recording was opened."""
        start = time.perf_counter()
        try:
            return hash(recording_signature(self.path)) != self.signature_digest
        except OSError:
            return True
        finally:
            self.check_cost_s = time.perf_counter() - start

    def data_kept_on_disk(self) -> bool:
        """True when every ``.tdat`` and ``.tidx`` seen at open still holds the same
        bytes (maybe more): the change since open can only be an append (see
        :mod:`.fingerprints`). A ``.mefd.tar`` is never appended to: always False."""
        marks = self.tail_marks
        if marks is None:
            return False
        return marks_intact(self.path, self.open_path, marks, self._pinned_files)

    @property
    def _pinned_files(self) -> Optional[dict]:
        return self.pinned.files_by_path if self.pinned is not None else None

    def close(self) -> None:
        """Close the shared reader, drop the password, let the pinned files go."""
        self.closed = True
        self.index.forget()
        marks = getattr(self, "_marks", None)
        if marks is not None:
            marks.result()          # (they read through the pinned descriptors)
        try:
            self.reader.close()
        finally:
            self._password = ""
            if self.pinned is not None:
                self.pinned.close()
