"""MNE-Python on recordings served by mef3io-server: a lazy ``mne.io.BaseRaw``.

Example (see docs/mne.md)::

    from mef3io_server.mne import read_raw

    raw = read_raw("localhost:50051", "/data/patient1.mefd")
    raw.plot()                       # scrolls through the server, nothing copied

:func:`read_raw` returns a :class:`RawServed`, a real ``mne.io.BaseRaw``
subclass whose samples stay on the server: ``raw.get_data``, ``raw.crop``,
``raw.filter``, ``mne.Epochs``, ``raw.plot()`` and ``raw.save`` each read
just the windows they need (``preload=True`` reads everything at once).

* Time axis: sample ``i`` at ``start + i / sfreq`` (``start`` the earliest
  start of the channels read, ``meas_date`` too), wall-clock exact: a sample
  recorded after a gap stays at its own time.
* Gaps (no data: discontinuities, time before a channel's start or after its
  end) hold NaN and are ``BAD_ACQ_SKIP`` annotations over exactly their
  samples, on every channel they concern (``ch_names`` empty when all). MNE
  skips them by default: ``raw.filter`` filters the stretches between them
  (``skip_by_annotation``), ``mne.Epochs`` drops epochs that overlap them
  (``reject_by_annotation=True``), ``raw.get_data(reject_by_annotation=...)``
  omits them.
* The session's MEF records become annotations (onset, duration, ``"Type:
  text"``, their channel), as ``mne.io.read_raw_mef`` makes them.
* Units: each channel's ``cal`` is its units conversion factor times its
  unit's size in volts (``uV``: 1e-6), as ``mne.io.read_raw_mef`` sets it;
  ``orig_units`` keeps the unit. Data come in volts.

Needs the ``mne`` extra (``pip install mef3io-server[mne]``).
"""
from __future__ import annotations

import datetime as _dt
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .served_recording import ServedRecording
from .server.tile_grid import exact_period_samples, round_half_up, samples_in_window
from .window_pieces import sample_time

try:
    import mne as _mne
    from mne.io import BaseRaw as _BaseRaw
except ImportError:          # the optional extra: read_raw says how to get it
    _mne = None
    _BaseRaw = object

#: Volts per unit, by the lower-cased unit description (others: 1, as MNE does).
VOLTS_PER_UNIT = {"v": 1.0, "volt": 1.0, "volts": 1.0,
                  "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3,
                  "uv": 1e-6, "\N{MICRO SIGN}v": 1e-6, "\N{GREEK SMALL LETTER MU}v": 1e-6,
                  "microvolt": 1e-6, "microvolts": 1e-6,
                  "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9}

#: The annotation description of a stretch without data.
GAP = "BAD_ACQ_SKIP"


def _require_mne():
    if _mne is None:
        raise ImportError("mef3io_server.mne needs MNE-Python: pip install "
                          "'mef3io-server[mne]' (or pip install mne)")


def volts_per_unit(units: str) -> float:
    """Volts in one ``units`` (``"uV"`` -> 1e-6); 1.0 for a unit MNE does not know."""
    key = str(units or "").strip().strip("\x00").lower().replace(" ", "")
    return VOLTS_PER_UNIT.get(key, 1.0)


def read_raw(source, path: str, *, channels: Optional[Sequence[str]] = None,
             password: Optional[str] = None, preload=False, ch_types="seeg",
             verbose=None, **client_kwargs) -> "RawServed":
    """A lazy MNE Raw of a recording on a mef3io-server.

    Parameters
    ----------
    source : str or Mef3Client
        ``host:port`` of the server, or a :class:`~mef3io_server.client.Mef3Client`.
    path : str
        The recording (``.mefd``), as the server sees it.
    channels : list of str, optional
        Channels to read, in this order (default: all). They must share one
        sampling rate; a recording of several rates raises ``ValueError``
        naming each rate's channels.
    password : str, optional
        Level-1 or level-2 password of an encrypted recording.
    preload : bool
        Read every sample now (``True``) instead of on demand.
    ch_types : str or list of str
        MNE channel types (default ``"seeg"``, as ``mne.io.read_raw_mef``).
    **client_kwargs
        Options of the client made for an address (``token``, ``timeout``...).

    Returns
    -------
    RawServed
        See the module docstring for its time axis, gaps, records and units.
    """
    _require_mne()
    rec = ServedRecording(source, path, password=password, **client_kwargs)
    try:
        return RawServed(rec, channels, ch_types=ch_types, preload=preload, verbose=verbose)
    except BaseException:
        rec.close()
        raise


def _meas_date(start_uutc: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + \
        _dt.timedelta(microseconds=int(start_uutc))


class RawServed(_BaseRaw):
    """``mne.io.BaseRaw`` of a recording read through mef3io-server (see :func:`read_raw`)."""

    def __init__(self, rec: ServedRecording, channels=None, *, ch_types="seeg", preload=False,
                 verbose=None):
        _require_mne()
        chans = rec.pick(channels)
        fs = rec.one_rate(chans, "an MNE Raw")
        names = [c.name for c in chans]
        start = min(c.start_uutc for c in chans)
        end = max(c.end_uutc for c in chans)
        n = samples_in_window(start, end, fs)
        factors = rec.unit_factors(names)
        info = _mne.create_info(names, fs, ch_types)
        divisors = np.ones(len(names))
        for i, (c, ch) in enumerate(zip(chans, info["chs"])):
            u = factors[c.name]
            if u is not None and u > 0:
                divisors[i] = u
            ch["cal"] = divisors[i] * volts_per_unit(c.units)
        with info._unlock():
            info["meas_date"] = _meas_date(start)
        orig_units = {c.name: c.units for c in chans if c.units}
        extras = {"rec": rec, "names": names, "start_uutc": start, "end_uutc": end,
                  "n_samples": n, "fs": fs, "divisors": divisors,
                  "period": exact_period_samples(fs) or 1}
        super().__init__(info, preload=preload, last_samps=[n - 1], raw_extras=[extras],
                         orig_units=orig_units or None, verbose=verbose)
        onsets, durations, descriptions, ch_names = _gap_annotations(rec, chans, fs, start, n)
        for r in rec.records(names):
            onsets.append((r["time_uutc"] - start) / 1e6)
            durations.append(max(r.get("duration_us") or 0, 0) / 1e6)
            descriptions.append(f"{r['type']}: {r['text']}" if r.get("text") else r["type"])
            ch_names.append([r["channel"]] if r.get("channel") else [])
        if onsets:
            order = np.argsort(onsets, kind="stable")
            self.set_annotations(_mne.Annotations(
                onset=np.asarray(onsets)[order], duration=np.asarray(durations)[order],
                description=[descriptions[k] for k in order],
                ch_names=[ch_names[k] for k in order], orig_time=info["meas_date"]))

    @property
    def recording(self) -> ServedRecording:
        """The served recording this Raw reads from (``.path``, ``.client``)."""
        return self._raw_extras[0]["rec"]

    def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
        """Read samples ``[start, stop)`` of the channels ``idx`` from the server.

        The window is widened to whole exact periods of the rate (so that its
        edges fall on whole microseconds of the sample grid, and the read is
        exactly that stretch of the whole recording), then cut back.
        """
        ex = self._raw_extras[fi]
        names = ex["names"]
        rows = np.arange(len(names))[idx]
        if stop <= start:
            return
        q, n, t0 = ex["period"], ex["n_samples"], ex["start_uutc"]
        a = start - start % q
        b = min(n, stop + (-stop) % q)
        fs = ex["fs"]
        ta = sample_time(t0, a, fs)
        tb = ex["end_uutc"] if b == n else sample_time(t0, b, fs)
        arr = ex["rec"].read([names[i] for i in rows], ta, tb)["array"]
        if arr.shape[1] != b - a:
            raise RuntimeError(f"the server sent {arr.shape[1]} samples for [{ta}, {tb}), "
                               f"expected {b - a}")
        block = arr[:, start - a:stop - a].astype(np.float64)
        block /= ex["divisors"][rows][:, None]          # counts: MNE multiplies by cal
        if mult is not None:
            data[:] = mult @ block
        else:
            np.multiply(block, np.asarray(cals).reshape(-1, 1), out=data, casting="unsafe")


def _gap_annotations(rec: ServedRecording, chans, fs: float, start: int, n: int):
    """``BAD_ACQ_SKIP`` annotations (onsets, durations, descriptions, ch_names) over
    the samples of ``[0, n)`` where a channel has no data, from the server's runs.

    A run's first sample sits at index ``round_half_up((run_start - start) * fs)``
    and its samples follow one per index, as mef3io places them. Stretches
    missing on every channel get one annotation without ``ch_names``; the
    others one per stretch, naming the channels it concerns.
    """
    runs = rec.segments([c.name for c in chans])
    missing: dict[tuple[int, int], list[str]] = {}
    for c in chans:
        covered = []
        for r in runs.get(c.name, {}).get("runs", []):
            i0 = round_half_up(Fraction(int(r["start_uutc"]) - start) * Fraction(fs) / 10**6)
            covered.append((i0, i0 + int(r["number_of_samples"])))
        pos = 0
        for i0, i1 in sorted(covered):
            if i0 > pos:
                missing.setdefault((pos, min(i0, n)), []).append(c.name)
            pos = max(pos, i1)
        if pos < n:
            missing.setdefault((pos, n), []).append(c.name)
    everyone = len(chans)
    out = ([], [], [], [])
    for (i0, i1), names in sorted(missing.items()):
        if i1 <= i0:
            continue
        out[0].append(i0 / fs)
        out[1].append((i1 - i0) / fs)
        out[2].append(GAP)
        out[3].append([] if len(names) == everyone else names)
    return out
