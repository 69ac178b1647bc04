"""Client paths -> files on this machine, confined to the served roots.

* ``HOST_ROOT`` (optional) is joined in front of every client path, for a
  container that mounts the host under one folder (``/host_root``). Nothing
  is detected by magic: the published server's ``/.dockerenv`` check misfires
  on hosts that have that file.
* ``DATA_ROOTS`` (optional, ``:``-separated) confines every path: the path is
  resolved (symlinks, ``..``) *before* the check, at every call (nothing is
  remembered), and a refusal says only that the path is outside the served
  roots, whether or not it exists. The files of a recording are checked again
  when they are opened (:mod:`.pinning`).
* A recording path must end in ``.mefd`` (a directory) or ``.mefd.tar``.
"""
from __future__ import annotations

import os
from typing import Sequence

from .errors import BadRequest, PathRefused, RecordingNotFound

MAX_PATH_CHARS = 4096


class PathResolver:
    """Turns client paths into resolved local paths, or refuses them."""

    def __init__(self, host_root: str = "", data_roots: Sequence[str] = ()):
        self.host_root = host_root.rstrip("/") if host_root else ""
        self.data_roots = tuple(os.path.realpath(r) for r in data_roots)

    def local(self, client_path: str) -> str:
        """The client's path on this machine (``HOST_ROOT`` joined), not yet resolved."""
        if not isinstance(client_path, str) or not client_path.strip():
            raise BadRequest("file_path is empty")
        if len(client_path) > MAX_PATH_CHARS:
            raise BadRequest(f"file_path is {len(client_path)} characters long; "
                             f"the limit is {MAX_PATH_CHARS}")
        if "\x00" in client_path:
            raise BadRequest("file_path contains a NUL character")
        p = client_path
        if self.host_root:
            # "..", "." and "//" are folded against "/" first, so a client path
            # cannot climb out of HOST_ROOT by name (symlinks are resolved later).
            p = self.host_root + "/" + os.path.normpath("/" + p).lstrip("/")
        return os.path.normpath(p) if p != "/" else p

    def within_roots(self, resolved: str) -> bool:
        if not self.data_roots:
            return True
        for root in self.data_roots:
            if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
                return True
        return False

    def refuse_outside(self, client_path: str) -> PathRefused:
        return PathRefused(f"{client_path} is outside the served roots")

    def resolve_dir(self, client_path: str) -> str:
        """A directory inside the roots (for listing recordings)."""
        resolved = os.path.realpath(self.local(client_path))
        if not self.within_roots(resolved):
            raise self.refuse_outside(client_path)
        if not os.path.isdir(resolved):
            raise RecordingNotFound(f"{client_path} is not a directory")
        return resolved

    def resolve_recording(self, client_path: str) -> str:
        """The resolved path of a recording named by a client, resolved anew each time.

        Raises :class:`PathRefused` outside the roots (checked first, so a
        refusal reveals nothing), :class:`BadRequest` for a path that cannot
        be a recording, :class:`RecordingNotFound` when nothing is there. (What
        mef3io then opens is checked again, file by file, when it is opened:
        see :mod:`.pinning`.)
        """
        resolved = os.path.realpath(self.local(client_path))
        if not self.within_roots(resolved):
            raise self.refuse_outside(client_path)
        name = resolved.rstrip("/")
        if not (name.endswith(".mefd") or name.endswith(".mefd.tar")):
            raise BadRequest(f"{client_path} is not a MEF session path: a session is a "
                             "folder ending in .mefd (or an archive ending in .mefd.tar)")
        if not os.path.exists(resolved):
            raise RecordingNotFound(f"no MEF session at {client_path}")
        if name.endswith(".mefd") and not os.path.isdir(resolved):
            raise BadRequest(f"{client_path} is not a directory, so not a MEF session")
        if not os.access(resolved, os.R_OK):
            raise RecordingNotFound(f"{client_path} is not readable by the server")
        return resolved
