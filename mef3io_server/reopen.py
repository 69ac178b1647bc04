"""Sessions that survive a move: open again, transparently, and retry once.

Behind a load balancer a client's next call about a recording may reach a
replica that has no session of this client's for it: the replica that had it
stopped, was restarted, or the balancer's ring changed (a replica added or
removed). The server then answers that the file is not open (by this client;
see :data:`mef3io_server.routing.SESSION_REQUIRED_KEY`). The same happens on a
single server when the session expired (``SESSION_TTL_S``, ``MAX_SESSIONS``).

:class:`OpenedFiles` remembers, per path, the arguments each successful
``open_file`` was given (``cache_fs``, ``allow_mixed_rates``, ``password``);
:func:`reopened_once` wraps a client method about a file so that such an
answer makes it call ``open_file`` again with those arguments, then call
itself once more. A call cut off because its replica went away
(see :func:`was_cut_off`) is also made once more, after
:data:`CUT_OFF_PAUSE_S`. Answers are whole or not at all,
so a retried read is as exact as any other: nothing of a failed attempt is
kept.

Only files the client opened itself are re-opened: a read of a file some
other client opened fails as before when it is gone.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from typing import Optional

import grpc

#: Parts of the server's answers meaning "this client has no session on the
#: file here" (see server/errors.py: NotOpen, PasswordRequired).
NOT_OPEN_MARKS = (" is not open", "open it yourself with its password")

#: How a call cut off by its replica going away ends: UNAVAILABLE when the
#: balancer cannot reach the replica (nginx: HTTP 502) or refuses the stream
#: (HAProxy: RST_STREAM REFUSED_STREAM); UNKNOWN or INTERNAL with gRPC's
#: "Stream removed" when the balancer ends a stream it was relaying without
#: a gRPC status (HAProxy, the replica killed mid-answer).
CUT_OFF = grpc.StatusCode.UNAVAILABLE
STREAM_REMOVED = (frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}),
                  "Stream removed")
#: Seconds before a cut-off call is made again: time for the balancer to see the
#: replica gone (its next health check, or its next connection refused).
CUT_OFF_PAUSE_S = 0.5


class OpenedFiles:
    """The files a client opened, each with the arguments of its last successful open.

    Thread-safe. ``path in opened`` is true for a remembered path (the
    routing interceptor uses it to claim the session, see
    :mod:`mef3io_server.routing`).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._args: dict[str, dict] = {}

    def remember(self, file_path: str, answer: dict, **open_kwargs) -> dict:
        """Note an ``open_file`` ``answer``: remembered when the file opened,
        forgotten when it did not. Returns ``answer``."""
        with self._lock:
            if answer.get("file_opened"):
                self._args[str(file_path)] = dict(open_kwargs)
            else:
                self._args.pop(str(file_path), None)
        return answer

    def forget(self, file_path: str) -> None:
        with self._lock:
            self._args.pop(str(file_path), None)

    def open_args(self, file_path: str) -> Optional[dict]:
        """The keyword arguments of the last successful open of ``file_path``, or None."""
        with self._lock:
            args = self._args.get(str(file_path))
            return None if args is None else dict(args)

    def __contains__(self, file_path) -> bool:
        with self._lock:
            return str(file_path) in self._args


def says_not_open(message) -> bool:
    """True when a server's error message says the caller has no session on the file."""
    return isinstance(message, str) and any(m in message for m in NOT_OPEN_MARKS)


def _answer_says_not_open(result) -> bool:
    return isinstance(result, dict) and says_not_open(result.get("error_message"))


def was_cut_off(err: BaseException) -> bool:
    """True for a call that failed because the server (replica) answering it went away."""
    code = getattr(err, "code", None)
    if not callable(code):
        return False
    details = err.details() if callable(getattr(err, "details", None)) else ""
    codes, phrase = STREAM_REMOVED
    return code() == CUT_OFF or (code() in codes and (details or "").startswith(phrase))


class _Outcome:
    """A call's result or exception, and what it says about the session."""

    def __init__(self, result=None, error: Optional[BaseException] = None):
        self.result = result
        self.error = error

    @property
    def not_open(self) -> bool:
        if self.error is not None:
            return isinstance(self.error, RuntimeError) and says_not_open(str(self.error))
        return _answer_says_not_open(self.result)

    @property
    def cut_off(self) -> bool:
        return self.error is not None and was_cut_off(self.error)

    def get(self):
        if self.error is not None:
            raise self.error
        return self.result


def _sync_attempt(fn, *args, **kwargs) -> _Outcome:
    try:
        return _Outcome(fn(*args, **kwargs))
    except (RuntimeError, grpc.RpcError) as e:
        return _Outcome(error=e)


async def _async_attempt(fn, *args, **kwargs) -> _Outcome:
    try:
        return _Outcome(await fn(*args, **kwargs))
    except (RuntimeError, grpc.RpcError) as e:
        return _Outcome(error=e)


def reopened_once(method):
    """Decorate a client method whose first argument is a file path.

    When the method's answer (an ``error_message`` in the returned dict, or a
    RuntimeError) says the client has no session on the file, and the client
    opened the file (``self._opened``, an :class:`OpenedFiles`), call
    ``self.open_file`` with the remembered arguments and, when that worked,
    the method once more. A call cut off by its replica going away is made
    once more first. Works for plain methods and coroutines.
    """
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def run_async(self, file_path, *args, **kwargs):
            outcome = await _async_attempt(method, self, file_path, *args, **kwargs)
            if outcome.cut_off and file_path in self._opened:
                await asyncio.sleep(CUT_OFF_PAUSE_S)
                outcome = await _async_attempt(method, self, file_path, *args, **kwargs)
            if outcome.not_open:
                open_kwargs = self._opened.open_args(file_path)
                if open_kwargs is not None:
                    reopened = await _async_attempt(self.open_file, file_path, **open_kwargs)
                    if reopened.error is None and reopened.result.get("file_opened"):
                        outcome = await _async_attempt(method, self, file_path, *args, **kwargs)
            return outcome.get()
        return run_async

    @functools.wraps(method)
    def run(self, file_path, *args, **kwargs):
        outcome = _sync_attempt(method, self, file_path, *args, **kwargs)
        if outcome.cut_off and file_path in self._opened:
            time.sleep(CUT_OFF_PAUSE_S)
            outcome = _sync_attempt(method, self, file_path, *args, **kwargs)
        if outcome.not_open:
            open_kwargs = self._opened.open_args(file_path)
            if open_kwargs is not None:
                reopened = _sync_attempt(self.open_file, file_path, **open_kwargs)
                if reopened.error is None and reopened.result.get("file_opened"):
                    outcome = _sync_attempt(method, self, file_path, *args, **kwargs)
        return outcome.get()
    return run
