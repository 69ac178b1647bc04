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
arguments, the same answers and the same errors: both run the operations of
:class:`mef3io_server.client_base.BaseClient` and differ only in sending. One
client (one HTTP/2 connection) carries many concurrent calls from one event
loop; all of them share the client's id, so they share its sessions on the
server.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Optional, Sequence

import grpc

from .client_base import BaseClient, Call, Done, Operation, Unary
from .reopen import Pause
from .exceptions import Mef3Error, ServerUnsupported

__all__ = ["AsyncMef3Client", "Mef3Error", "ServerUnsupported"]

Time = object   # uUTC int, ISO 8601 text, datetime, numpy.datetime64, "+10m", timedelta


class AsyncMef3Client(BaseClient):
    """asyncio client for a mef3io-server; see :class:`~mef3io_server.client.Mef3Client`.

    Parameters are those of ``Mef3Client``: ``address`` (``host:port``;
    default ``$MEF3IO_ADDRESS`` or ``localhost:50051``), ``client_id`` (1 to
    128 printable characters, random when ``None``), ``root_certificates`` /
    ``private_key`` / ``certificate_chain`` (PEM paths or bytes: TLS, mutual
    TLS), ``token`` (bearer token), ``timeout`` (deadline of each call in
    seconds) and ``raise_errors``. Create it inside a running event loop
    (``grpc.aio`` binds the channel to the loop) and close it with
    ``await client.close()`` or ``async with``.
    """

    _aio = True

    # ---- sending: the only part that differs from the synchronous client ----

    async def _run(self, op: Operation):
        """Run an operation of :class:`BaseClient` with awaited calls; returns its result."""
        step = self._advance(op)
        while not isinstance(step, Done):
            step = self._advance(op, *(await self._outcome(step)))
        return step.value

    async def _outcome(self, call: Call) -> tuple:
        """(answer, None), or (None, the error) of sending ``call``."""
        try:
            return await self._send(call), None
        except Mef3Error as e:      # raised reading an answer: the operation sees it
            return None, e
        except grpc.RpcError as e:
            return self._failed(e, call)

    async def _send(self, call: Call):
        if isinstance(call, Pause):
            await asyncio.sleep(call.seconds)
            return None
        if isinstance(call, Unary):
            return await getattr(self.stub, call.rpc)(call.request, **self.call_options())
        stream = getattr(self.stub, call.rpc)(call.request, **self.call_options())
        try:
            async for message in stream:
                if not self._take(call, message):
                    break
        finally:
            stream.cancel()

    # ---- context manager, life cycle ----

    async def __aenter__(self) -> "AsyncMef3Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (calls in flight are cancelled)."""
        await self.channel.close()

    async def shutdown(self) -> None:
        """Close the connection; the same as :meth:`close` (``Mef3Client``'s name)."""
        await self.close()

    # ---- files ----

    async def open_file(self, file_path: str, cache_fs: Optional[float] = None,
                        allow_mixed_rates: bool = False, password: Optional[str] = None) -> dict:
        """Open a recording; see :meth:`Mef3Client.open_file`."""
        return await self._run(self._open_file(file_path, cache_fs, allow_mixed_rates, password))

    async def get_file_info(self, file_path: str) -> dict:
        """Metadata of an open file; see :meth:`Mef3Client.get_file_info`."""
        return await self._run(self._get_file_info(file_path))

    async def close_file(self, file_path: str) -> dict:
        """End this client's session on the file; see :meth:`Mef3Client.close_file`."""
        return await self._run(self._close_file(file_path))

    async def list_open_files(self) -> list:
        """Paths of every file open on the server (by any client)."""
        return await self._run(self._list_open_files())

    # ---- data ----

    async def get_signal_range(self, file_path: str, channels: Optional[Sequence[str]],
                               start_uutc: Time, end_uutc: Time,
                               n_points: Optional[int] = None,
                               dtype: Optional[str] = None, *, montage=None,
                               filters=None, mixed_rates: bool = False) -> dict:
        """Read ``[start_uutc, end_uutc)``; see :meth:`Mef3Client.get_signal_range`."""
        return await self._run(self._get_signal_range(file_path, channels, start_uutc, end_uutc,
                                                      n_points, dtype, montage, filters,
                                                      mixed_rates))

    async def get_envelope(self, file_path: str, channels: Optional[Sequence[str]] = None,
                           start_uutc: Optional[Time] = None,
                           end_uutc: Optional[Time] = None) -> dict:
        """Per-MEF-block min and max; see :meth:`Mef3Client.get_envelope`."""
        return await self._run(self._get_envelope(file_path, channels, start_uutc, end_uutc))

    # ---- annotations, data layout, discovery ----

    async def get_records(self, file_path: str, channels: Optional[Sequence[str]] = None,
                          start_uutc: Optional[Time] = None,
                          end_uutc: Optional[Time] = None) -> list:
        """MEF records in time order; see :meth:`Mef3Client.get_records`."""
        return await self._run(self._get_records(file_path, channels, start_uutc, end_uutc))

    async def get_segments(self, file_path: str,
                           channels: Optional[Sequence[str]] = None) -> dict:
        """Runs and gaps per channel; see :meth:`Mef3Client.get_segments`."""
        return await self._run(self._get_segments(file_path, channels))

    async def list_recordings(self, root: Optional[str] = None, recursive: bool = True, *,
                              progress: Optional[Callable[[int], None]] = None) -> list:
        """Sessions under a served directory; see :meth:`Mef3Client.list_recordings`."""
        return await self._run(self._list_recordings(root, recursive, progress))
