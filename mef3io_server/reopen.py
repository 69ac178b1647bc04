"""Sessions that survive a move: open again, transparently, and retry.

Behind a load balancer a client's next call about a recording may reach a
replica that has no session of this client's for it: the replica that had it
stopped, was restarted, or the balancer's ring changed (a replica added or
removed). The server then answers that the file is not open (by this client;
see :data:`mef3io_server.routing.SESSION_REQUIRED_KEY`). The same happens on a
single server when the session expired (``SESSION_TTL_S``, ``MAX_SESSIONS``).

:class:`OpenedFiles` remembers, per path, the arguments each successful
``open_file`` was given (``cache_fs``, ``allow_mixed_rates``, ``password``);
:func:`reopened` wraps a client operation about a file (see
:mod:`mef3io_server.client_base`) so that such an answer makes it open the
file again with those arguments, then run again. A call cut off because its
replica went away (see :func:`was_cut_off`) is also made again, after
:data:`CUT_OFF_PAUSE_S`; at most :data:`MAX_RETRIES` rounds. Answers are
whole or not at all, so a retried read is as exact as any other: nothing of a
failed attempt is kept.

Only files the client opened itself are re-opened: a read of a file some
other client opened fails as before when it is gone.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
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
#: Rounds of re-opening or pausing after a call's first attempt.
MAX_RETRIES = 3


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


@dataclass(frozen=True)
class Pause:
    """A step of an operation: wait this many seconds (the client sleeps or awaits)."""

    seconds: float


def _attempt(op):
    """Run the operation ``op`` (a generator, see :mod:`mef3io_server.client_base`) to
    its end: an :class:`_Outcome` with what it returned or raised."""
    try:
        return _Outcome((yield from op))
    except (RuntimeError, grpc.RpcError) as e:
        return _Outcome(error=e)


def reopened(opened: OpenedFiles, file_path: str, make_op, open_op):
    """An operation that runs ``make_op()`` and, when needed, again (at most
    :data:`MAX_RETRIES` more times).

    When the answer (an ``error_message`` in the returned dict, or a
    RuntimeError) says the client has no session on the file and the client
    opened it (``opened``), run ``open_op(file_path, **remembered arguments)``
    and, when that opened it, ``make_op()`` again. A call (or re-open) cut off
    by its replica going away is made again after a :class:`Pause` of
    :data:`CUT_OFF_PAUSE_S`. More than one round is needed when the balancer's
    ring changes between the re-open and the call (a replica lost, then back).
    The sync and asyncio clients run it alike.
    """
    outcome = yield from _attempt(make_op())
    for _ in range(MAX_RETRIES):
        if outcome.cut_off and file_path in opened:
            yield Pause(CUT_OFF_PAUSE_S)
        elif outcome.not_open and opened.open_args(file_path) is not None:
            reopened = yield from _attempt(open_op(file_path, **opened.open_args(file_path)))
            if reopened.cut_off:
                yield Pause(CUT_OFF_PAUSE_S)
                continue                     # still not open here: open again
            if reopened.error is not None or not reopened.result.get("file_opened"):
                break
        else:
            break
        outcome = yield from _attempt(make_op())
    return outcome.get()
