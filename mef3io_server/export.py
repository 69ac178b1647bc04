"""Writing a read window to disk piece by piece, in bounded memory (``mef3io-server get``).

The window is read in pieces that join exactly (:mod:`.window_pieces`) and
each piece goes to disk before the next is read, so memory holds one piece
whatever the window's length. Formats, chosen by the output's suffix:

* ``.npy``: the array (channels, samples), float32, C order, NaN in gaps,
  written through ``numpy.lib.format.open_memmap``.
* ``.npz``: ``data`` (channels, samples) float32 stored in Fortran order (so
  time pieces are written one after the other straight into the zip; ``np.load``
  gives the same array), ``times_uutc`` (samples,) int64 (each sample's time
  rounded to the microsecond), ``channel_names`` (str), ``fs`` (Hz),
  ``start_uutc`` and ``end_uutc`` (the half-open window). Uncompressed, like
  ``numpy.savez``; members over 4 GiB use ZIP64.
* ``.csv``: a header ``time_uutc,<channel>,...`` then one row per sample; values
  with 9 significant digits (float32 round-trips exactly), ``nan`` in gaps.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .window_pieces import Piece, sample_times

FORMATS = (".npy", ".npz", ".csv")


class _Writer:
    def __init__(self, path: Path, names: Sequence[str], n_samples: int, fs: float,
                 start_uutc: int, end_uutc: int):
        self.path = path
        self.names = list(names)
        self.n = n_samples
        self.fs = fs
        self.start = start_uutc
        self.end = end_uutc

    def write(self, piece: Piece, arr: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Release the file after a failure (it is then removed)."""
        self.close()


class NpyWriter(_Writer):
    def __init__(self, *a):
        super().__init__(*a)
        self.mm = np.lib.format.open_memmap(str(self.path), mode="w+", dtype=np.float32,
                                            shape=(len(self.names), self.n))

    def write(self, piece, arr):
        self.mm[:, piece.j0:piece.j1] = arr
        self.mm.flush()

    def close(self):
        self.mm.flush()
        del self.mm


class NpzWriter(_Writer):
    def __init__(self, *a):
        super().__init__(*a)
        self.zf = zipfile.ZipFile(str(self.path), "w", zipfile.ZIP_STORED, allowZip64=True)
        self.member = self.zf.open("data.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(
            self.member, {"descr": np.dtype(np.float32).str, "fortran_order": True,
                          "shape": (len(self.names), self.n)})

    def write(self, piece, arr):
        # Fortran order of (channels, samples) = C order of its transpose.
        self.member.write(np.ascontiguousarray(arr.T, dtype=np.float32).tobytes())

    def _small(self, name: str, value) -> None:
        with self.zf.open(name + ".npy", "w") as f:
            np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)

    def close(self):
        self.member.close()
        with self.zf.open("times_uutc.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.dtype(np.int64).str, "fortran_order": False, "shape": (self.n,)})
            step = 1 << 20
            for j in range(0, self.n, step):
                f.write(sample_times(self.start, j, min(self.n, j + step), self.fs)
                        .astype("<i8").tobytes())
        self._small("channel_names", np.array(self.names, dtype=str))
        self._small("fs", np.float64(self.fs))
        self._small("start_uutc", np.int64(self.start))
        self._small("end_uutc", np.int64(self.end))
        self.zf.close()

    def abort(self):
        self.member.close()
        self.zf.close()


class CsvWriter(_Writer):
    def __init__(self, *a):
        super().__init__(*a)
        self.f = open(self.path, "w", newline="")
        self.f.write(",".join(["time_uutc", *self.names]) + "\n")
        self.fmt = ",".join(["%d"] + ["%.9g"] * len(self.names))

    def write(self, piece, arr):
        t = sample_times(self.start, piece.j0, piece.j1, self.fs)
        # float64 holds every uUTC of this era (< 2**53) exactly, so "%d" prints it exactly.
        rows = np.column_stack([t.astype(np.float64), arr.T.astype(np.float64)])
        np.savetxt(self.f, rows, fmt=self.fmt)

    def close(self):
        self.f.close()


_WRITERS = {".npy": NpyWriter, ".npz": NpzWriter, ".csv": CsvWriter}


def export_window(read: Callable[[Piece], np.ndarray], pieces: Iterable[Piece], out,
                  names: Sequence[str], fs: float, start_uutc: int, end_uutc: int,
                  progress: Optional[Callable[[int], None]] = None,
                  n_samples: Optional[int] = None) -> Path:
    """Write the pieces' reads to ``out`` (format by suffix); returns the path.

    ``read(piece)`` returns the piece's (channels, samples) float32 array;
    ``progress(n)`` is told the samples written after each piece. ``pieces``
    may be made one at a time (:func:`~.window_pieces.iter_pieces`) when
    ``n_samples``, the window's total, is given. On any failure the partial
    file is removed and the error re-raised.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in _WRITERS:
        raise ValueError(f"cannot write {out.name!r}: the output must end in "
                         f"{', '.join(FORMATS)}")
    if n_samples is None:
        pieces = list(pieces)
        n_samples = pieces[-1].j1 if pieces else 0
    n = int(n_samples)
    writer = None
    try:
        writer = _WRITERS[suffix](out, names, n, fs, start_uutc, end_uutc)
        for piece in pieces:
            arr = read(piece)
            if arr.shape != (len(names), piece.n_samples):
                raise RuntimeError(f"the server sent shape {arr.shape} for [{piece.t0}, "
                                   f"{piece.t1}), expected {(len(names), piece.n_samples)}")
            writer.write(piece, arr)
            if progress is not None:
                progress(piece.n_samples)
        writer.close()
    except BaseException:
        if writer is not None:
            try:
                writer.abort()
            except Exception:
                pass
        if out.exists():
            os.unlink(out)
        raise
    return out
