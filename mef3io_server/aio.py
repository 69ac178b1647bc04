"""The asyncio Python client of mef3io-server (``grpc.aio``).

Example::

    import asyncio
    from mef3io_server.aio import AsyncMef3Client

    async def main():
        async with AsyncMef3Client("localhost:50051") as client:
            info = await client.open_file("/data/patient1.mefd")
            t0 = info["start_uutc"]
            windows = [(t0 + k * 1_000_000, t0 + (k + 1) * 1_000_000) for k in range(20)]
            results = await asyncio.gather(*(
                client.get_signal_range("/data/patient1.mefd", None, a, b) for a, b in windows))
            print([r["shape"] for r in results])

    asyncio.run(main())

:class:`AsyncMef3Client` has every method of
:class:`mef3io_server.client.Mef3Client`, as coroutines with the same
arguments and the same answers: both build requests and parse answers with
:mod:`mef3io_server.wire`, and differ only in how they call. One client (one
HTTP/2 connection) carries many concurrent calls from one event loop; all of
them share the client's id, so they share its sessions on the server.
"""
from __future__ import annotations

from typing import Optional, Sequence

import grpc

from . import wire
from .client import connect
from .protobufs import gRPCMef3Server_pb2 as pb2
from .reopen import reopened_once
from .wire import ServerUnsupported  # noqa: F401  (re-exported)


class AsyncMef3Client:
    """asyncio client for a mef3io-server; see :class:`~mef3io_server.client.Mef3Client`.

    Parameters are those of ``Mef3Client``: ``address`` (``host:port``),
    ``client_id`` (1 to 128 printable characters, random when ``None``),
    ``root_certificates`` / ``private_key`` / ``certificate_chain`` (PEM paths
    or bytes: TLS, mutual TLS), ``token`` (bearer token) and ``timeout``
    (deadline of each call in seconds). Create it inside a running event loop
    (``grpc.aio`` binds the channel to the loop) and close it with
    ``await client.close()`` or ``async with``.
    """

    CLIENT_ID_KEY = wire.CLIENT_ID_KEY

    def __init__(self, address: str = wire.DEFAULT_ADDRESS, client_id: Optional[str] = None, *,
                 root_certificates=None, private_key=None, certificate_chain=None,
                 token: Optional[str] = None, timeout: Optional[float] = None):
        connect(self, address, client_id, token, timeout, aio=True,
                root_certificates=root_certificates, private_key=private_key,
                certificate_chain=certificate_chain)

    # ---- context manager ----

    async def __aenter__(self) -> "AsyncMef3Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _kw(self) -> dict:
        return {"metadata": self._metadata, "timeout": self._timeout}

    # ---- files ----

    async def open_file(self, file_path: str, cache_fs: Optional[float] = None,
                        allow_mixed_rates: bool = False, password: Optional[str] = None) -> dict:
        """Open a recording; see :meth:`Mef3Client.open_file`."""
        resp = await self.stub.OpenFile(
            wire.open_file_request(file_path, cache_fs, allow_mixed_rates, password), **self._kw())
        return self._opened.remember(file_path, wire.check_open_answer(resp, cache_fs),
                                     cache_fs=cache_fs, allow_mixed_rates=allow_mixed_rates,
                                     password=password)

    @reopened_once
    async def get_file_info(self, file_path: str) -> dict:
        """Metadata of an open file; see :meth:`Mef3Client.get_file_info`."""
        return wire.file_info_to_dict(
            await self.stub.FileInfo(wire.file_info_request(file_path), **self._kw()))

    async def close_file(self, file_path: str) -> dict:
        """End this client's session on the file; see :meth:`Mef3Client.close_file`."""
        self._opened.forget(file_path)
        return wire.close_answer(
            await self.stub.CloseFile(wire.file_info_request(file_path), **self._kw()))

    async def list_open_files(self) -> list:
        """Paths of every file open on the server (by any client)."""
        return wire.list_open_answer(
            await self.stub.ListOpenFiles(pb2.ListOpenFilesRequest(), **self._kw()))

    # ---- data ----

    @reopened_once
    async def get_signal_range(self, file_path: str, channels: Optional[Sequence[str]],
                               start_uutc: int, end_uutc: int,
                               n_points: Optional[int] = None,
                               dtype: Optional[str] = None) -> dict:
        """Read ``[start_uutc, end_uutc)``; see :meth:`Mef3Client.get_signal_range`."""
        asm = wire.SignalAssembler(n_points, dtype)
        call = self.stub.GetSignalRange(
            wire.signal_request(file_path, channels, start_uutc, end_uutc, n_points, dtype),
            **self._kw())
        try:
            async for chunk in call:
                if not asm.feed(chunk):
                    break
        finally:
            call.cancel()
        return asm.result()

    @reopened_once
    async def get_envelope(self, file_path: str, channels: Optional[Sequence[str]] = None,
                           start_uutc: Optional[int] = None,
                           end_uutc: Optional[int] = None) -> dict:
        """Per-MEF-block min and max; see :meth:`Mef3Client.get_envelope`."""
        asm = wire.EnvelopeAssembler()
        async for msg in self.stub.GetEnvelope(
                wire.envelope_request(file_path, channels, start_uutc, end_uutc), **self._kw()):
            asm.feed(msg)
        return asm.result()

    # ---- annotations, data layout, discovery ----

    @reopened_once
    async def get_records(self, file_path: str, channels: Optional[Sequence[str]] = None,
                          start_uutc: Optional[int] = None,
                          end_uutc: Optional[int] = None) -> list:
        """MEF records in time order; see :meth:`Mef3Client.get_records`."""
        out: list = []
        try:
            async for chunk in self.stub.GetRecords(
                    wire.records_request(file_path, channels, start_uutc, end_uutc), **self._kw()):
                out.extend(wire.records_answer(chunk))
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "GetRecords") from None
        return out

    @reopened_once
    async def get_segments(self, file_path: str,
                           channels: Optional[Sequence[str]] = None) -> dict:
        """Runs and gaps per channel; see :meth:`Mef3Client.get_segments`."""
        asm = wire.SegmentsAssembler()
        try:
            async for msg in self.stub.GetSegments(wire.segments_request(file_path, channels),
                                                   **self._kw()):
                asm.feed(msg)
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "GetSegments") from None
        return asm.result()

    async def list_recordings(self, root: Optional[str] = None, recursive: bool = True) -> list:
        """Sessions under a served directory; see :meth:`Mef3Client.list_recordings`."""
        out: list = []
        try:
            async for chunk in self.stub.ListRecordings(
                    wire.list_recordings_request(root, recursive), **self._kw()):
                out.extend(wire.recordings_answer(chunk))
        except grpc.RpcError as e:
            raise wire.unsupported_or(e, "ListRecordings") from None
        return out

    # ---- life cycle ----

    async def close(self) -> None:
        """Close the connection (calls in flight are cancelled)."""
        await self.channel.close()

    async def shutdown(self) -> None:
        """Close the connection; the same as :meth:`close` (``Mef3Client``'s name)."""
        await self.close()
