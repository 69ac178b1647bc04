"""The decode interface: what a decoder is asked, and the one call into mef3io.

Every decode returns a ``float32`` array of shape ``(len(channels), n)`` with
``n = round_half_up((t1 - t0) * fs / 1e6)``, exactly
``mef3io.Reader.read(channels, t0, t1, dtype="float32")``; with
``dtype="int32"``, the stored sample values on the same grid instead (see
:func:`read_window`). Lanes: ``"fg"`` for reads a client waits on, ``"bg"``
for prefetch (:class:`~mef3io_server.server.inflight.Lane`).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import Cancelled

log = logging.getLogger("mef3io_server.decode")


LANES = ("fg", "bg")


@dataclass(frozen=True)
class Source:
    """What a decoder needs to open a recording on its own.

    ``generation`` changes when the files change on disk, so a worker never
    reuses a reader opened on an older version. The password lives only in
    memory, for opening readers, and is excluded from ``repr``.
    """

    path: str
    generation: int = 0
    password: str = ""

    def __repr__(self) -> str:  # never print a password
        return f"Source(path={self.path!r}, generation={self.generation})"


def load_mef3io() -> None:
    """Import mef3io now (tens of ms), so that the server's first open does not."""
    import mef3io  # noqa: F401


def open_reader(path: str, password: str = "", n_threads: int = 0):
    """Open a ``mef3io.Reader`` quietly (declaration warnings are about other readers)."""
    import mef3io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mef3io.Reader(path, password=password or "", n_threads=n_threads,
                             warn_declarations=False)


#: What a raw (``dtype="int32"``) read holds where a channel has no data: MEF's
#: NaN sentinel for si4 samples.
RAW_GAP = np.iinfo(np.int32).min

#: Sample types a decode can return.
DTYPES = ("float32", "int32")


def cancel_token():
    """A new one-shot cancel token for one read (``mef3io.CancelToken``): a front end
    calls its ``cancel()`` when the client goes away; ``cancelled`` says whether
    it did. Decodes given it stop between MEF blocks (:class:`.errors.Cancelled`)."""
    import mef3io

    return mef3io.CancelToken()


def read_window(reader, channels: Sequence[str], t0: int, t1: int,
                dtype: str = "float32", cancel=None) -> np.ndarray:
    """``reader.read(channels, t0, t1, dtype="float32")`` with warnings silenced.

    ``dtype="int32"``: the stored sample values instead, as
    ``reader.read_raw`` returns them (one channel per call, on the same grid
    as :meth:`read`), :data:`RAW_GAP` where ``valid`` is 0. ``cancel``: a
    :func:`cancel_token`; a cancelled read raises :class:`.errors.Cancelled`.
    """
    if cancel is None:
        return _read_window(reader, channels, t0, t1, dtype, None)
    import mef3io

    try:
        return _read_window(reader, channels, t0, t1, dtype, cancel)
    except mef3io.Cancelled:
        raise Cancelled("the read was cancelled") from None


def _read_window(reader, channels, t0, t1, dtype, cancel) -> np.ndarray:
    kw = {} if cancel is None else {"cancel": cancel}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "int32":
            out = np.empty((len(channels), 0), dtype=np.int32)
            for i, name in enumerate(channels):
                raw = reader.read_raw(name, int(t0), int(t1), **kw)
                if i == 0:
                    out = np.empty((len(channels), raw["samples"].size), dtype=np.int32)
                out[i] = raw["samples"]
                out[i][raw["valid"] == 0] = RAW_GAP
            return out
        out = reader.read(list(channels), int(t0), int(t1), dtype="float32", **kw)
    return np.asarray(out, dtype=np.float32).reshape(len(channels), -1)


class Decoder:
    """The decode interface: submit a window, get a future of its samples."""

    kind = "abstract"

    def submit(self, source: Source, channels: Sequence[str], t0: int, t1: int,
               lane: str = "fg", dtype: str = "float32",
               cancel=None) -> "cf.Future[np.ndarray]":
        raise NotImplementedError

    def decode(self, source: Source, channels: Sequence[str], t0: int, t1: int,
               lane: str = "fg", dtype: str = "float32", cancel=None) -> np.ndarray:
        """Decode in the calling thread when cheap, else on the lane's workers; waits.

        ``dtype``: ``"float32"`` (values) or ``"int32"`` (stored samples), see
        :func:`read_window`. ``cancel``: a :func:`cancel_token` that stops the
        decode (:class:`.errors.Cancelled`) where the decoder can."""
        return self.submit(source, channels, t0, t1, lane, dtype, cancel).result()

    def forget(self, source: Source) -> None:
        """Release any reader held for ``source`` (its file was closed or changed)."""

    def urgent(self):
        """Context manager around a foreground wait for a background decode (see
        :mod:`.demand_gate`); decoders without a gate need nothing."""
        return contextlib.nullcontext()

    def foreground_decodes(self) -> int:
        """Foreground decodes running now (0 when the decoder does not count them)."""
        return 0

    def warm_up(self) -> None:
        """Start workers ahead of the first read."""

    def close(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict:
        return {}


