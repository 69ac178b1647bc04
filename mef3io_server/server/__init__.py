"""The mef3io-server server: ``python -m mef3io_server.server`` runs it.

The data path, one module per step: :mod:`.service` (gRPC messages) ->
:mod:`.engine` -> :mod:`.sessions` / :mod:`.recordings` -> :mod:`.tile_grid`
-> :mod:`.tile_cache` (via :mod:`.tile_store`) -> :mod:`.decode` -> mef3io.
Configuration: :mod:`.config`.
"""
