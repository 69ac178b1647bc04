"""The synchronous Python client of mef3io-server.

Example::

    from mef3io_server.client import Mef3Client

    with Mef3Client("localhost:50051") as client:
        info = client.open_file("/data/patient1.mefd")
        res = client.get_signal_range("/data/patient1.mefd", ["Ch1", "Ch2"],
                                      "+10m", "+10m10s")    # 10 s from 10 minutes in
        print(res["shape"], res["fs"])

Every read is self-contained (file, channels, ``[start_uutc, end_uutc)``).
The client sends its id (``client_id``, random unless given) with every call,
so the server keeps one session per client and file. The client shares its
state and every operation with the asyncio client
:class:`mef3io_server.aio.AsyncMef3Client` (:mod:`mef3io_server.client_base`);
it differs from it only in sending: blocking calls. Its answers are those of
the published mef3io-server 3.1.0 client, so code written for that keeps
working; ``raise_errors=True`` raises what those answers report as
exceptions of :mod:`mef3io_server.exceptions` instead.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import grpc

from .client_base import BaseClient, Call, Done, Operation, Unary, make_channel
from .reopen import Pause
from .exceptions import (CallFailed, DeadlineExceeded, InvalidArgument, Mef3Error,
                         NotAuthenticated, OpenFailed, ReadFailed, RequestRefused,
                         ServerUnreachable, ServerUnsupported, WindowOutsideData, WindowWarning)

__all__ = ["Mef3Client", "make_channel", "CallFailed", "DeadlineExceeded", "InvalidArgument",
           "Mef3Error", "NotAuthenticated", "OpenFailed", "ReadFailed", "RequestRefused",
           "ServerUnreachable", "ServerUnsupported", "WindowOutsideData", "WindowWarning"]

Time = object   # uUTC int, ISO 8601 text, datetime, numpy.datetime64, "+10m", timedelta


class Mef3Client(BaseClient):
    """Client for a mef3io-server (or the published mef3io-server 3.1.0).

    Parameters
    ----------
    address : str, optional
        ``host:port`` of the server (a host alone gets port 50051). Default:
        ``$MEF3IO_ADDRESS``, else ``localhost:50051``.
    client_id : str, optional
        This client's id, 1 to 128 printable characters; ``None`` makes a
        random one, so each client object has its own sessions.
    root_certificates : str or bytes, optional
        PEM CA certificate(s) (a path or the bytes): use TLS.
    private_key, certificate_chain : str or bytes, optional
        This client's key and certificate for mutual TLS.
    token : str, optional
        Bearer token sent as ``authorization: Bearer <token>``.
    timeout : float, optional
        Deadline of each call in seconds (``None``: no deadline).
    raise_errors : bool
        ``False`` (default): answers as the published 3.1.0 client gives them
        (``open_file`` returns ``file_opened: False``, ``get_signal_range``
        ``array: None``, each with ``error_message``). ``True``: those raise
        :class:`OpenFailed`, :class:`ReadFailed`, :class:`RequestRefused`, and a
        read window without data raises :class:`WindowOutsideData`.

    Whatever ``raise_errors`` says, every error raised is a
    :class:`Mef3Error` (see :mod:`mef3io_server.exceptions`): a call that
    cannot reach the server raises :class:`ServerUnreachable` (also a
    ``ConnectionError``), a missing or refused token :class:`NotAuthenticated`
    (a ``PermissionError``), both ``grpc.RpcError`` too; an error message of
    the server on calls that always raised (envelopes, records, ...)
    :class:`RequestRefused` (a ``RuntimeError``).
    """

    _aio = False

    # ---- sending: the only part that differs from the asyncio client ----

    def _run(self, op: Operation):
        """Run an operation of :class:`BaseClient` with blocking calls; returns its result."""
        step = self._advance(op)
        while not isinstance(step, Done):
            step = self._advance(op, *self._outcome(step))
        return step.value

    def _outcome(self, call: Call) -> tuple:
        """(answer, None), or (None, the error) of sending ``call``."""
        try:
            return self._send(call), None
        except Mef3Error as e:      # raised reading an answer: the operation sees it
            return None, e
        except grpc.RpcError as e:
            return self._failed(e, call)

    def _send(self, call: Call):
        if isinstance(call, Pause):
            time.sleep(call.seconds)
            return None
        if isinstance(call, Unary):
            return getattr(self.stub, call.rpc)(call.request, **self.call_options())
        stream = getattr(self.stub, call.rpc)(call.request, **self.call_options())
        try:
            all(self._take(call, message) for message in stream)   # until feed says stop
        finally:
            stream.cancel()

    # ---- context manager, life cycle ----

    def __enter__(self) -> "Mef3Client":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Close the connection."""
        self.channel.close()

    def close(self) -> None:
        """Close the connection; the same as :meth:`shutdown` (the asyncio client's name)."""
        self.shutdown()

    # ---- files ----

    def open_file(self, file_path: str, cache_fs: Optional[float] = None,
                  allow_mixed_rates: bool = False, password: Optional[str] = None) -> dict:
        """Open a recording (or refresh this client's session on it).

        ``cache_fs``: serve (cache, prefetch) this client's reads of the file
        at this rate in Hz, reduced by order-preserving min-max so spikes
        survive. ``allow_mixed_rates``: serve channels recorded below
        ``cache_fs`` at their own rate instead of failing. ``password``: the
        level-1 or level-2 password of an encrypted recording.

        Returns the file's metadata dict; ``file_opened`` is False and
        ``error_message`` says why when the open failed (with
        ``raise_errors``: :class:`OpenFailed`).
        """
        return self._run(self._open_file(file_path, cache_fs, allow_mixed_rates, password))

    def get_file_info(self, file_path: str) -> dict:
        """Metadata of an open file (parallel per-channel lists, global span)."""
        return self._run(self._get_file_info(file_path))

    def close_file(self, file_path: str) -> dict:
        """End this client's session on the file (other clients' sessions stay)."""
        return self._run(self._close_file(file_path))

    def list_open_files(self) -> list:
        """Paths of every file open on the server (by any client)."""
        return self._run(self._list_open_files())

    # ---- data ----

    def get_signal_range(self, file_path: str, channels: Optional[Sequence[str]],
                         start_uutc: Time, end_uutc: Time, n_points: Optional[int] = None,
                         dtype: Optional[str] = None, *, montage=None, filters=None,
                         mixed_rates: bool = False) -> dict:
        """Read channels over ``[start_uutc, end_uutc)``.

        ``channels``: names, or ``None``/empty for all in file order. Times:
        uUTC, ISO 8601 (no timezone = UTC), ``datetime``, ``numpy.datetime64``,
        or an offset from the recording's start (``"+10m"``, ``timedelta``).
        ``n_points``: exactly that many points per channel (MinMaxLTTB, real
        samples); a window with fewer samples comes back unchanged.
        ``dtype``: ``"float32"`` (default: values in the channels' units) or
        ``"int32"``: the stored MEF sample values (raw counts) exactly, MEF's
        NaN sentinel ``-2**31`` in gaps (not with ``n_points``).
        ``montage``: derived channels instead of ``channels`` (give ``None`` for
        those): ``bipolar(pairs)``, ``average_reference(channels)``,
        ``reference(channels, ref)``, ``{name: {channel: weight}}``;
        ``filters``: zero-phase ``highpass``/``lowpass``/``bandpass``/``bandstop``/
        ``notch`` (see :mod:`mef3io_server.montages`), applied after the montage
        and before any reduction, by the server.
        ``mixed_rates=True``: channels of different rates in one read, each at its own
        rate; returns ``arrays`` (one per channel), ``fs`` and ``n_samples`` per channel
        instead of ``array`` (with ``n_points``, every channel with more samples than
        that on the same ``n_points`` grid).

        Returns a dict: ``array`` (float32, ``(n_channels, n_samples)``, NaN in
        gaps and outside the data; int32 with ``dtype="int32"``), ``channel_names``, ``fs``, ``start_uutc``,
        ``end_uutc``, ``dtype``, ``shape``, ``error_message`` (``array`` is None
        on error; with ``raise_errors``: :class:`ReadFailed`). A window lying
        mostly outside the channels' data warns :class:`WindowWarning`.
        """
        return self._run(self._get_signal_range(file_path, channels, start_uutc, end_uutc,
                                                n_points, dtype, montage, filters,
                                                mixed_rates))

    def get_envelope(self, file_path: str, channels: Optional[Sequence[str]] = None,
                     start_uutc: Optional[Time] = None, end_uutc: Optional[Time] = None) -> dict:
        """Per-MEF-block min and max of channels, from the block index alone.

        Returns ``{channel: {"start_uutc", "end_uutc", "min", "max"}}`` of
        NumPy arrays; raises :class:`RequestRefused` (a ``RuntimeError``) with
        the server's message on error.
        """
        return self._run(self._get_envelope(file_path, channels, start_uutc, end_uutc))

    # ---- annotations, data layout, discovery ----

    def get_records(self, file_path: str, channels: Optional[Sequence[str]] = None,
                    start_uutc: Optional[Time] = None, end_uutc: Optional[Time] = None) -> list:
        """MEF records (annotations) of an open file, in time order.

        ``channels``: ``None`` for the session-level records plus those of
        every channel (and its segments); names for the session-level records
        plus those channels'. ``[start_uutc, end_uutc)`` keeps records whose
        time falls in the window (or whose duration overlaps it).

        Returns a list of dicts with ``time_uutc``, ``type``, ``text``,
        ``channel`` (None at session level), ``level``, ``segment``,
        ``locked`` (True: the body is encrypted beyond the password given, so
        ``text`` is None), ``duration_us`` and the body fields of the type.
        Raises :class:`RequestRefused` with the server's message on error.
        """
        return self._run(self._get_records(file_path, channels, start_uutc, end_uutc))

    def get_segments(self, file_path: str, channels: Optional[Sequence[str]] = None) -> dict:
        """Where an open file has data: contiguous runs and gaps per channel.

        From metadata and the block index only (nothing decoded). Returns
        ``{channel: {"fs", "runs": [{start_uutc, end_uutc, start_sample,
        number_of_samples}], "gaps": [{start_uutc, end_uutc}]}}``; runs and
        gaps are half-open uUTC windows. Raises :class:`RequestRefused` on error.
        """
        return self._run(self._get_segments(file_path, channels))

    def list_recordings(self, root: Optional[str] = None, recursive: bool = True, *,
                        progress: Optional[Callable[[int], None]] = None) -> list:
        """MEF sessions (``.mefd`` folders, ``.mefd.tar`` archives) under ``root``.

        ``root``: a directory inside the server's ``DATA_ROOTS`` (``None``: all
        of them). Metadata only, no password needed: an encrypted session is
        listed with ``encrypted=True`` and what its unencrypted metadata says.
        Returns a list of dicts (``path``, ``number_of_channels``,
        ``start_uutc``, ``end_uutc``, ``min_sampling_rate``,
        ``max_sampling_rate``, ``size_bytes``, ``encrypted``,
        ``error_message``); raises :class:`RequestRefused` when the listing is
        refused. ``progress(n)``, if given, is told how many were received so
        far as they arrive (a big folder takes a while).
        """
        return self._run(self._list_recordings(root, recursive, progress))
