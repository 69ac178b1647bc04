"""``mef3io_server.xarray.read_dataarray`` end to end against a real server.

Values equal direct mef3io reads (NaN for NaN), eager and lazy (dask-backed,
through the Dask adapter); the time coordinate is the samples' UTC times;
``n_points`` equals the client's reduced read.
"""
from __future__ import annotations


import numpy as np
import pytest

from conftest import T0, direct_read, random_walk, write_session
from mef3io_server.window_pieces import sample_times

xr = pytest.importorskip("xarray")
import mef3io_server.xarray as mx  # noqa: E402

S = 1_000_000


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    d = tmp_path_factory.mktemp("xr")
    a = random_walk(256 * 120, 1)
    a[256 * 30:256 * 33] = np.nan
    return {"main": write_session(d / "main.mefd", {"Fz": a, "Cz": random_walk(256 * 120, 2),
                                                    "Pz": random_walk(256 * 120, 3)}),
            "mixed": write_session(d / "mixed.mefd", {"s": (random_walk(256 * 4, 1), 256.0),
                                                      "f": (random_walk(512 * 4, 2), 512.0)})}


def test_eager_window(recs, shared_server):
    path = str(recs["main"])
    da = mx.read_dataarray(shared_server.address, path, ["Cz", "Fz"],
                           start=T0 + 25 * S, end=T0 + 40 * S + 1234)
    assert da.dims == ("channel", "time") and list(da.channel.values) == ["Cz", "Fz"]
    assert isinstance(da.data, np.ndarray) and da.dtype == np.float32
    np.testing.assert_array_equal(da.values, direct_read(path, ["Cz", "Fz"], T0 + 25 * S,
                                                         T0 + 40 * S + 1234))
    want = sample_times(T0 + 25 * S, 0, da.sizes["time"], 256.0)
    np.testing.assert_array_equal(da.time.values.astype("datetime64[us]").astype(np.int64), want)
    assert da.time.values[0] == np.datetime64("2020-09-13T12:27:05", "ns")
    assert da.attrs["fs"] == 256.0 and da.attrs["units"] == "uV" and da.attrs["path"] == path
    assert np.isnan(da.sel(channel="Fz").values[5 * 256:8 * 256]).all()


def test_times_as_strings_and_datetimes(recs, shared_server):
    import datetime as dt
    path = str(recs["main"])
    a = mx.read_dataarray(shared_server.address, path, ["Pz"], start="2020-09-13T12:26:50",
                          end=np.datetime64("2020-09-13T12:26:52"))
    b = mx.read_dataarray(shared_server.address, path, ["Pz"],
                          start=dt.datetime(2020, 9, 13, 12, 26, 50, tzinfo=dt.timezone.utc),
                          end=T0 + 12 * S)
    assert a.sizes["time"] == 512
    xr.testing.assert_identical(a, b)


def test_lazy_through_dask(recs, shared_server, monkeypatch):
    path = str(recs["main"])
    monkeypatch.setattr(mx, "LAZY_ABOVE_BYTES", 1024)          # "long" for this test
    da = mx.read_dataarray(shared_server.address, path, chunk_s=20.0)
    assert da.chunks is not None and len(da.chunks[1]) > 1       # dask-backed, several reads
    np.testing.assert_array_equal(da.compute().values, direct_read(path, None, T0, T0 + 120 * S))
    eager = mx.read_dataarray(shared_server.address, path, lazy=False)
    assert eager.chunks is None
    xr.testing.assert_identical(da.compute(), eager)


def test_n_points(recs, shared_server, client_factory):
    path = str(recs["main"])
    da = mx.read_dataarray(shared_server.address, path, n_points=600)
    assert da.shape == (3, 600)
    c = client_factory(shared_server.address)
    c.open_file(path)
    ref = c.get_signal_range(path, None, T0, T0 + 120 * S, n_points=600)
    np.testing.assert_array_equal(da.values, ref["array"])
    assert da.attrs["fs"] == pytest.approx(5.0)
    assert da.time.values[1] - da.time.values[0] == np.timedelta64(200, "ms")


def test_errors(recs, shared_server):
    with pytest.raises(ValueError, match="256 Hz: s .*512 Hz: f"):
        mx.read_dataarray(shared_server.address, str(recs["mixed"]))
    with pytest.raises(ValueError, match="inverted"):
        mx.read_dataarray(shared_server.address, str(recs["main"]), start=T0 + S, end=T0)
