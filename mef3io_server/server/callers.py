"""Who is calling: the authenticated identity and the client id, for one call.

* **Identity**: with ``AUTH_TOKENS_FILE`` set, the name of the token the call
  presented (see :mod:`.auth`); without tokens there is none (``""``). It is
  the only thing the server trusts about a caller: sessions, what
  ``ListOpenFiles`` shows, the worker threads a caller may hold and the
  password-failure throttle are all per identity.
* **Client id**: the ``x-mef3io-client-id`` metadata. A *name tag*, chosen by
  the client and not a secret: anyone may send any id. It tells apart the
  sessions of one identity (several viewers behind one token) and, without
  tokens, of the callers; it never grants anything another identity holds.
* **Origin**: the caller's network address without the port, used only where
  there is no identity (the password throttle without tokens).

The gRPC front end sets the current :class:`Caller` of each call
(:func:`calling_as`) and reads it (:func:`current`); the core takes callers as
arguments. Nothing here imports gRPC.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Caller:
    """One caller: ``identity`` (token name, ``""`` without tokens), ``client_id``
    (``""``: the default session) and ``origin`` (address, no port; not part of
    equality, so a caller reconnecting from another port is the same caller)."""

    identity: str = ""
    client_id: str = ""
    origin: str = field(default="", compare=False)

    def describe(self) -> str:
        """``identity/client id`` as the logs show a caller (never a token)."""
        ident = self.identity or "-"
        return f"{ident}/{self.client_id or '-'}"


#: The server itself (the recording preloaded at start-up, the engine's own tests).
SERVER = Caller()

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("mef3io_caller",
                                                                  default=SERVER)


def as_caller(who: Union[Caller, str]) -> Caller:
    """A :class:`Caller` from a caller or a bare client id (no identity)."""
    return who if isinstance(who, Caller) else Caller("", who or "")


def current() -> Caller:
    """The caller of the call running in this context (:data:`SERVER` outside calls)."""
    return _current.get()


def calling_as(caller: Caller) -> None:
    """Make ``caller`` the current caller of this context (gRPC gives each call a
    context of its own, in which the interceptors and the call run)."""
    _current.set(caller)
