"""Logging: ``LOG_LEVEL``, ``LOG_FORMAT`` (text or json), stderr only, one line per call.

* Everything goes to stderr (no log file is ever written, least of all next
  to the installed package); the container runtime or systemd keeps it.
* ``LOG_FORMAT=json`` writes one JSON object per line (``ts``, ``level``,
  ``logger``, ``msg`` and, for calls, the call's fields), for log shippers.
* :class:`CallLog` writes one line per finished call from
  :class:`~.calls.CallRecord`: identity (the token's name, with tokens), client id, RPC,
  file, window, channel count, bytes, duration, outcome (and the error
  message answered, if any). Health and reflection calls are logged at
  DEBUG, data calls at INFO. Calls refused for want of an accepted token are
  not logged one by one (anyone can send them, as fast as the network
  allows): one WARNING line says how many were refused, at most every
  :attr:`CallLog.REFUSED_EVERY_S` seconds.
* A password or token never reaches a log line: call records do not hold
  them, error messages never quote them, and metadata is not logged.
* JSON lines escape every character that is not printable (line and
  paragraph separators, bidirectional overrides, ...) as ``\\uXXXX``.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time

from .calls import CallRecord

CALL_LOGGER = "mef3io_server.calls"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a call line also carries its fields under ``call``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = getattr(record, "call", None)
        if call is not None:
            out["call"] = call
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _escape_unprintable(json.dumps(out, ensure_ascii=False))


#: Characters JSON leaves raw that a terminal or a log viewer acts on: other
#: controls, line/paragraph separators, format characters (bidirectional
#: overrides, zero-width ...), unassigned and private-use ones.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _escape_unprintable(text: str) -> str:
    def escape(m: "re.Match") -> str:
        c = m.group(0)
        return c if c.isprintable() else json.dumps(c)[1:-1]
    return _UNPRINTABLE.sub(escape, text)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log record of the process to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))


def announce(text: str, fmt: str = "text") -> None:
    """Print a start-up line on stderr whatever ``LOG_LEVEL`` is (a JSON line in json mode).

    Supervisors and tests wait for "listening on port N" in these lines.
    """
    if fmt == "json":
        text = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "level": "INFO", "logger": "mef3io_server", "msg": text})
    print(text, file=sys.stderr, flush=True)


def call_fields(rec: CallRecord) -> dict:
    """The loggable fields of a call (units in the names)."""
    out = {"rpc": rec.rpc, **({"identity": rec.identity} if rec.identity else {}),
           "client": rec.client_id, "file": rec.file,
           "start_uutc": rec.window[0] if rec.window else None,
           "end_uutc": rec.window[1] if rec.window else None,
           "channels": rec.channels, "bytes": rec.bytes,
           "duration_ms": round(rec.duration_s * 1000, 3), "outcome": rec.outcome}
    if rec.derived:
        out["derived"] = rec.derived
    if rec.error:
        out["error"] = rec.error
    return out


def _channels(n) -> str:
    return "-" if n is None else ("all" if n == 0 else str(n))


class CallLog:
    """A :class:`~.calls.CallObserver` listener writing one line per call
    (calls refused without an accepted token: a count, see module docstring)."""

    #: Seconds between two lines counting refused calls.
    REFUSED_EVERY_S = 10.0

    def __init__(self, logger: logging.Logger = logging.getLogger(CALL_LOGGER)):
        self.log = logger
        self._lock = threading.Lock()
        self._refused = 0
        self._refused_logged = -float("inf")

    def _count_refused(self, rec: CallRecord) -> None:
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            if now - self._refused_logged < self.REFUSED_EVERY_S:
                return
            n, self._refused, self._refused_logged = self._refused, 0, now
        self.log.warning("refused %d call(s) without an accepted bearer token "
                         "(outcome unauthenticated; latest: %s)", n, rec.rpc,
                         extra={"call": {"rpc": rec.rpc, "outcome": rec.outcome,
                                         "refused": n}})

    def __call__(self, rec: CallRecord) -> None:
        if rec.outcome == "unauthenticated":
            self._count_refused(rec)
            return
        level = logging.DEBUG if rec.infrastructure else logging.INFO
        if not self.log.isEnabledFor(level):
            return
        f = call_fields(rec)
        window = f"[{rec.window[0]}, {rec.window[1]})" if rec.window else "-"
        who = f"identity={rec.identity} " if rec.identity else ""
        text = (f"{f['rpc']} {who}client={f['client'] or '-'} file={f['file'] or '-'} "
                f"window={window} channels={_channels(rec.channels)} "
                f"bytes={rec.bytes} duration_ms={f['duration_ms']} outcome={rec.outcome}")
        if rec.derived:
            text += f" {rec.derived}"
        if rec.error:
            text += f" error={rec.error!r}"
        self.log.log(level, text, extra={"call": f})
