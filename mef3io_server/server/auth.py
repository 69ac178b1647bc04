"""Bearer tokens: ``AUTH_TOKENS_FILE``, and the identity each accepted token stands for.

* The file holds one accepted token per line, optionally preceded by a name
  for it (``name token``, separated by white space; a token holds none);
  ``#`` starts a comment line, blank lines are ignored, surrounding white
  space is stripped. The name is the *identity* of whoever presents the
  token (:mod:`.callers`): what the logs show, and what sessions, listings,
  worker threads and password throttling are bound to. Lines with the same
  name are one identity (an old and a new token while rotating). A token
  without a name is the identity ``token-<first 8 hex digits of its
  SHA-256>``: stable, and it reveals nothing usable of the token.
* It is re-read when it changes (its size, mtime or inode differ from the last
  read: one ``stat`` per call), so tokens can be added or revoked while the
  server runs. A file that cannot be read, or holds no token, refuses every
  call (fails closed) and says so in the log, once per change.
* A client sends ``authorization: Bearer <token>`` metadata. A missing,
  malformed or unknown token ends the call with gRPC status
  ``UNAUTHENTICATED`` and a message saying which of the three it was
  (:mod:`.admission`).
* Only SHA-256 digests of the tokens are kept in memory, and a presented
  token is compared with each of them with :func:`hmac.compare_digest`
  (constant time, no early exit across tokens). Tokens are never logged.
* The standard health service (``grpc.health.v1.Health``) needs no token, so
  load balancers and container health checks can probe it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from typing import Optional

log = logging.getLogger("mef3io_server.auth")

AUTH_KEY = "authorization"
MAX_NAME_CHARS = 64


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _entry(line: str) -> Optional[tuple[bytes, str]]:
    """``(digest, identity)`` of one line of the file; None for a comment or blank line.

    Raises ValueError (without quoting the line) for one that is neither
    ``token`` nor ``name token``.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split()
    if len(parts) > 2:
        raise ValueError("more than a name and a token")
    digest = _digest(parts[-1])
    if len(parts) == 1:
        return digest, "token-" + digest.hex()[:8]
    name = parts[0]
    if not name.isprintable() or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a name must be at most {MAX_NAME_CHARS} printable characters")
    return digest, name


def _entries(lines: list[str], path: str) -> tuple[tuple[bytes, str], ...]:
    """The accepted ``(digest, identity)`` pairs; a bad line is skipped, and logged
    by its number only (it may hold a token)."""
    out = []
    for number, line in enumerate(lines, 1):
        try:
            e = _entry(line)
        except ValueError as problem:
            log.warning("AUTH_TOKENS_FILE %s line %d ignored: %s", path, number, problem)
            continue
        if e is not None:
            out.append(e)
    return tuple(out)


class TokenFile:
    """The accepted tokens of ``AUTH_TOKENS_FILE``, re-read when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: Optional[tuple] = None
        self._digests: tuple[tuple[bytes, str], ...] = ()
        self.reloads = 0
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return
            digests: tuple[tuple[bytes, str], ...] = ()
            try:
                with open(self.path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                digests = _entries(lines, self.path)
            except (OSError, UnicodeDecodeError) as e:
                if self._stamp != ("unreadable",):
                    log.error("AUTH_TOKENS_FILE %s cannot be read (%s): every call is refused",
                              self.path, type(e).__name__)
                self._stamp, self._digests = ("unreadable",), ()
                return
            if not digests:
                log.warning("AUTH_TOKENS_FILE %s holds no token: every call is refused",
                            self.path)
            elif self._stamp is not None:
                log.info("AUTH_TOKENS_FILE %s changed: %d token(s) accepted",
                         self.path, len(digests))
            self._digests = digests
            self._stamp = stamp
            self.reloads += 1

    def identity_of(self, token: str) -> Optional[str]:
        """The identity (name) of ``token``, None when it is not one of the file's tokens.

        Every digest is compared, in constant time, whichever matches.
        """
        self._refresh()
        presented = _digest(token)
        found = None
        for d, name in self._digests:
            if hmac.compare_digest(presented, d):
                found = name
        return found

    def accepts(self, token: str) -> bool:
        """True when ``token`` is one of the file's tokens (constant-time comparison)."""
        return self.identity_of(token) is not None


def bearer_token(metadata) -> tuple[Optional[str], str]:
    """(token, problem) from call metadata; problem is "" when a token was found."""
    values = [v for k, v in (metadata or ()) if k == AUTH_KEY]
    if not values:
        return None, ("this server requires a bearer token: send 'authorization: Bearer "
                      "<token>' metadata (Mef3Client(..., token=...))")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "the authorization metadata must be 'Bearer <token>'"
    return token.strip(), ""
