"""The synchronous Python client of mef3io-server.

Example::

    from mef3io_server.client import Mef3Client

    with Mef3Client("localhost:50051") as client:
        info = client.open_file("/data/patient1.mefd")
        t0 = info["start_uutc"]
        res = client.get_signal_range("/data/patient1.mefd", ["Ch1", "Ch2"],
                                      t0, t0 + 10_000_000)   # [t0, t0 + 10 s)
        print(res["shape"], res["fs"])

Every read is self-contained (file, channels, ``[start_uutc, end_uutc)`` in
uUTC). The client sends its id (``client_id``, random unless given) with
every call, so the server keeps one session per client and file. Request
building and answer parsing live in :mod:`mef3io_server.wire`, shared with
the asyncio client :class:`mef3io_server.aio.AsyncMef3Client`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import grpc

from . import envelope_codec, routing, signal_chunk_codec, wire
from .protobufs import gRPCMef3Server_pb2 as pb2
from .protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from .reopen import OpenedFiles, reopened_once
from .rpc_errors import GuardedStub, NotAuthenticated, ServerUnreachable  # noqa: F401
from .wire import ServerUnsupported  # noqa: F401  (re-exported)


def _read_bytes(value: Union[None, str, bytes]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def make_channel(address: str, *, root_certificates=None, private_key=None,
                 certificate_chain=None, aio: bool = False, interceptors=()):
    """A gRPC channel to ``address``: TLS when ``root_certificates`` is given."""
    mod = grpc.aio if aio else grpc
    extra = {"interceptors": list(interceptors)} if aio and interceptors else {}
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read_bytes(root_certificates),
            private_key=_read_bytes(private_key),
            certificate_chain=_read_bytes(certificate_chain))
        channel = mod.secure_channel(address, creds, options=wire.channel_options(aio), **extra)
    else:
        channel = mod.insecure_channel(address, options=wire.channel_options(aio), **extra)
    if interceptors and not aio:
        channel = grpc.intercept_channel(channel, *interceptors)
    return channel


def connect(client, address: str, client_id: Optional[str], token: Optional[str],
            timeout: Optional[float], *, aio: bool = False, **tls) -> None:
    """Set up a client object (sync or asyncio): id, call metadata, channel and stub."""
    client.address = address
    client.client_id = wire.check_client_id(client_id)
    client._metadata = wire.call_metadata(client.client_id, token)
    client._timeout = timeout
    client._opened = OpenedFiles()   # re-opened after a move (see reopen, routing)
    client.channel = make_channel(address, aio=aio, **tls,
                                  interceptors=routing.interceptors(client._opened.__contains__,
                                                                    aio=aio))
    client.stub = pb2_grpc.gRPCMef3ServerStub(client.channel)
    # Answers are read in place, their samples not copied (see signal_chunk_codec).
    client.stub.GetSignalRange = client.channel.unary_stream(
        "/gRPCMef3Server/GetSignalRange",
        request_serializer=pb2.SignalRangeRequest.SerializeToString,
        response_deserializer=signal_chunk_codec.decode)
    if not aio:   # sync calls raise errors that say what went wrong (TLS, tokens, ...)
        client.stub = GuardedStub(client.stub, address,
                                  tls=tls.get("root_certificates") is not None)


class Mef3Client:
    """Client for a mef3io-server (or the published mef3io-server 3.1.0).

    Parameters
    ----------
    address : str
        ``host:port`` of the server.
    client_id : str, optional
        This client's id, 1 to 128 printable characters; ``None`` makes a
        random one, so each client object has its own sessions.
    root_certificates : str or bytes, optional
        PEM CA certificate(s) (a path or the bytes): use TLS.
    private_key, certificate_chain : str or bytes, optional
        This client's key and certificate for mutual TLS.
    token : str, optional
        Bearer token sent as ``authorization: Bearer <token>``.

    A call that cannot reach the server (wrong address, plaintext against a
    TLS port, untrusted certificate) raises :class:`ServerUnreachable`; a
    missing or refused token raises :class:`NotAuthenticated`. Both are also
    ``grpc.RpcError``.
    timeout : float, optional
        Deadline of each call in seconds (``None``: no deadline).
    """

    CLIENT_ID_KEY = wire.CLIENT_ID_KEY

    def __init__(self, address: str = wire.DEFAULT_ADDRESS, client_id: Optional[str] = None, *,
                 root_certificates=None, private_key=None, certificate_chain=None,
                 token: Optional[str] = None, timeout: Optional[float] = None):
        connect(self, address, client_id, token, timeout, root_certificates=root_certificates,
                private_key=private_key, certificate_chain=certificate_chain)

    # ---- context manager ----

    def __enter__(self) -> "Mef3Client":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _kw(self) -> dict:
        return {"metadata": self._metadata, "timeout": self._timeout}

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
        ``error_message`` says why when the open failed.
        """
        resp = self.stub.OpenFile(
            wire.open_file_request(file_path, cache_fs, allow_mixed_rates, password), **self._kw())
        return self._opened.remember(file_path, wire.check_open_answer(resp, cache_fs),
                                     cache_fs=cache_fs, allow_mixed_rates=allow_mixed_rates,
                                     password=password)

    @reopened_once
    def get_file_info(self, file_path: str) -> dict:
        """Metadata of an open file (parallel per-channel lists, global span)."""
        return wire.file_info_to_dict(
            self.stub.FileInfo(wire.file_info_request(file_path), **self._kw()))

    def close_file(self, file_path: str) -> dict:
        """End this client's session on the file (other clients' sessions stay)."""
        self._opened.forget(file_path)
        return wire.close_answer(
            self.stub.CloseFile(wire.file_info_request(file_path), **self._kw()))

    def list_open_files(self) -> list:
        """Paths of every file open on the server (by any client)."""
        return wire.list_open_answer(
            self.stub.ListOpenFiles(pb2.ListOpenFilesRequest(), **self._kw()))

    # ---- data ----

    @reopened_once
    def get_signal_range(self, file_path: str, channels: Optional[Sequence[str]],
                         start_uutc: int, end_uutc: int, n_points: Optional[int] = None,
                         dtype: Optional[str] = None) -> dict:
        """Read channels over ``[start_uutc, end_uutc)``.

        ``channels``: names, or ``None``/empty for all in file order.
        ``n_points``: exactly that many points per channel (MinMaxLTTB, real
        samples); a window with fewer samples comes back unchanged.
        ``dtype``: ``"float32"`` (default: values in the channels' units) or
        ``"int32"``: the stored MEF sample values (raw counts) exactly, MEF's
        NaN sentinel ``-2**31`` in gaps (not with ``n_points``).

        Returns a dict: ``array`` (float32, ``(n_channels, n_samples)``, NaN in
        gaps; int32 with ``dtype="int32"``), ``channel_names``, ``fs``,
        ``start_uutc``, ``end_uutc``, ``dtype``, ``shape``, ``error_message``
        (``array`` is None on error).
        """
        asm = wire.SignalAssembler(n_points, dtype)
        call = self.stub.GetSignalRange(
            wire.signal_request(file_path, channels, start_uutc, end_uutc, n_points, dtype),
            **self._kw())
        try:
            for chunk in call:
                if not asm.feed(chunk):
                    break
        finally:
            call.cancel()
        return asm.result()

    @reopened_once
    def get_envelope(self, file_path: str, channels: Optional[Sequence[str]] = None,
                     start_uutc: Optional[int] = None, end_uutc: Optional[int] = None) -> dict:
        """Per-MEF-block min and max of channels, from the block index alone.

        Returns ``{channel: {"start_uutc", "end_uutc", "min", "max"}}`` of
        NumPy arrays; raises RuntimeError with the server's message on error.
        """
        asm = wire.EnvelopeAssembler()
        call = self.channel.unary_stream(
            "/gRPCMef3Server/GetEnvelope",
            request_serializer=pb2.EnvelopeRequest.SerializeToString,
            response_deserializer=envelope_codec.decode)   # arrays straight from the bytes
        for msg in call(wire.envelope_request(file_path, channels, start_uutc, end_uutc),
                        **self._kw()):
            asm.feed_decoded(msg)
        return asm.result()

    def shutdown(self) -> None:
        """Close the connection."""
        self.channel.close()

    # ---- annotations, data layout, discovery ----

    @reopened_once
    def get_records(self, file_path: str, channels: Optional[Sequence[str]] = None,
                    start_uutc: Optional[int] = None, end_uutc: Optional[int] = None) -> list:
        """MEF records (annotations) of an open file, in time order.

        ``channels``: ``None`` for the session-level records plus those of
        every channel (and its segments); names for the session-level records
        plus those channels'. ``[start_uutc, end_uutc)`` keeps records whose
        time falls in the window (or whose duration overlaps it).

        Returns a list of dicts with ``time_uutc``, ``type``, ``text``,
        ``channel`` (None at session level), ``level``, ``segment``,
        ``locked`` (True: the body is encrypted beyond the password given, so
        ``text`` is None), ``duration_us`` and the body fields of the type.
        Raises RuntimeError with the server's message on error.
        """
        out: list = []
        try:
            for chunk in self.stub.GetRecords(
                    wire.records_request(file_path, channels, start_uutc, end_uutc), **self._kw()):
                out.extend(wire.records_answer(chunk))
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "GetRecords") from None
        return out

    @reopened_once
    def get_segments(self, file_path: str, channels: Optional[Sequence[str]] = None) -> dict:
        """Where an open file has data: contiguous runs and gaps per channel.

        From metadata and the block index only (nothing decoded). Returns
        ``{channel: {"fs", "runs": [{start_uutc, end_uutc, start_sample,
        number_of_samples}], "gaps": [{start_uutc, end_uutc}]}}``; runs and
        gaps are half-open uUTC windows. Raises RuntimeError on error.
        """
        asm = wire.SegmentsAssembler()
        try:
            for msg in self.stub.GetSegments(wire.segments_request(file_path, channels),
                                             **self._kw()):
                asm.feed(msg)
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "GetSegments") from None
        return asm.result()

    def list_recordings(self, root: Optional[str] = None, recursive: bool = True) -> list:
        """MEF sessions (``.mefd`` folders, ``.mefd.tar`` archives) under ``root``.

        ``root``: a directory inside the server's ``DATA_ROOTS`` (``None``: all
        of them). Metadata only, no password needed: an encrypted session is
        listed with ``encrypted=True`` and what its unencrypted metadata says.
        Returns a list of dicts (``path``, ``number_of_channels``,
        ``start_uutc``, ``end_uutc``, ``min_sampling_rate``,
        ``max_sampling_rate``, ``size_bytes``, ``encrypted``,
        ``error_message``); raises RuntimeError when the listing is refused.
        """
        out: list = []
        try:
            for chunk in self.stub.ListRecordings(wire.list_recordings_request(root, recursive),
                                                  **self._kw()):
                out.extend(wire.recordings_answer(chunk))
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "ListRecordings") from None
        return out
