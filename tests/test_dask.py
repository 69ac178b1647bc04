"""mef3io_server.dask.read_signal: lazy arrays read chunk by chunk through the server."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from conftest import T0, direct_read, random_walk

pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

FS = 256.0


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from conftest import write_session

    n = int(200 * FS)
    x = [random_walk(n, seed=s) for s in range(3)]
    for i, xi in enumerate(x):
        xi[int((40 + i) * FS):int((55 + i) * FS)] = np.nan    # a NaN gap per channel
    path = tmp_path_factory.mktemp("dask") / "dask_rec.mefd"
    return write_session(path, {"x": x[0], "y": x[1], "z": [(x[2], FS, T0),
                                                              (x[2][:5000], FS, T0 + 230_000_000)]})


@pytest.fixture(scope="module")
def server(recording):
    from conftest import launch_server

    h = launch_server({"DATA_ROOTS": str(recording.parent)})
    yield h
    h.stop()


def test_equals_a_direct_read_exactly(server, recording):
    from mef3io_server.dask import read_signal

    x = read_signal(server.address, str(recording), chunk_s=20)
    end = T0 + 230_000_000 + round(5000 * 1e6 / FS)
    assert x.mef["start_uutc"] == T0 and x.mef["end_uutc"] == end
    assert x.dtype == np.float32 and x.shape == (3, round((end - T0) * FS / 1e6))
    assert set(x.chunks[1][:-1]) == {20 * 256}                # whole 10 s tiles
    got = x.compute(scheduler="threads")
    assert np.array_equal(got, direct_read(recording, None, T0, end), equal_nan=True)
    # The graph travels to workers: it must survive pickling.
    again = pickle.loads(pickle.dumps(x[:, 5000:7000]))
    assert np.array_equal(again.compute(scheduler="sync"), got[:, 5000:7000], equal_nan=True)


def test_window_off_the_tile_grid(server, recording):
    from mef3io_server.dask import read_signal

    t0, t1 = T0 + 12_345_678, T0 + 187_654_321
    x = read_signal(server.address, str(recording), ["z", "x"], t0, t1, chunk_s=30)
    assert x.chunks[1][0] < 30 * 256                          # up to the next tile edge
    ref = direct_read(recording, ["z", "x"], t0, t1)
    assert np.array_equal(x.compute(scheduler="sync"), ref, equal_nan=True)
    assert np.array_equal(x[:, 1000:9000].compute(scheduler="sync"), ref[:, 1000:9000],
                          equal_nan=True)


def test_statistics_on_a_local_cluster(server, recording):
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from mef3io_server.dask import read_signal

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        x = read_signal(server.address, str(recording))
        stats = dask.compute(da.nanmean(x, axis=1), da.nanstd(x, axis=1),
                             da.nanmin(x, axis=1), da.nanmax(x, axis=1),
                             da.isnan(x).sum(axis=1))
    ref = direct_read(recording, None, x.mef["start_uutc"], x.mef["end_uutc"]).astype(np.float64)
    np.testing.assert_allclose(stats[0], np.nanmean(ref, axis=1), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(stats[1], np.nanstd(ref, axis=1), rtol=1e-5)
    assert np.array_equal(stats[2], np.nanmin(ref, axis=1))
    assert np.array_equal(stats[3], np.nanmax(ref, axis=1))
    assert np.array_equal(stats[4], np.isnan(ref).sum(axis=1))


def test_bad_requests(server, recording):
    from mef3io_server.dask import read_signal

    with pytest.raises(ValueError, match="nope"):
        read_signal(server.address, str(recording), ["x", "nope"])
    with pytest.raises(ValueError, match="empty window"):
        read_signal(server.address, str(recording), None, T0 + 10, T0)
    with pytest.raises(RuntimeError, match="cannot open"):
        read_signal(server.address, str(recording.parent / "missing.mefd"))


def test_times_of_every_form_and_windows_outside_the_data(server, recording):
    import warnings

    from mef3io_server.dask import read_signal
    from mef3io_server.exceptions import WindowWarning

    x = read_signal(server.address, str(recording), ["x"], "+10s", "+30s")
    assert x.mef["start_uutc"] == T0 + 10_000_000 and x.shape == (1, 20 * 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # inside the data: nothing said, chunks quiet
        got = x.compute(scheduler="threads")
    assert np.array_equal(got, direct_read(recording, ["x"], T0 + 10_000_000, T0 + 30_000_000),
                          equal_nan=True)
    with pytest.warns(WindowWarning, match="looks like seconds"):
        read_signal(server.address, str(recording), ["x"], T0 // 1_000_000,
                    T0 // 1_000_000 + 60_000_000)
    with pytest.raises(ValueError, match="chunks"), pytest.warns(WindowWarning):
        read_signal(server.address, str(recording), ["x"], 0, 1_800_000_000_000_000)
