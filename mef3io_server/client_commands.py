"""The command-line commands that talk to a running server: ``ls``, ``info``, ``get``, ``plot``.

Registered on the ``mef3io-server`` group by :mod:`mef3io_server.cli`. Each
connects with :class:`~mef3io_server.client.Mef3Client` (``raise_errors=True``;
``--client-id``, ``--token``, ``--root-certificates``, ``--timeout``) to
ADDRESS, which may be left out: ``$MEF3IO_ADDRESS``, else ``localhost:50051``
(a host alone gets port 50051). Times are uUTC, ISO 8601 or offsets from the
recording's start (:mod:`mef3io_server.timespec`); a window without data is
refused, one partly outside it noted (:mod:`mef3io_server.window_check`). Any
failure is reported as one line (:func:`one_line`). See docs/cli.md.
"""
from __future__ import annotations

import json
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import click


def install_hint(e: ImportError) -> str:
    """The command that installs what ``e`` lacks, in this very environment."""
    missing = (getattr(e, "name", None) or "").split(".")[0]
    extra = "dask" if missing in ("dask", "distributed") else "plot"
    root = Path(__file__).resolve().parent.parent
    pip = f"{sys.executable} -m pip install"
    if (root / "pyproject.toml").exists() and (root / "mef3io_server").is_dir():
        return f"{pip} -e '{root}[{extra}]'"       # a source checkout, installed editable
    return f"{pip} 'mef3io-server[{extra}]'"


def one_line(e: BaseException) -> str:
    """One line saying what went wrong (gRPC failures by their status)."""
    import grpc

    from .exceptions import OpenFailed, ServerUnreachable

    if isinstance(e, OpenFailed):
        msg = f"cannot open {e.path}: {e}"
    elif isinstance(e, ServerUnreachable):
        msg = f"cannot reach the server: {e.details()}"
        if "TLS" in (e.details() or "") or "handshake" in (e.details() or ""):
            msg += " (if it has TLS on, give --root-certificates CA.pem)"
    elif isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        code, details = e.code(), (e.details() or "").strip()
        if code == grpc.StatusCode.UNAVAILABLE:
            msg = f"cannot reach the server: {details}"
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            msg = f"the server refused the call ({code.name}): {details}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            msg = f"the server did not answer in time: {details}"
        else:
            msg = f"{code.name}: {details}"
    elif isinstance(e, ImportError):
        msg = f"{e} (install it: {install_hint(e)})"
    elif isinstance(e, (ValueError, RuntimeError, OSError)):
        msg = str(e) or type(e).__name__
    else:
        msg = f"{type(e).__name__}: {e}"
    return " ".join(msg.split())


_CLIENT_OPTIONS = [
    click.option("--client-id", default=None,
                 help="This client's id, 1-128 printable characters (default: a random one)."),
    click.option("--token", envvar="MEF3IO_TOKEN", default=None,
                 help="Bearer token for a server that requires one (default: $MEF3IO_TOKEN)."),
    click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False),
                 default=None, help="PEM file of CA certificate(s): connect with TLS."),
    click.option("--timeout", type=float, default=None,
                 help="Deadline of each call, in seconds (default: none)."),
]
_PASSWORD_OPTION = click.option(
    "--password", envvar="MEF3IO_PASSWORD", default=None,
    help="Password of an encrypted recording (default: $MEF3IO_PASSWORD).")
_CHANNELS_OPTION = click.option(
    "-c", "--channels", multiple=True, metavar="NAMES",
    help="Channels, comma-separated and/or repeated (default: all, in file order).")
_TIME_HELP = ("uUTC, ISO 8601 (no timezone = UTC) or an offset from the recording's start "
              "(+10m, +1h30m, +90s, +500ms)")
_START_OPTION = click.option("-s", "--start", default=None, metavar="TIME",
                             help=f"Window start: {_TIME_HELP}. Default: the channels' start.")
_END_OPTION = click.option("-e", "--end", default=None, metavar="TIME",
                           help=f"Window end (excluded): {_TIME_HELP}. Default: the channels' end.")
_DURATION_OPTION = click.option(
    "-d", "--duration", default=None, metavar="SPAN",
    help="Window length instead of --end: e.g. 10m, 1h30m, 90s, 500ms.")
ADDRESS_HELP = ("ADDRESS is the server's host:port; left out: $MEF3IO_ADDRESS, else "
                "localhost:50051 (a host alone gets port 50051).")
_SESSION_PATH = re.compile(r"\.mefd(\.tar)?/?$")


def _address_and_file(f):
    """[ADDRESS] FILE: the server (optional) and the recording (checked by :func:`_target`)."""
    f = click.argument("file", required=False, metavar="FILE")(f)
    return click.argument("address", required=False, metavar="[ADDRESS]")(f)


def _window_arguments(f):
    """[ADDRESS] FILE [-c CHANNELS] [-s START] [-e END | -d SPAN]: what ``get`` and ``plot`` read."""
    for deco in reversed([_address_and_file, _CHANNELS_OPTION, _START_OPTION, _END_OPTION,
                          _DURATION_OPTION]):
        f = deco(f)
    return f


def _client_options(f):
    for opt in reversed(_CLIENT_OPTIONS):
        f = opt(f)
    return f


def _target(address, file) -> tuple:
    """(address or None, FILE as the server is asked it) from the one or two arguments.

    A relative FILE is made absolute from this shell's directory (the server
    would otherwise resolve it in its own working directory).
    """
    if file is None:
        address, file = None, address
    if file is None:
        raise click.UsageError("Missing argument 'FILE': the recording's path as the server "
                               "sees it (a folder ending in .mefd)")
    if not _SESSION_PATH.search(file) and not os.path.exists(file):
        looks = (f"{file} looks like an ADDRESS: give the recording's FILE after it"
                 if address is None and re.fullmatch(r"[\w.\-\[\]:]+", file) else
                 f"{file} is not a MEF session path: FILE is a folder ending in .mefd "
                 "(or an archive ending in .mefd.tar)")
        raise click.UsageError(looks)
    if not os.path.isabs(file) and "://" not in file:
        file = os.path.abspath(file)
    return address, file


@contextmanager
def _connect(address, client_id=None, token=None, root_certificates=None, timeout=None):
    from .client import Mef3Client
    from .exceptions import NotAuthenticated

    client = Mef3Client(address, client_id, token=token, root_certificates=root_certificates,
                        timeout=timeout, raise_errors=True)
    try:
        with warnings.catch_warnings():
            # The command checks its window once (_window); pieces need not repeat it.
            from .exceptions import WindowWarning

            warnings.simplefilter("ignore", WindowWarning)
            yield client
    except NotAuthenticated as e:
        if token:
            raise click.ClickException(f"the server at {client.address} did not accept the "
                                       f"token (--token or $MEF3IO_TOKEN): {e.details()}")
        raise click.ClickException(f"the server at {client.address} requires a bearer token: "
                                   "give --token TOKEN or set MEF3IO_TOKEN") from None
    finally:
        client.shutdown()


def _open_recording(client, path: str, password=None) -> dict:
    """The file's metadata, once this client's session on it is open.

    The session is deliberately left open: it expires on the server after
    ``SESSION_TTL_S``, and meanwhile the file's reader and its cached tiles
    stay warm, so the next command on the same file is served from the cache
    (closing the last session would drop them).
    """
    return client.open_file(path, password=password)


def _optional_rpc(client, method: str, *args, **kwargs):
    """The answer of an RPC newer servers offer, or None when the server lacks it."""
    from .exceptions import ServerUnsupported

    try:
        return getattr(client, method)(*args, **kwargs)
    except ServerUnsupported:
        return None


def _rates(info: dict) -> list:
    served = info.get("channel_served_sampling_rates") or []
    if len(served) == len(info["channel_names"]) and all(served):
        return [float(r) for r in served]
    return [float(r) for r in info["channel_sampling_rates"]]


def _select_channels(info: dict, channels) -> tuple[list, list]:
    """(names, indices) of the chosen channels (all when none are named)."""
    names = list(info["channel_names"])
    wanted = [c.strip() for v in channels or () for c in v.split(",") if c.strip()]
    if not wanted:
        return names, list(range(len(names)))
    missing = [c for c in wanted if c not in names]
    if missing:
        raise click.ClickException(f"no channel {', '.join(missing)} in the recording "
                                   f"(it has: {', '.join(names)})")
    return wanted, [names.index(c) for c in wanted]


def _one_rate(info: dict, names: list, idx: list) -> float:
    rates = _rates(info)
    groups: dict = {}
    for n, i in zip(names, idx):
        groups.setdefault(rates[i], []).append(n)
    if len(groups) != 1:
        desc = "; ".join(f"{r:g} Hz: {', '.join(ch)}" for r, ch in sorted(groups.items()))
        raise click.ClickException(f"the channels have different sampling rates ({desc}); "
                                   "choose channels of one rate with --channels")
    return next(iter(groups))


def _window(info: dict, idx: list, start, end, duration=None, local: bool = True,
            note: bool = True):
    """The half-open window in uUTC from --start and --end or --duration.

    Default: the chosen channels' whole span. A window holding none of their
    data is refused; one partly outside it is noted on stderr (NaN there),
    unless ``note`` is False: then ``(t0, t1, check)`` is returned, for the
    caller to :func:`_note` when it goes ahead.
    """
    from .timespec import format_uutc, parse_duration_us, parse_time
    from .window_check import WindowCheck

    if end and duration:
        raise click.ClickException("give --end or --duration, not both")
    origin = int(info["start_uutc"])
    first = min(int(info["channel_start_uutc"][i]) for i in idx)
    last = max(int(info["channel_end_uutc"][i]) for i in idx)
    t0 = parse_time(start, origin) if start else first
    if duration:
        t1 = t0 + parse_duration_us(duration)
    else:
        t1 = parse_time(end, origin) if end else last
    if t1 <= t0:
        raise click.ClickException(f"empty window: the end ({format_uutc(t1)}) is not after "
                                   f"the start ({format_uutc(t0)})")
    check = WindowCheck(t0, t1, first, last)
    if check.outside:
        raise click.ClickException(check.message(local) + "; nothing read")
    if not note:
        return t0, t1, check
    _note(check, local)
    return t0, t1


def _note(check, local: bool = True) -> None:
    """Say on stderr that part of the window lies outside the data (it reads as NaN)."""
    if check.partly_outside:
        click.echo(f"note: {check.message(local)}", err=True)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _rate_range(lo, hi) -> str:
    return f"{lo:g}" if not hi or lo == hi else f"{lo:g}-{hi:g}"


@click.command("ls")
@click.argument("address", required=False, metavar="[ADDRESS]")
@click.argument("root", required=False)
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Look into subdirectories of ROOT.")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@click.option("--utc", is_flag=True, help="Show times in UTC instead of local time.")
@_client_options
def ls_cmd(address, root, recursive, as_json, utc, **copts):
    """List the recordings the server at ADDRESS can serve.

    Recordings are .mefd sessions and .mefd.tar archives under ROOT, a
    directory inside the server's DATA_ROOTS (default: every root), read from
    their metadata only. A single argument that is a path is ROOT. On a
    terminal, the count found so far shows while the server looks.
    Example: mef3io-server ls localhost:50051 /data
    """
    from .timespec import format_duration, format_uutc

    if root is None and address is not None and (address.startswith(("/", ".", "~"))
                                                 or _SESSION_PATH.search(address)):
        address, root = None, address
    if root is not None and not os.path.isabs(root):
        root = os.path.abspath(os.path.expanduser(root))
    live = sys.stderr.isatty()

    def found(count: int) -> None:
        click.echo(f"\rlooking for recordings... {count} found", err=True, nl=False)

    with _connect(address, **copts) as client:
        if live:
            found(0)
        try:
            recs = _optional_rpc(client, "list_recordings", root, recursive=recursive,
                                 progress=found if live else None)
        finally:
            if live:
                click.echo("\r\033[K", err=True, nl=False)
    if recs is None:
        raise click.ClickException("this server cannot list recordings "
                                   "(ListRecordings is missing: it is older)")
    if as_json:
        click.echo(json.dumps(recs, indent=1, default=str))
        return
    rows = []
    for r in recs:
        if r.get("error_message"):
            rows.append((r["path"], f"error: {r['error_message']}"))
            continue
        start, end = r.get("start_uutc"), r.get("end_uutc")
        lo, hi = r.get("min_sampling_rate") or 0, r.get("max_sampling_rate") or 0
        rows.append((r["path"], f"{r.get('number_of_channels', 0)} ch",
                     f"{_rate_range(lo, hi)} Hz" if lo else "? Hz",
                     format_uutc(start, local=not utc)[:19] if start is not None else "",
                     format_duration(end - start) if start is not None and end else "",
                     _size(int(r.get("size_bytes") or 0)),
                     "encrypted" if r.get("encrypted") else ""))
    widths = [max((len(row[i]) for row in rows if len(row) > 2), default=0) for i in range(7)]
    right = {1, 2, 4, 5}
    for row in rows:
        if len(row) == 2:   # a recording that could not be read
            click.echo(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())
    click.echo(f"{len(recs)} recording(s)", err=True)


@click.command("info")
@_address_and_file
@_PASSWORD_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@click.option("--utc", is_flag=True, help="Show times in UTC instead of local time.")
@_client_options
def info_cmd(address, file, password, as_json, utc, **copts):
    """Show the metadata of recording FILE (its path as the server sees it).

    Channels with their rates, spans (local time and uUTC) and units; with a
    server that reports them, the gaps and the number of annotations.
    Example: mef3io-server info localhost:50051 /data/patient1.mefd
    """
    from .timespec import format_duration, format_uutc

    address, file = _target(address, file)
    with _connect(address, **copts) as client:
        info = _open_recording(client, file, password)
        segments = _optional_rpc(client, "get_segments", file)
        records = _optional_rpc(client, "get_records", file)
    if as_json:
        out = dict(info)
        if segments is not None:
            out["segments"] = segments
        if records is not None:
            out["number_of_records"] = len(records)
        click.echo(json.dumps(out, indent=1, default=str))
        return
    local = not utc
    t0, t1 = int(info["start_uutc"]), int(info["end_uutc"])
    rates = _rates(info)
    click.echo(f"file:      {info['file_path']}")
    click.echo(f"channels:  {info['number_of_channels']}  "
               f"({_rate_range(min(rates, default=0), max(rates, default=0))} Hz)")
    click.echo(f"start:     {format_uutc(t0, local)}  ({t0} uUTC)")
    click.echo(f"end:       {format_uutc(t1, local)}  ({t1} uUTC, excluded)")
    click.echo(f"duration:  {format_duration(t1 - t0)}")
    if info.get("encrypted") is not None:
        level = info.get("access_level")
        click.echo(f"encrypted: {'yes' if info['encrypted'] else 'no'}"
                   + (f" (access level {level})" if info["encrypted"] and level is not None
                      else ""))
    if records is not None:
        click.echo(f"records:   {len(records)}")
    head = f"{'channel':<16} {'fs (Hz)':>10}  {'start':<32} {'end':<32} units"
    if segments is not None:
        head += "   gaps"
    click.echo(head)
    for i, name in enumerate(info["channel_names"]):
        units = info["channel_units"][i] if i < len(info["channel_units"]) else ""
        line = (f"{name:<16} {rates[i]:>10g}  {format_uutc(info['channel_start_uutc'][i], local):<32} "
                f"{format_uutc(info['channel_end_uutc'][i], local):<32} {units}")
        if segments is not None:
            gaps = (segments.get(name) or {}).get("gaps") or []
            total = sum(int(g["end_uutc"]) - int(g["start_uutc"]) for g in gaps)
            line += f"   {len(gaps)}" + (f" ({format_duration(total)})" if gaps else "")
        click.echo(line)


@click.command("get")
@_window_arguments
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file: .npy (the array), .npz (data, times_uutc, channel_names, fs, "
                   "start_uutc, end_uutc) or .csv (time_uutc and one column per channel).")
@click.option("--piece-s", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds read per request (memory holds one piece).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@_PASSWORD_OPTION
@_client_options
def get_cmd(address, file, channels, start, end, duration, output, piece_s, progress, password,
            **copts):
    """Read a window of recording FILE from the server into a file.

    The channels must share one sampling rate. The window [start, end) is read
    in pieces that join exactly and streamed to disk, so any length fits in
    memory; NaN marks gaps. A window that would not fit on the output's disk
    is refused before anything is read. Example:

    \b
        mef3io-server get localhost:50051 /data/p1.mefd -c Ch1,Ch2 -s +10m -e +20m -o x.npz
    """
    import numpy as np

    from .exceptions import WindowOutsideData
    from .export import FORMATS, export_window
    from .server.tile_grid import samples_in_window
    from .timespec import format_uutc
    from .window_pieces import iter_pieces, piece_samples

    if not output.lower().endswith(FORMATS):
        raise click.ClickException(f"the output must end in {', '.join(FORMATS)}: {output}")
    _check_output_folder(output)
    address, file = _target(address, file)
    with _connect(address, **copts) as client:
        info = _open_recording(client, file, password)
        names, idx = _select_channels(info, channels)
        fs = _one_rate(info, names, idx)
        t0, t1, check = _window(info, idx, start, end, duration, note=False)
        total = samples_in_window(t0, t1, fs)
        if total <= 0:
            raise click.ClickException("the window holds no sample")
        _check_room(output, total, len(names))
        _note(check)
        per = piece_samples(fs, piece_s, n_channels=len(names), max_bytes=256 * 1024 * 1024)
        starts = {int(info["channel_start_uutc"][i]) for i in idx}
        pieces = iter_pieces(t0, t1, fs, per, anchor_uutc=starts.pop() if len(starts) == 1
                             else None)

        def read(piece):
            try:
                return client.get_signal_range(file, names, piece.t0, piece.t1)["array"]
            except WindowOutsideData:       # a piece beyond the data: what the server sends
                return np.full((len(names), piece.n_samples), np.nan, dtype=np.float32)

        show = sys.stderr.isatty() if progress is None else progress
        bar = click.progressbar(length=total, label=f"{len(names)} ch", file=sys.stderr,
                                show_eta=True) if show and total > per else None
        if bar is None:
            export_window(read, pieces, output, names, fs, t0, t1, n_samples=total)
        else:
            with bar:
                export_window(read, pieces, output, names, fs, t0, t1, progress=bar.update,
                              n_samples=total)
    click.echo(f"wrote {output}: {len(names)} channel(s) x {total} samples at {fs:g} Hz, "
               f"{format_uutc(t0)} .. {format_uutc(t1)}", err=True)


def _check_output_folder(output: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise click.ClickException(f"cannot write {output}: there is no folder {folder}")


def _check_room(output: str, n_samples: int, n_channels: int) -> None:
    """Refuse a window whose output (at least 4 bytes per sample and channel) would not
    fit in the free space where ``output`` goes."""
    import shutil

    need = 4 * n_samples * n_channels
    folder = os.path.dirname(os.path.abspath(output))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return                      # the writer says what is wrong with the folder
    if need > free:
        raise click.ClickException(
            f"the window holds {n_samples} samples of {n_channels} channel(s): at least "
            f"{_size(need)} of output, more than the {_size(free)} free in {folder}; "
            "choose a shorter window (--start, --end, --duration)")


def _gaps(client, file, names, t0, t1, rates, segments) -> dict:
    """``{channel: [(start_uutc, end_uutc), ...]}``: the gaps inside ``[t0, t1)``.

    From ``GetSegments`` when the server has it, else from the holes between
    the MEF blocks of ``GetEnvelope`` (block index only; nothing decoded).
    """
    import numpy as np

    out = {}
    if segments is None:
        try:
            env = client.get_envelope(file, names, t0, t1)
        except RuntimeError:   # no block index to tell: draw without shading
            env = {}
    for n in names:
        if segments is not None:
            raw = [(int(g["start_uutc"]), int(g["end_uutc"]))
                   for g in (segments.get(n) or {}).get("gaps") or []]
        else:
            e = env.get(n)
            raw = []
            if e is not None and len(e["start_uutc"]) > 1:
                s, en = e["start_uutc"], e["end_uutc"]
                hole = np.nonzero(s[1:] - en[:-1] > 1e6 / rates[n])[0]
                raw = [(int(en[k]), int(s[k + 1])) for k in hole]
        out[n] = [(max(a, t0), min(b, t1)) for a, b in raw if b > t0 and a < t1]
    return out


def _plot_traces(client, file, names, t0, t1, points, rates, gaps_of) -> dict:
    """``{channel: Trace}`` read with ``n_points`` run by run between the visible gaps.

    A read with ``n_points`` returns evenly spaced points with the gaps'
    NaN left out, so each stretch between gaps wider than one point is read on
    its own (points shared out by duration) and the stretches are joined with
    a NaN, keeping every point at its time. Channels of one rate and the same
    gaps are read together.
    """
    import numpy as np

    from .plot import Trace

    point_us = (t1 - t0) / points
    groups: dict = {}
    for n in names:
        wide = tuple(g for g in gaps_of[n] if g[1] - g[0] > point_us)
        groups.setdefault((rates[n], wide), []).append(n)
    traces = {}
    for (fs, wide), group in groups.items():
        edges = [t0] + [x for g in wide for x in g] + [t1]
        times, values = [], []
        for r0, r1 in zip(edges[::2], edges[1::2]):
            if r1 <= r0:
                continue
            n_pts = max(2, round(points * (r1 - r0) / (t1 - t0)))
            res = client.get_signal_range(file, group, r0, r1, n_points=n_pts)
            arr = res["array"]
            base = r0 if res["start_uutc"] is None else res["start_uutc"]
            times += [base + np.arange(arr.shape[1]) * (1e6 / res["fs"]), np.array([r1])]
            values += [arr, np.full((len(group), 1), np.nan, dtype=np.float32)]
        t = np.concatenate(times) if times else np.zeros(0)
        v = np.concatenate(values, axis=1) if values else np.zeros((len(group), 0))
        for k, n in enumerate(group):
            traces[n] = Trace(n, t, v[k])
    return traces


@click.command("plot")
@_window_arguments
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Image file (.png; .svg and .pdf work too).")
@click.option("--points", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Points per channel (MinMaxLTTB on the server): a day draws as fast "
                   "as a minute.")
@click.option("--utc", is_flag=True, help="Time axis in UTC instead of local time.")
@click.option("--title", default=None, help="Title (default: the file and window).")
@click.option("--gaps/--no-gaps", default=True, show_default=True, help="Shade gaps.")
@click.option("--annotations/--no-annotations", default=True, show_default=True,
              help="Mark the recording's records (notes, seizures...).")
@click.option("--scale", type=click.Choice(["common", "channel"]), default="common",
              show_default=True, help="One amplitude scale for every channel, or one each "
                                      "(each with its own scale bar).")
@_PASSWORD_OPTION
@_client_options
def plot_cmd(address, file, channels, start, end, duration, output, points, utc, title, gaps,
             annotations, scale, password, **copts):
    """Draw a window of recording FILE from the server as an image.

    Channels are stacked on a time axis in local time (uUTC on top), on one
    amplitude scale (a scale bar says how much; --scale channel gives each
    its own); gaps are shaded and annotations marked when the server reports
    them. Example:

    \b
        mef3io-server plot localhost:50051 /data/p1.mefd -s +1h -d 1h -o hour.png
    """
    from .plot import plot_traces
    from .timespec import format_duration, format_uutc

    _check_output_folder(output)
    address, file = _target(address, file)
    with _connect(address, **copts) as client:
        info = _open_recording(client, file, password)
        names, idx = _select_channels(info, channels)
        t0, t1 = _window(info, idx, start, end, duration, local=not utc)
        rates = dict(zip(info["channel_names"], _rates(info)))
        units = dict(zip(info["channel_names"], info.get("channel_units") or []))
        segments = _optional_rpc(client, "get_segments", file, channels=names)
        gaps_of = _gaps(client, file, names, t0, t1, rates, segments)
        traces = _plot_traces(client, file, names, t0, t1, points, rates, gaps_of)
        records = (_optional_rpc(client, "get_records", file, channels=names, start_uutc=t0,
                                 end_uutc=t1) if annotations else [])
    if records is None:
        click.echo("note: this server does not report annotations (GetRecords); none marked",
                   err=True)
    for n, tr in traces.items():
        tr.units = units.get(n, "")
        if gaps:
            tr.gaps = gaps_of[n]
    title = title if title is not None else (
        f"{os.path.basename(file.rstrip('/'))}   {format_uutc(t0, not utc)[:23]}   "
        f"+{format_duration(t1 - t0)}")
    plot_traces(output, [traces[n] for n in names], t0, t1, records or [], title=title,
                local=not utc, common_scale=scale == "common")
    click.echo(f"wrote {output}", err=True)


COMMANDS = (ls_cmd, info_cmd, get_cmd, plot_cmd)
