"""The keys of the tile cache: what each cached array is, in one place.

Every key is a plain tuple (tuple hashing and equality are what the cache's
hot path costs) whose first element is the recording version's key
(:attr:`.recordings.Recording.key`, ``(path, cache_epoch)``), as the published
:class:`~.tile_cache.TileCache` expects of ``key[0]``: closing, appending to or
replacing a recording evicts by it.

* a tile: ``(recording, channel, fs, k)`` -- tile ``k`` of a channel's grid at
  ``fs`` Hz (:mod:`.tile_fetch`);
* a shared window: ``(recording, ("window", *channels), fs, t0, t1)``
  (:mod:`.window_share`);
* an ``n_points`` answer: ``(recording, ("points", *channels), fs, t0, t1, n)``
  (:mod:`.points`).

Times uUTC, rates Hz (float).
"""
from __future__ import annotations

from typing import Sequence


def tile_key(recording: tuple, channel: str, fs: float, k: int) -> tuple:
    return (recording, channel, fs, k)


def is_tile_key(key: tuple) -> bool:
    return isinstance(key[1], str)


def window_key(recording: tuple, channels: Sequence[str], fs: float, t0: int, t1: int) -> tuple:
    return (recording, ("window",) + tuple(channels), float(fs), int(t0), int(t1))


def points_key(recording: tuple, channels: Sequence[str], fs: float, t0: int, t1: int,
               n_points: int) -> tuple:
    return (recording, ("points",) + tuple(channels), float(fs), int(t0), int(t1),
            int(n_points))
