"""Where a channel has data: its contiguous runs of samples and the gaps between.

Built from metadata and the MEF block index only (nothing is decoded), so a
viewer can shade gaps before it reads a sample. A run is a maximal sequence of
MEF blocks each starting where the previous one ended, within half a sample
period; a gap is the time between two runs.

Units: times uUTC (runs and gaps are half-open ``[start, end)``), rates Hz,
``start_sample`` the channel-wide index of a run's first sample (as MEF
numbers samples across segments).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
import numpy as np


@dataclass
class ChannelRuns:
    """The contiguous runs of one channel; the arrays are parallel, one entry per run."""

    name: str
    fs: float
    start_uutc: np.ndarray          # int64, first sample of each run
    end_uutc: np.ndarray            # int64, just past each run's last sample
    start_sample: np.ndarray        # int64, channel-wide index of each run's first sample
    number_of_samples: np.ndarray   # int64

    def __len__(self) -> int:
        return int(self.start_uutc.size)

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """``(start_uutc, end_uutc)`` of each gap: from one run's end to the next one's start."""
        return list(zip(self.end_uutc[:-1].tolist(), self.start_uutc[1:].tolist()))


def merge_blocks(name: str, fs: float, starts, ends, start_samples, counts) -> ChannelRuns:
    """Merge a channel's blocks into runs.

    ``starts``/``ends`` (uUTC, half-open) and ``start_samples``/``counts``
    describe each MEF block, in time order. A block joins the previous run
    when it starts no more than half a sample period after that run's end.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    start_samples = np.asarray(start_samples, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ChannelRuns(name, fs, empty, empty, empty, empty)
    half_us = 5e5 / fs
    breaks = np.nonzero((starts[1:] - ends[:-1]) > half_us)[0] + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks - 1, [starts.size - 1]))
    return ChannelRuns(name, fs, starts[first], ends[last], start_samples[first],
                       np.add.reduceat(counts, first))


def _block_table(reader, ch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, start_samples, counts) of each block of ``ch`` (a ChannelInfo):
    times from mef3io's block envelope of the whole channel, sample numbers from
    its ``toc`` (both the ``.tidx`` files, nothing decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = reader.block_envelope(ch.name)
    starts = np.asarray(env["start_uutc"], dtype=np.int64)
    ends = np.asarray(env["end_uutc"], dtype=np.int64)
    toc = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            toc = reader.toc(ch.name)
    except Exception:  # noqa: BLE001 - fall back to the times of the loaded index
        toc = None
    if toc is not None and len(toc) == starts.size:
        start_samples = np.fromiter((b["start_sample"] for b in toc), np.int64, len(toc))
        counts = np.fromiter((b["number_of_samples"] for b in toc), np.int64, len(toc))
    else:
        counts = np.rint((ends - starts) * ch.fs / 1e6).astype(np.int64)
        start_samples = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return starts, ends, start_samples, counts


def channel_runs(reader, ch) -> ChannelRuns:
    """The runs of ``ch`` (a :class:`~.recordings.ChannelInfo`) of an open session.

    Block times and sample numbers come from the ``.tidx`` files (nothing
    decoded), read for each call.
    """
    starts, ends, start_samples, counts = _block_table(reader, ch)
    return merge_blocks(ch.name, ch.fs, starts, ends, start_samples, counts)


def runs_slices(runs: ChannelRuns, per_message: int) -> list[tuple[int, int]]:
    """``(i0, i1)`` slices of at most ``per_message`` runs; one empty slice for no runs."""
    n = len(runs)
    return [(i, min(n, i + per_message)) for i in range(0, max(n, 1), per_message)]

