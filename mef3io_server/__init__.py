"""mef3io-server: fast, concurrent gRPC access to MEF 3.0 recordings.

The package's public entry points:

* ``mef3io_server.client.Mef3Client`` -- the synchronous client;
* ``mef3io_server.aio.AsyncMef3Client`` -- the asyncio client (both over
  ``mef3io_server.client_base``, differing only in sending);
* ``mef3io_server.exceptions`` -- what the clients raise (``Mef3Error`` and below);
* ``python -m mef3io_server.server`` / ``mef3io-server serve`` -- the server;
* ``mef3io_server.server.tile_cache.TileCache`` -- the shared tile cache.
"""
try:
    from importlib.metadata import version as _version

    __version__ = _version("mef3io-server")
except Exception:  # pragma: no cover - source tree without metadata
    __version__ = "0.0.0"
