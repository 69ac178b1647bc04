"""``mef3io_server.mne.read_raw`` end to end: a lazy MNE Raw read through a real server.

Oracles: ``mne.io.read_raw_mef`` where it is right (no discontinuity, no
encryption, equal sample counts: names, sfreq, meas_date, cal, orig_units,
records and data to float32 precision); direct mef3io reads where it is
wrong or fails (the three cases of issue 15, each a test here).
"""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from legacy_writer import write_legacy_session

mne = pytest.importorskip("mne")
from mef3io_server.mne import GAP, RawServed, read_raw  # noqa: E402

S = 1_000_000
F32 = 2.0 ** -24          # float32's relative rounding


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mne")
    rng = np.random.default_rng(5)
    gapped = random_walk(256 * 40, 1)
    gapped[256 * 12:256 * 15] = np.nan                       # a 3 s gap on one channel
    legacy_gap = {ch: np.cumsum(rng.standard_normal(250 * 300)) for ch in ("A1", "A2")}
    for x in legacy_gap.values():
        x[250 * 150:250 * 174] = np.nan                      # 24 s without data
    out = {
        "plain": write_session(d / "plain.mefd", {f"E{i}": random_walk(256 * 40, i)
                                                  for i in range(4)}),
        "both_gap": write_session(d / "both_gap.mefd", {
            "a": [(random_walk(256 * 20, 1), 256.0, T0), (random_walk(256 * 15, 2), 256.0,
                                                          T0 + 25 * S)],
            "b": [(random_walk(256 * 20, 3), 256.0, T0), (random_walk(256 * 15, 4), 256.0,
                                                          T0 + 25 * S)]}),
        "mixed": write_session(d / "mixed.mefd", {"slow": (random_walk(256 * 4, 1), 256.0),
                                                  "fast": (random_walk(1024 * 4, 2), 1024.0),
                                                  "slow2": (random_walk(256 * 4, 3), 256.0)}),
        "legacy_gap": write_legacy_session(d / "legacy_gap.mefd", legacy_gap, T0, 250.0),
        "legacy_enc": write_legacy_session(
            d / "legacy_enc.mefd", {ch: np.cumsum(rng.standard_normal(250 * 60))
                                    for ch in ("B1", "B2")}, T0, 250.0,
            password1="pw1", password2="pw2"),
        "legacy_counts": write_legacy_session(
            d / "legacy_counts.mefd", {"C1": np.cumsum(rng.standard_normal(250 * 60)),
                                       "C2": np.r_[np.cumsum(rng.standard_normal(250 * 20)),
                                                   np.full(250 * 5, np.nan),
                                                   np.cumsum(rng.standard_normal(250 * 35))]},
            T0, 250.0),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mef3io
        with mef3io.Writer(str(d / "notes.mefd"), overwrite=True) as w:
            for ch in ("Fz", "Cz"):
                w.write(ch, random_walk(256 * 20, 9), T0, fs=256.0)
            w.write_annotations([{"time": T0 + 2 * S, "text": "eyes closed"},
                                 {"time": T0 + 5 * S, "type": "EDFA", "text": "arousal",
                                  "duration": 3 * S}])
            w.write_annotations([{"time": T0 + 7 * S, "text": "artifact"}], channel="Cz")
    out["notes"] = d / "notes.mefd"
    out["gapped"] = write_session(d / "gapped.mefd", {"g": gapped,
                                                      "h": random_walk(256 * 40, 2)})
    return out


def volts(path, names, t0, t1, password=""):
    """mef3io's values of the window in volts (the recordings here are in uV)."""
    return direct_read(path, names, t0, t1, password).astype(np.float64) * 1e-6


def assert_f32_close(ours, theirs):
    """Equal to float32 precision, NaN for NaN."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=2 * F32, atol=0)


def gaps(raw):
    return [(a["onset"], a["duration"], tuple(a.get("ch_names", ()))) for a in raw.annotations
            if a["description"] == GAP]


# ---- agreement with mne.io.read_raw_mef where it is right

def check_same_as_mne(ours, theirs):
    assert ours.ch_names == theirs.ch_names
    assert ours.info["sfreq"] == theirs.info["sfreq"]
    assert ours.info["meas_date"] == theirs.info["meas_date"]
    assert [c["cal"] for c in ours.info["chs"]] == [c["cal"] for c in theirs.info["chs"]]
    assert ours._orig_units == theirs._orig_units
    assert ours.n_times == theirs.n_times
    assert_f32_close(ours.get_data(), theirs.get_data())
    mine = [(round(a["onset"], 6), a["duration"], a["description"], tuple(a.get("ch_names", ())))
            for a in ours.annotations]
    mnes = [(round(a["onset"], 6), a["duration"], a["description"], tuple(a.get("ch_names", ())))
            for a in theirs.annotations]
    assert mine == mnes


@pytest.mark.parametrize("name", ["plain_single", "multi_channel", "with_annotations",
                                  "fractional_fs"])
def test_agrees_with_read_raw_mef_on_golden(name, golden, shared_server):
    path = str(golden / f"{name}.mefd")
    ours = read_raw(shared_server.address, path, verbose=False)
    assert isinstance(ours, mne.io.BaseRaw) and not ours.preload
    check_same_as_mne(ours, mne.io.read_raw_mef(path, verbose=False))
    if name == "with_annotations":
        assert len(ours.annotations) >= 2


def test_agrees_with_read_raw_mef_on_a_written_recording(recs, shared_server):
    ours = read_raw(shared_server.address, str(recs["plain"]), verbose=False)
    theirs = mne.io.read_raw_mef(str(recs["plain"]), verbose=False)
    check_same_as_mne(ours, theirs)
    assert ours.info["chs"][0]["cal"] == 0.01 * 1e-6       # precision=2 factor, in volts
    assert gaps(ours) == []


# ---- where mne.io.read_raw_mef is wrong or fails: ours is right

def test_legacy_24s_discontinuity_stays_at_its_time(recs, shared_server):
    path = str(recs["legacy_gap"])
    theirs = mne.io.read_raw_mef(path, verbose=False)
    # MNE: 69 000 samples (276 s) for 300 s, no BAD_ACQ_SKIP: after the gap, 24 s early
    assert theirs.n_times == 250 * 276
    assert not any(a["description"] == "BAD_ACQ_SKIP" for a in theirs.annotations)
    ours = read_raw(shared_server.address, path, verbose=False)
    assert ours.n_times == 250 * 300
    assert gaps(ours) == [(150.0, 24.0, ())]
    data = ours.get_data()
    assert_f32_close(data, volts(path, None, T0, T0 + 300 * S))
    assert np.isnan(data[:, 250 * 150:250 * 174]).all()
    assert not np.isnan(data[:, :250 * 150]).any() and not np.isnan(data[:, 250 * 174:]).any()
    # before the gap MNE is right, after it MNE's sample i is ours i + 24 s
    theirs_data = theirs.get_data()
    assert_f32_close(data[:, :250 * 150], theirs_data[:, :250 * 150])
    assert_f32_close(data[:, 250 * 174:], theirs_data[:, 250 * 150:])


def test_golden_discontinuity(golden, shared_server):
    path = str(golden / "multi_segment.mefd")
    theirs = mne.io.read_raw_mef(path, verbose=False)
    ours = read_raw(shared_server.address, path, verbose=False)
    assert theirs.n_times == 4000 and ours.n_times == 4256      # a 1 s gap MNE drops
    assert gaps(ours) == [(2000 / 256, 1.0, ())]
    t0 = 1577836800000000                                        # the golden sessions' start
    assert_f32_close(ours.get_data(), volts(path, None, t0, t0 + 16_625_000))


def test_level1_password_of_an_encrypted_session(recs, shared_server):
    path = str(recs["legacy_enc"])
    try:                       # MNE: fails, or answers nonsense (sample counts of 1e18)
        theirs = mne.io.read_raw_mef(path, password="pw1", verbose=False)
        assert theirs.n_times != 250 * 60
    except (ValueError, RuntimeError, OverflowError, MemoryError):
        pass
    ours = read_raw(shared_server.address, path, password="pw1", verbose=False)
    assert ours.n_times == 250 * 60 and ours.info["sfreq"] == 250.0
    assert_f32_close(ours.get_data(), volts(path, None, T0, T0 + 60 * S, "pw1"))
    # with the level-2 password MNE is right, and both agree
    check_same_as_mne(read_raw(shared_server.address, path, password="pw2", verbose=False),
                      mne.io.read_raw_mef(path, password="pw2", verbose=False))


def test_golden_encrypted_level1(golden, shared_server):
    path = str(golden / "enc_both.mefd")
    ours = read_raw(shared_server.address, path, password="pass1", verbose=False)
    assert ours.n_times == 2000
    assert_f32_close(ours.get_data(),
                     volts(path, None, 1577836800000000, 1577836807812500, "pass1"))


def test_channels_with_different_sample_counts(recs, shared_server):
    path = str(recs["legacy_counts"])
    with pytest.raises(ValueError, match="inconsistent n_samples"):
        mne.io.read_raw_mef(path, verbose=False)
    ours = read_raw(shared_server.address, path, verbose=False)
    assert ours.n_times == 250 * 60
    assert gaps(ours) == [(20.0, 5.0, ("C2",))]           # on C2 only
    assert_f32_close(ours.get_data(), volts(path, None, T0, T0 + 60 * S))


# ---- MNE's own tools on a lazy Raw, across a gap

def test_gap_annotations_cover_exactly_the_nan_samples(recs, shared_server):
    for name in ("both_gap", "gapped", "legacy_counts"):
        raw = read_raw(shared_server.address, str(recs[name]), verbose=False)
        data = raw.get_data()
        for k, ch in enumerate(raw.ch_names):
            mask = np.zeros(raw.n_times, bool)
            for onset, duration, chs in gaps(raw):
                if not chs or ch in chs:
                    i0 = int(round(onset * raw.info["sfreq"]))
                    mask[i0:i0 + int(round(duration * raw.info["sfreq"]))] = True
            np.testing.assert_array_equal(np.isnan(data[k]), mask, err_msg=f"{name} {ch}")


def test_windows_crop_and_wall_clock(recs, shared_server):
    path = str(recs["both_gap"])
    raw = read_raw(shared_server.address, path, verbose=False)
    assert raw.n_times == 256 * 40
    full = volts(path, None, T0, T0 + 40 * S)
    for start, stop in [(0, 1), (1, 7), (1001, 5003), (256 * 19 + 3, 256 * 27 + 1),
                        (256 * 40 - 5, 256 * 40)]:
        assert_f32_close(raw.get_data(start=start, stop=stop), full[:, start:stop])
    cropped = raw.copy().crop(tmin=18.0, tmax=30.0)
    assert_f32_close(cropped.get_data(), full[:, 256 * 18:256 * 30 + 1])
    assert cropped.annotations[0]["description"] == GAP
    picked = read_raw(shared_server.address, path, channels=["b"], verbose=False)
    assert picked.ch_names == ["b"]
    assert_f32_close(picked.get_data(), full[1:2])


def test_filter_across_a_gap(recs, shared_server):
    path = str(recs["both_gap"])
    raw = read_raw(shared_server.address, path, verbose=False).load_data()
    filtered = raw.copy().filter(1.0, 30.0, verbose=False)     # skips BAD_ACQ_SKIP by default
    data = filtered.get_data()
    assert np.isnan(data[:, 256 * 20:256 * 25]).all()          # the gap stays a gap
    assert np.isfinite(data[:, :256 * 20]).all() and np.isfinite(data[:, 256 * 25:]).all()
    # the stretch before the gap is filtered as if it were alone
    alone = mne.io.RawArray(raw.get_data()[:, :256 * 20], raw.info.copy(), verbose=False)
    np.testing.assert_allclose(data[:, :256 * 20],
                               alone.filter(1.0, 30.0, verbose=False).get_data(), atol=1e-12)


def test_epochs_reject_by_annotation(recs, shared_server):
    path = str(recs["both_gap"])
    raw = read_raw(shared_server.address, path, verbose=False)
    onsets = np.array([2, 10, 19, 22, 27, 33]) * 256
    events = np.c_[onsets, np.zeros(6, int), np.ones(6, int)]
    epochs = mne.Epochs(raw, events, tmin=0.0, tmax=2.0 - 1 / 256, baseline=None,
                        reject_by_annotation=True, preload=True, verbose=False)
    kept = epochs.selection.tolist()
    assert kept == [0, 1, 4, 5]                                # 19 s and 22 s touch the gap
    full = volts(path, None, T0, T0 + 40 * S)
    for k, i in enumerate(kept):
        assert_f32_close(epochs.get_data()[k], full[:, onsets[i]:onsets[i] + 512])


def test_records_become_annotations(recs, shared_server):
    raw = read_raw(shared_server.address, str(recs["notes"]), verbose=False)
    got = [(a["onset"], a["duration"], a["description"], tuple(a.get("ch_names", ())))
           for a in raw.annotations]
    assert got == [(2.0, 0.0, "Note: eyes closed", ()), (5.0, 3.0, "EDFA: arousal", ()),
                   (7.0, 0.0, "Note: artifact", ("Cz",))]
    theirs = mne.io.read_raw_mef(str(recs["notes"]), verbose=False)
    assert sorted(got) == sorted((a["onset"], a["duration"], a["description"],
                                  tuple(a.get("ch_names", ()))) for a in theirs.annotations)


def test_save_plot_copy_pickle(recs, shared_server, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    path = str(recs["both_gap"])
    raw = read_raw(shared_server.address, path, verbose=False)
    raw.copy().crop(0, 30).save(tmp_path / "x_raw.fif", verbose=False)
    back = mne.io.read_raw_fif(tmp_path / "x_raw.fif", verbose=False)
    assert {a["description"] for a in back.annotations} == {GAP}
    # FIF writes a BAD_ACQ_SKIP span as a skip (MNE reads it back as zeros); the rest is ours
    ours = raw.get_data(stop=back.n_times)
    keep = ~np.isnan(ours[0])
    assert_f32_close(back.get_data()[:, keep], ours[:, keep])
    assert (~keep).sum() == 256 * 5
    fig = raw.plot(show=False, duration=30.0)
    assert fig is not None
    twin = pickle.loads(pickle.dumps(raw))
    assert_f32_close(twin.get_data(stop=300), raw.get_data(stop=300))
    assert copy.deepcopy(raw).recording is raw.recording      # one connection for copies


def test_a_client_as_source_and_preload(recs, shared_server, client_factory):
    client = client_factory(shared_server.address)
    raw = read_raw(client, str(recs["plain"]), preload=True, verbose=False)
    assert raw.preload and raw.recording.client is client
    assert_f32_close(raw.get_data(), volts(str(recs["plain"]), None, T0, T0 + 40 * S))


def test_errors_name_the_problem(recs, shared_server):
    with pytest.raises(ValueError) as e:
        read_raw(shared_server.address, str(recs["mixed"]), verbose=False)
    msg = str(e.value)
    assert "256 Hz: slow, slow2" in msg and "1024 Hz: fast" in msg and "channels=" in msg
    raw = read_raw(shared_server.address, str(recs["mixed"]), channels=["fast"], verbose=False)
    assert raw.info["sfreq"] == 1024.0
    with pytest.raises(ValueError, match="no channel 'nope'"):
        read_raw(shared_server.address, str(recs["plain"]), channels=["nope"], verbose=False)
    with pytest.raises(RuntimeError, match="password"):
        read_raw(shared_server.address, str(recs["legacy_enc"]), verbose=False)


def test_served_class_is_a_base_raw():
    assert issubclass(RawServed, mne.io.BaseRaw)
