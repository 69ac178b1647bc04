"""The tile path's tunables, in one mutable object shared by its parts.

Set from :class:`~.config.Settings` at start (the ones with a setting), the
others are defaults measured on 2-core machines (benchmarks/decisions.md);
tests and benchmarks change them on a running store.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .decode_plan import RUN_MAX_BYTES, RUN_MIN_TILES


def _cores() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class StoreTuning:
    #: Parallel mef3io reads a foreground run is split into (one per core, like
    #: the decode workers; 1 disables splitting).
    split_ways: int = field(default_factory=_cores)
    #: Fewest parts before a foreground read hands parts to the workers.
    min_parallel_tiles: int = 2
    #: Windows of the request's size prefetched after / before each read.
    prefetch_ahead: int = 1
    prefetch_behind: int = 1
    #: Largest float32 window (bytes) one read may hold (MAX_READ_MB).
    max_read_bytes: int = 1 << 34
    #: See :mod:`.decode_plan`.
    run_max_bytes: int = RUN_MAX_BYTES
    run_min_tiles: int = RUN_MIN_TILES
    #: Largest window (float32 bytes) shared by concurrent readers and kept when
    #: asked for twice (:mod:`.window_share`): 128 ch x 10 s at 256 Hz is 1.3 MB,
    #: 1024 ch x 10 s 10.5 MB (benchmarks/decisions.md: 16 MB, not 4).
    window_share_bytes: int = 16 << 20
    #: Largest window a steady reader's next window is assembled ahead for.
    preassemble_max_bytes: int = 1 << 20
    #: Bytes of a long window's chunks decoding ahead of the one being sent
    #: (:mod:`.assembly`).
    decode_ahead_bytes: int = 8 << 20
    #: When one tile group holds every channel of a read, its chunks are cut from
    #: blocks of up to this many float32 bytes, each filled from the tiles at once
    #: (as far as the tiles the block's first chunk needs reach): a chunk of 1024
    #: channels holds ~256 samples of each, and filling each chunk on its own
    #: walked the 1024 tiles once per chunk (:mod:`.assembly`).
    fill_block_bytes: int = 16 << 20
    #: A cold window is decoded directly first when its tiles' MEF blocks hold at
    #: least this many times the window's blocks ...
    window_first_ratio: float = 1.5
    #: ... and it is at most this many float32 bytes (held whole).
    window_first_max_bytes: int = 256 << 20
    #: A read whose channels' unread block indexes hold more blocks than this is
    #: answered straight from mef3io, the indexes read in the background.
    direct_first_index_blocks: int = 30_000
    #: Seconds a read's prefetch waits after its last chunk (:mod:`.prefetch`).
    prefetch_grace_s: float = 0.003
    #: Seconds a window's prefetch plan stays fresh.
    planned_fresh_s: float = 2.0
    #: Windows prefetched beyond ``prefetch_ahead`` for a steady reader.
    steady_extra_ahead: int = 2
