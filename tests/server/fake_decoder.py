"""A fake decoder and recording for unit tests of the tile path (no mef3io, no files).

:class:`FakeDecoder` answers a read of ``channels`` over ``[t0, t1)`` uUTC with
synthetic samples: channel ``c`` (index ``i`` in :data:`FakeRecording`'s
channels) at grid sample ``g`` (on the channel's own grid anchored at the
recording's start) has the value ``1000 * i + g`` -- so a test knows every
sample's value and can tell a mis-sliced tile. It counts calls per lane, can
refuse windows overlapping a "damaged" time, can hold reads until told, and
stops a read whose cancel token fired (before decoding, as mef3io between blocks).
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from dataclasses import dataclass, field

import numpy as np

from mef3io_server.server import tile_grid as tg
from mef3io_server.server.block_index import Placement
from mef3io_server.server.decode import Decoder, Source
from mef3io_server.server.errors import Cancelled, DecodeFailed

T0 = 1_600_000_000_000_000
S = 1_000_000


@dataclass
class FakeChannel:
    name: str
    fs: float
    index_ordered: bool = True


@dataclass
class FakeRecording:
    """The part of :class:`~mef3io_server.server.recordings.Recording` the tile path uses:
    channels with data over ``[start_uutc, end_uutc)`` (minus ``gaps``), grids of
    ``tile_samples`` anchored at the start, every block on the grid."""

    channels: list
    seconds: float = 100.0
    tile_samples: int = 256
    gaps: list = field(default_factory=list)       # [(t0, t1)] uUTC without data
    path: str = "/fake.mefd"
    generation: int = 1
    closed: bool = False
    superseded: bool = False

    def __post_init__(self):
        self.start_uutc = T0
        self.end_uutc = T0 + int(self.seconds * S)
        self.by_name = {c.name: c for c in self.channels}
        self.has_data_calls = 0

    @property
    def key(self):
        return (self.path, self.generation)

    @property
    def source(self):
        return Source(self.path, self.generation)

    def channel(self, name):
        return self.by_name[name]

    def grid(self, ch, served_fs):
        return tg.TileGrid(self.start_uutc, served_fs, self.tile_samples)

    def placement(self, ch, grid, t0, t1):
        return Placement.ON_GRID if ch.index_ordered else Placement.UNORDERED

    def unread_index_blocks(self, chans):
        return 0

    def placements(self, chans, grid, t0, t1):
        return [self.placement(ch, grid, t0, t1) for ch in chans]

    def phases_in_window(self, ch, grid, t0, t1):
        return np.zeros(0)

    def blocks_span(self, ch, t0, t1):
        return max(0, min(t1, self.end_uutc) - max(t0, self.start_uutc))

    def has_data_tiles(self, chans, grid, ks):
        self.has_data_calls += 1
        out = []
        for k in ks:
            a, b = grid.tile_window(k)
            inside = a < self.end_uutc and b > self.start_uutc
            gap = any(g0 <= a and b <= g1 for g0, g1 in self.gaps)
            out.append(inside and not gap)
        return [list(out) for _ in chans]


class FakeDecoder(Decoder):
    """Synthetic samples (see module docstring); ``reads`` lists every read made."""

    kind = "fake"

    def __init__(self, rec: FakeRecording, damaged: tuple = ()):
        self.rec = rec
        self.damaged = list(damaged)         # uUTC times a read must not cover
        self.reads: list[tuple] = []         # (channels, t0, t1, lane)
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()                      # clear() to make reads wait
        self.urgent_waits = 0
        self.cancelled_reads = 0
        self._pool = cf.ThreadPoolExecutor(4, thread_name_prefix="fake-decode")

    def samples(self, channels, t0, t1) -> np.ndarray:
        rows = []
        for name in channels:
            ch = self.rec.by_name[name]
            i = self.rec.channels.index(ch)
            g0 = tg.round_half_up(tg.TileGrid(self.rec.start_uutc, ch.fs, 1).grid_position(t0))
            n = tg.samples_in_window(t0, t1, ch.fs)
            rows.append(1000.0 * i + np.arange(g0, g0 + n, dtype=np.float64))
        return np.asarray(rows, dtype=np.float32).reshape(len(channels), -1)

    def decode(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        self.hold.wait(10)
        if cancel is not None and cancel.cancelled:
            with self.lock:
                self.cancelled_reads += 1
            raise Cancelled("the read was cancelled")
        with self.lock:
            self.reads.append((tuple(channels), t0, t1, str(lane)))
        if any(t0 <= d < t1 for d in self.damaged):
            raise DecodeFailed(f"decoding failed: CrcError: damaged block at {self.damaged}")
        return self.samples(channels, t0, t1)

    def submit(self, source, channels, t0, t1, lane="fg", dtype="float32", cancel=None):
        return self._pool.submit(self.decode, source, channels, t0, t1, lane, dtype, cancel)

    def urgent(self):
        with self.lock:
            self.urgent_waits += 1
        return super().urgent()

    def count(self, lane=None) -> int:
        with self.lock:
            return sum(1 for r in self.reads if lane is None or r[3] == lane)

    def close(self) -> None:
        self.hold.set()
        self._pool.shutdown(wait=True)
