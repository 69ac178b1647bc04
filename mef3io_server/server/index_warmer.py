"""Index warm-up: the block index of a recording just opened, read in the background.

Right after an open, :class:`IndexWarmer` reads the channel summaries of the
recording's block index (:meth:`.block_index.BlockIndex.warm`) on a thread of
its own, one recording at a time, within half of ``INDEX_CACHE_MB``, so the
first reads find them ready; the open never waits for it. Recordings whose
index is big (more than :attr:`IndexWarmer.MAX_BLOCKS` blocks, known from the
``.tidx`` sizes) are not warmed: their first reads go straight to mef3io (see
:mod:`.assembly`) while their index loads.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
from typing import Optional

from .block_index import BlockIndex, IndexCache

log = logging.getLogger("mef3io_server.block_index")


class IndexWarmer:
    """Reads the channel summaries of recordings just opened, one recording at a
    time, on a thread of its own (see module docstring), within half of the cache."""

    #: Recordings whose indexes hold more blocks than this are not warmed: reading
    #: them would take the cores from the first reads (which read such spans
    #: straight from mef3io, see .assembly).
    MAX_BLOCKS = 30_000

    def __init__(self, cache: IndexCache):
        self.cache = cache
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="index-warm")

    def warm(self, index: BlockIndex) -> Optional[cf.Future]:
        """Start warming ``index`` (None when nothing may be kept, it is too big to
        warm, or this is closed)."""
        if self.cache.max_bytes <= 0 or sum(index.sizes.values()) > self.MAX_BLOCKS:
            return None
        budget = self.cache.max_bytes // 2

        def run() -> int:
            try:
                return index.warm(budget)
            except Exception:  # noqa: BLE001 - a closed recording, or a read will say
                log.debug("warming a block index failed", exc_info=True)
                return 0
        try:
            return self._pool.submit(run)
        except RuntimeError:        # closed
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
