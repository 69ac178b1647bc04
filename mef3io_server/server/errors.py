"""Errors the core raises for bad requests; the service turns them into ``error_message``.

Every message names the problem in terms the client used (its path, its
channel names, its window), never a traceback, and never a password.
"""
from __future__ import annotations


class ServerError(Exception):
    """A request could not be served; ``str(err)`` is the client-facing message."""


class BadRequest(ServerError):
    """The request itself is invalid (empty/inverted window, absurd size, ...)."""


class PathRefused(ServerError):
    """The path is outside the served roots, or is not a recording's path (``.mefd``)."""


class RecordingNotFound(ServerError):
    """No recording at that path (or it cannot be read)."""


class RecordingUnreadable(ServerError):
    """The path exists but is not a readable recording (corrupt, wrong format)."""


class NotOpen(ServerError):
    """A read of a file no client has open."""


class UnknownChannel(ServerError):
    """A channel name the recording does not have."""


class PasswordRequired(ServerError):
    """An encrypted recording opened without a (valid) password."""


class ResourceLimit(ServerError):
    """The request exceeds a configured limit (MAX_READ_MB, MAX_CHANNELS_PER_READ, ...)."""


class DecodeFailed(ServerError):
    """Decoding failed (damaged data, a dead worker that stayed dead, ...)."""


class Cancelled(ServerError):
    """The client cancelled the read (or its deadline passed): work for it stopped."""


class ShuttingDown(ServerError):
    """The server is draining and takes no new work."""


def decode_failure(path: str, names, a: int, b: int, exc: BaseException) -> DecodeFailed:
    """A :class:`DecodeFailed` naming the recording, channels and window ``[a, b)`` uUTC.

    mef3io refuses a damaged block as a whole (e.g. ``CrcError: RED block CRC
    mismatch``), so the client learns where: which channels, which stretch of
    time (uUTC and ISO 8601 UTC), and what mef3io said. The decoders' own
    ``"decoding failed: "`` prefix is not repeated.
    """
    import datetime as _dt

    def iso(t: int) -> str:
        try:
            return _dt.datetime.fromtimestamp(t / 1e6, _dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        except (OverflowError, OSError, ValueError):
            return "?"

    shown = ", ".join(list(names)[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    reason = str(exc)
    if isinstance(exc, DecodeFailed) and reason.startswith("decoding failed: "):
        reason = reason[len("decoding failed: "):]
    kind = "" if isinstance(exc, DecodeFailed) else f"{type(exc).__name__}: "
    return DecodeFailed(f"decoding channel {shown} of {path} in [{a}, {b}) uUTC "
                        f"({iso(a)} to {iso(b)}) failed: {kind}{reason}")
