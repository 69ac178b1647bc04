"""The HTTP front end: the web viewer's page and its API, over the same :class:`~.engine.Engine`.

Like :mod:`.service` for gRPC, this module only translates: HTTP requests
in, engine calls, answers out. It holds no data path of its own, so the page
reads through the same sessions, tile cache, prefetch and ``DATA_ROOTS`` as
every gRPC client. Starlette builds the routes; :mod:`.http_server` runs
them under uvicorn in the server's process.

Routes (times uUTC integers, windows half-open ``[t0, t1)``):

* ``GET /`` -- the viewer page; ``GET /assets/...`` its script and style
  (shipped inside the package: nothing is fetched from elsewhere).
* ``GET /api/server`` -- what this server offers the page: whether tokens are
  required, whether recordings can be listed, the montages and filters by
  name (:mod:`.viewer_presets`).
* ``GET /api/recordings?root=`` -- discovery (``DATA_ROOTS`` when no root).
* ``POST /api/open`` (JSON ``{"path", "password"}``) -- opens the caller's
  session; answers the file's metadata (JSON).
* ``GET /api/signal?path=&ch=..&t0=&t1=[&n_points=][&montage=][&filter=]`` --
  samples as a *frame* (below), float32 little-endian, time-major
  ``[n][channels]``, NaN where there is no data. ``montage`` and ``filter``
  name a preset of :mod:`.viewer_presets` over the ``ch`` channels (the
  header then names the derived channels, e.g. ``Fp1-F3``).
* ``GET /api/envelope?path=&ch=..`` -- each channel's per-MEF-block
  ``(start, end, min, max)`` from the block index, as a frame.
* ``GET /api/records?path=[&t0=&t1=]`` -- the MEF records (JSON: text, not samples).
* ``GET /api/segments?path=`` -- each channel's contiguous runs (JSON).

A *frame* is ``uint32 LE header length | JSON header | payload``, the
header padded with spaces so the payload starts at a multiple of 8 bytes;
the header describes the payload's arrays. Samples never travel as JSON.

Who calls: ``Authorization: Bearer <token>`` against ``AUTH_TOKENS_FILE``
(401 with ``"problem": "token"`` when missing or not accepted), and the
``X-Mef3io-Client-Id`` header naming the page's own sessions (see
:mod:`.callers`). Errors answer JSON ``{"error", "problem"}`` with an HTTP
status: 400 bad request, 401 token, 403 password or path outside
``DATA_ROOTS``, 404 no recording, 409 not open, 413 over a limit, 503
shutting down, 500 otherwise. Every data call is one line of the call log
and counts in the metrics, as a gRPC call does (RPC names ``http_*``).
"""
from __future__ import annotations

import json
import logging
import struct
import time
from functools import partial
from importlib import resources
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .auth import TokenFile
from .callers import Caller
from .calls import CallRecord
from .engine import Engine, FileInfo
from . import viewer_presets
from .errors import (BadRequest, NotOpen, PasswordRequired, PathRefused, RecordingNotFound,
                     RecordingUnreadable, ResourceLimit, ServerError, ShuttingDown,
                     UnknownChannel)

log = logging.getLogger("mef3io_server.http")

CLIENT_ID_HEADER = "x-mef3io-client-id"
FRAME_TYPE = "application/x-mef3io-frame"
MAX_N_POINTS = 65_536          # points per channel an HTTP n_points read may ask for
VIEWER_DIR = resources.files("mef3io_server.server") / "viewer"
#: The page may load and fetch from this server only (hospital networks are closed,
#: and nothing the page shows should leave it).
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: Core errors -> (HTTP status, ``problem`` for the page).
STATUS = (
    (PasswordRequired, 403, "password"),
    (PathRefused, 403, "path"),
    (RecordingNotFound, 404, "not_found"),
    (RecordingUnreadable, 404, "unreadable"),
    (NotOpen, 409, "not_open"),
    (UnknownChannel, 400, "channel"),
    (BadRequest, 400, "bad_request"),
    (ResourceLimit, 413, "limit"),
    (ShuttingDown, 503, "shutting_down"),
)


class HttpProblem(Exception):
    """A request refused before it reached the engine (status, problem, message)."""

    def __init__(self, status: int, problem: str, message: str):
        super().__init__(message)
        self.status = status
        self.problem = problem


def status_of(err: ServerError) -> tuple[int, str]:
    for kind, status, problem in STATUS:
        if isinstance(err, kind):
            return status, problem
    return 500, "server"


def frame(header: dict, arrays: Iterable[np.ndarray] = ()) -> bytes:
    """A whole frame: header, then each array's bytes in order."""
    return frame_header(header) + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


def frame_header(header: dict) -> bytes:
    """``uint32 LE length | JSON``, the JSON padded with spaces to end on a multiple of 8."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(4 + len(text)) % 8)
    return struct.pack("<I", len(text)) + text


def file_info_json(info: FileInfo) -> dict:
    return {"path": info.client_path, "channels": info.channel_names,
            "sampling_rates": info.sampling_rates, "served_rates": info.served_rates,
            "channel_start_uutc": info.channel_start_uutc,
            "channel_end_uutc": info.channel_end_uutc, "units": info.units,
            "start_uutc": info.start_uutc, "end_uutc": info.end_uutc,
            "encrypted": info.encrypted, "access_level": info.access_level}


def _int_param(request: Request, name: str, *, required: bool = True) -> Optional[int]:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise HttpProblem(400, "bad_request", f"{name} is required (uUTC microseconds)")
        return None
    try:
        return int(raw)
    except ValueError:
        raise HttpProblem(400, "bad_request", f"{name} must be a whole number, not "
                          f"{raw[:40]!r}") from None


def _path_param(request: Request) -> str:
    path = request.query_params.get("path", "")
    if not path:
        raise HttpProblem(400, "bad_request", "path is required")
    return path


class HttpFrontEnd:
    """The routes of the HTTP side, translating to ``engine`` calls.

    ``tokens``: the same :class:`~.auth.TokenFile` the gRPC side checks (None:
    no tokens). ``listeners``: the call observer's listeners (call log,
    metrics), each handed one :class:`~.calls.CallRecord` per data call.
    ``offers``: what :func:`server_offers` answers beyond the basics
    (montages, filters), for the front ends of later features.
    """

    def __init__(self, engine: Engine, tokens: Optional[TokenFile] = None,
                 listeners: Optional[list[Callable[[CallRecord], None]]] = None,
                 offers: Optional[dict] = None):
        self.engine = engine
        self.tokens = tokens
        self.listeners = listeners if listeners is not None else []
        self.offers = offers or {}

    # ------------------------------------------------------------ plumbing

    def caller(self, request: Request) -> Caller:
        """The caller of a request: the token's identity, the page's client id, the origin."""
        identity = ""
        if self.tokens is not None:
            value = request.headers.get("authorization", "")
            scheme, _, token = value.strip().partition(" ")
            if not value:
                raise HttpProblem(401, "token", "this server requires a bearer token")
            if scheme.lower() != "bearer" or not token.strip():
                raise HttpProblem(401, "token", "the Authorization header must be "
                                  "'Bearer <token>'")
            identity = self.tokens.identity_of(token.strip())
            if identity is None:
                raise HttpProblem(401, "token", "the bearer token was not accepted by this "
                                  "server")
        cid = request.headers.get(CLIENT_ID_HEADER, "")
        if cid and (len(cid) > 128 or not cid.isprintable()):
            raise HttpProblem(400, "bad_request",
                              f"{CLIENT_ID_HEADER} must be 1 to 128 printable characters")
        origin = request.client.host if request.client else ""
        return Caller(identity, cid, origin)

    def _record(self, name: str, caller: Optional[Caller], *, file: str = "",
                window=None, channels=None) -> CallRecord:
        return CallRecord(method=f"/http/http_{name}",
                          client_id=caller.client_id if caller else "",
                          identity=caller.identity if caller else "", file=file,
                          window=window, channels=channels, started=time.monotonic())

    def _finish(self, rec: CallRecord, outcome: str = "ok", error: str = "") -> None:
        rec.duration_s = time.monotonic() - rec.started
        rec.outcome = outcome
        rec.error = error
        for listener in list(self.listeners):
            try:
                listener(rec)
            except Exception:  # noqa: BLE001 - a listener never fails a call
                log.exception("call listener failed")

    def _refusal(self, rec: Optional[CallRecord], exc: Exception) -> JSONResponse:
        if isinstance(exc, HttpProblem):
            status, problem = exc.status, exc.problem
        elif isinstance(exc, ServerError):
            status, problem = status_of(exc)
        else:
            log.exception("internal error in the HTTP side")
            status, problem = 500, "server"
            exc = RuntimeError(f"internal error: {type(exc).__name__}: {exc}"[:500])
        if rec is not None:
            outcome = "unauthenticated" if problem == "token" else "error"
            self._finish(rec, outcome, str(exc))
        return JSONResponse({"error": str(exc), "problem": problem}, status_code=status)

    async def _json_call(self, request: Request, name: str, work,
                         file: Optional[str] = None) -> Response:
        """Run ``work(caller)`` on a worker thread; answer its result as JSON.
        ``file``: the recording for the call log (default: the ``path`` parameter)."""
        rec = None
        try:
            caller = self.caller(request)
            rec = self._record(name, caller, file=request.query_params.get("path", "")
                               if file is None else file)
            body = await run_in_threadpool(work, caller)
        except Exception as exc:  # noqa: BLE001 - translated for the page
            return self._refusal(rec, exc)
        self._finish(rec)
        return JSONResponse(body, headers={"cache-control": "no-store"})

    # ------------------------------------------------------------ page and metadata

    async def index(self, request: Request) -> Response:
        return FileResponse(str(VIEWER_DIR / "index.html"),
                            headers={"cache-control": "no-cache",
                                     "content-security-policy": PAGE_POLICY})

    async def server_offers(self, request: Request) -> Response:
        """What the page may offer: no token needed (it says whether one is)."""
        roots = bool(self.engine.settings.data_roots)
        body = {"auth": self.tokens is not None, "listing": roots,
                "max_channels_per_read": self.engine.settings.max_channels_per_read,
                **viewer_presets.offers()}
        body.update(self.offers)
        return JSONResponse(body)

    async def recordings(self, request: Request) -> Response:
        root = request.query_params.get("root") or None

        def work(caller):
            out = []
            for s in self.engine.list_recordings(root, True, caller=caller):
                out.append({"path": s.path, "channels": s.number_of_channels,
                            "start_uutc": s.start_uutc, "end_uutc": s.end_uutc,
                            "min_rate": s.min_sampling_rate, "max_rate": s.max_sampling_rate,
                            "size_bytes": s.size_bytes, "encrypted": s.encrypted,
                            "error": s.error})
                if len(out) >= 10_000:
                    break
            return {"recordings": out}
        return await self._json_call(request, "recordings", work)

    async def open_file(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("path"), str) \
                or not isinstance(body.get("password", ""), str):
            return self._refusal(None, HttpProblem(400, "bad_request",
                                                   'send JSON {"path": ..., "password": ...}'))

        def work(caller):
            return file_info_json(self.engine.open_file(caller, body["path"],
                                                        password=body.get("password", "")))
        return await self._json_call(request, "open", work, file=body["path"])

    async def records(self, request: Request) -> Response:
        def work(caller):
            path = _path_param(request)
            t0 = _int_param(request, "t0", required=False)
            t1 = _int_param(request, "t1", required=False)
            out = []
            for a in self.engine.records(caller, path, [], t0, t1):
                out.append({"time_uutc": a.time_uutc, "type": a.type, "text": a.text,
                            "channel": a.channel, "level": a.level,
                            "duration_us": a.duration_us, "locked": a.locked})
            return {"records": out}
        return await self._json_call(request, "records", work)

    async def segments(self, request: Request) -> Response:
        def work(caller):
            path = _path_param(request)
            channels = request.query_params.getlist("ch")
            out = {}
            for runs in self.engine.segments(caller, path, channels):
                out[runs.name] = {"fs": runs.fs,
                                  "runs": np.stack([runs.start_uutc, runs.end_uutc],
                                                   axis=1).tolist()}
            return {"channels": out}
        return await self._json_call(request, "segments", work)

    # ------------------------------------------------------------ binary answers

    async def signal(self, request: Request) -> Response:
        """Samples of one window as a frame; the body streams chunk by chunk, so a
        page that gives the request up (a superseded view) stops the read."""
        rec = None
        try:
            caller = self.caller(request)
            path = _path_param(request)
            channels = request.query_params.getlist("ch")
            if not channels:
                raise HttpProblem(400, "bad_request", "name at least one channel (ch=...)")
            t0 = _int_param(request, "t0")
            t1 = _int_param(request, "t1")
            n_points = _int_param(request, "n_points", required=False)
            if n_points is not None and not 1 <= n_points <= MAX_N_POINTS:
                raise HttpProblem(400, "bad_request",
                                  f"n_points must be between 1 and {MAX_N_POINTS}")
            montage = request.query_params.get("montage", "")
            filter_name = request.query_params.get("filter", "")
            rec = self._record("signal", caller, file=path, window=(t0, t1),
                               channels=len(channels))
            if montage or filter_name:
                rec.derived = f"montage={montage[:40]!r} filter={filter_name[:40]!r}"
            derived = viewer_presets.derived_spec(montage, filter_name, channels,
                                                  self.engine.settings.max_channels_per_read)
            # A montage names its own channels (built from ``ch`` above).
            read = await run_in_threadpool(partial(self.engine.read_signal, derived=derived),
                                           caller, path, [] if montage else channels, t0, t1,
                                           n_points)
        except Exception as exc:  # noqa: BLE001
            return self._refusal(rec, exc)
        header = {"kind": "signal", "channels": read.channel_names, "fs": read.fs,
                  "n": read.n_samples, "start_uutc": read.start_uutc,
                  "end_uutc": read.end_uutc, "layout": "float32[n][channels]"}
        return StreamingResponse(self._stream(rec, header, read.chunks),
                                 media_type=FRAME_TYPE,
                                 headers={"cache-control": "no-store",
                                          "content-length": str(len(frame_header(header))
                                                                + read.n_samples * 4
                                                                * len(read.channel_names))})

    async def _stream(self, rec: CallRecord, header: dict, chunks: Iterator):
        outcome, error = "cancelled", ""
        try:
            yield frame_header(header)
            async for rows in iterate_in_threadpool(
                    (np.ascontiguousarray(r.T, dtype="<f4") for r in _rows(chunks))):
                rec.bytes += rows.nbytes
                rec.messages += 1
                yield rows.tobytes()
            outcome = "ok"
        except ServerError as exc:     # after the header: the page sees a short body
            outcome, error = "error", str(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            self._finish(rec, outcome, error)

    async def envelope(self, request: Request) -> Response:
        """Per-block envelopes as a frame: for each channel, ``n`` blocks as float64
        starts, float64 ends (uUTC), float32 minima, float32 maxima."""
        def work(caller):
            path = _path_param(request)
            channels = request.query_params.getlist("ch")
            if not channels:
                raise HttpProblem(400, "bad_request", "name at least one channel (ch=...)")
            t0 = _int_param(request, "t0", required=False)
            t1 = _int_param(request, "t1", required=False)
            described, arrays = [], []
            for name, e in self.engine.envelope(caller, path, channels, t0, t1):
                n = int(np.asarray(e["start_uutc"]).size)
                described.append({"name": name, "n": n})
                arrays += [np.asarray(e["start_uutc"], dtype="<f8"),
                           np.asarray(e["end_uutc"], dtype="<f8"),
                           np.asarray(e["min"], dtype="<f4"), np.asarray(e["max"], dtype="<f4")]
            return frame({"kind": "envelope", "channels": described,
                          "layout": "per channel: f8 start[n], f8 end[n], f4 min[n], "
                                    "f4 max[n], each padded to 8 bytes"},
                         _padded(arrays))

        rec = None
        try:
            caller = self.caller(request)
            rec = self._record("envelope", caller, file=request.query_params.get("path", ""),
                               channels=len(request.query_params.getlist("ch")))
            body = await run_in_threadpool(work, caller)
        except Exception as exc:  # noqa: BLE001
            return self._refusal(rec, exc)
        rec.bytes = len(body)
        self._finish(rec)
        return Response(body, media_type=FRAME_TYPE, headers={"cache-control": "no-store"})

    # ------------------------------------------------------------ the app

    def app(self, loopback_only: bool = False):
        """The ASGI app. ``loopback_only``: answer only requests addressed to
        ``localhost``/``127.0.0.1``/``[::1]`` (a server listening on this machine only),
        so a web page elsewhere cannot reach it through DNS rebinding."""
        app = self._routes()
        return loopback_hosts_only(app) if loopback_only else app

    def _routes(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/api/server", self.server_offers),
            Route("/api/recordings", self.recordings),
            Route("/api/open", self.open_file, methods=["POST"]),
            Route("/api/signal", self.signal),
            Route("/api/envelope", self.envelope),
            Route("/api/records", self.records),
            Route("/api/segments", self.segments),
            Mount("/assets", StaticFiles(directory=str(VIEWER_DIR)), name="assets"),
        ]
        return Starlette(routes=routes)


def host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8080`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def loopback_hosts_only(app):
    """``app``, refusing (421) HTTP requests whose Host is not a loopback name."""
    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
            if host_name(host.strip()).lower() not in LOOPBACK_NAMES:
                await JSONResponse({"error": "this server answers requests to localhost only "
                                    "(it listens on this machine only: HTTP_BIND_ADDRESS)",
                                    "problem": "host"}, status_code=421)(scope, receive, send)
                return
        await app(scope, receive, send)
    return guarded


def _rows(chunks: Iterator) -> Iterator[np.ndarray]:
    for _, _, _, rows in chunks:
        yield rows


def _padded(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Each array followed by zero bytes to a multiple of 8 (float32 arrays of odd length)."""
    out = []
    for a in arrays:
        out.append(a)
        pad = -a.nbytes % 8
        if pad:
            out.append(np.zeros(pad, dtype=np.uint8))
    return out
