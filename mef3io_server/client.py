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

from . import envelope_codec, wire
from .protobufs import gRPCMef3Server_pb2 as pb2
from .protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from .wire import ServerUnsupported  # noqa: F401  (re-exported)


def _read_bytes(value: Union[None, str, bytes]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def make_channel(address: str, *, root_certificates=None, private_key=None,
                 certificate_chain=None, aio: bool = False):
    """A gRPC channel to ``address``: TLS when ``root_certificates`` is given."""
    mod = grpc.aio if aio else grpc
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read_bytes(root_certificates),
            private_key=_read_bytes(private_key),
            certificate_chain=_read_bytes(certificate_chain))
        return mod.secure_channel(address, creds, options=wire.CHANNEL_OPTIONS)
    return mod.insecure_channel(address, options=wire.CHANNEL_OPTIONS)


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
    timeout : float, optional
        Deadline of each call in seconds (``None``: no deadline).
    """

    CLIENT_ID_KEY = wire.CLIENT_ID_KEY

    def __init__(self, address: str = wire.DEFAULT_ADDRESS, client_id: Optional[str] = None, *,
                 root_certificates=None, private_key=None, certificate_chain=None,
                 token: Optional[str] = None, timeout: Optional[float] = None):
        self.address = address
        self.client_id = wire.check_client_id(client_id)
        self._metadata = wire.call_metadata(self.client_id, token)
        self._timeout = timeout
        self.channel = make_channel(address, root_certificates=root_certificates,
                                    private_key=private_key, certificate_chain=certificate_chain)
        self.stub = pb2_grpc.gRPCMef3ServerStub(self.channel)

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
        return wire.check_open_answer(resp, cache_fs)

    def get_file_info(self, file_path: str) -> dict:
        """Metadata of an open file (parallel per-channel lists, global span)."""
        return wire.file_info_to_dict(
            self.stub.FileInfo(wire.file_info_request(file_path), **self._kw()))

    def close_file(self, file_path: str) -> dict:
        """End this client's session on the file (other clients' sessions stay)."""
        return wire.close_answer(
            self.stub.CloseFile(wire.file_info_request(file_path), **self._kw()))

    def list_open_files(self) -> list:
        """Paths of every file open on the server (by any client)."""
        return wire.list_open_answer(
            self.stub.ListOpenFiles(pb2.ListOpenFilesRequest(), **self._kw()))

    # ---- data ----

    def get_signal_range(self, file_path: str, channels: Optional[Sequence[str]],
                         start_uutc: int, end_uutc: int, n_points: Optional[int] = None) -> dict:
        """Read channels over ``[start_uutc, end_uutc)``.

        ``channels``: names, or ``None``/empty for all in file order.
        ``n_points``: exactly that many points per channel (MinMaxLTTB, real
        samples); a window with fewer samples comes back unchanged.

        Returns a dict: ``array`` (float32, ``(n_channels, n_samples)``, NaN in
        gaps), ``channel_names``, ``fs``, ``start_uutc``, ``end_uutc``,
        ``dtype``, ``shape``, ``error_message`` (``array`` is None on error).
        """
        asm = wire.SignalAssembler(n_points)
        call = self.stub.GetSignalRange(
            wire.signal_request(file_path, channels, start_uutc, end_uutc, n_points),
            **self._kw())
        try:
            for chunk in call:
                if not asm.feed(chunk):
                    break
        finally:
            call.cancel()
        return asm.result()

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
