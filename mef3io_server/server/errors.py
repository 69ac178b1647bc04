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
    """The path is outside the served roots, or is not a MEF session path."""


class RecordingNotFound(ServerError):
    """No recording at that path (or it cannot be read)."""


class RecordingUnreadable(ServerError):
    """The path exists but is not a readable MEF 3.0 session (corrupt, wrong format)."""


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


class ShuttingDown(ServerError):
    """The server is draining and takes no new work."""
