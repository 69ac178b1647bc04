"""Channels at different rates in one read (``mixed_rates``), end to end against mef3io.

EEG at 256 Hz, ECG at 512 Hz and a slow channel at 64 Hz, with a gap; each
channel of a mixed read must equal a direct mef3io read of that channel alone
over the same window, at its own rate; with ``n_points`` the channels with
enough samples share one bucket grid. Requests without ``mixed_rates`` (the
published client's) keep today's answer: a refusal naming the rates.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from mef3io_server.exceptions import ReadFailed
from mef3io_server.montages import bipolar, highpass
from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2
from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
from mef3io_server.server.reduction import reduce_to_points

from conftest import T0, direct_read, launch_server, random_walk, write_session

SECONDS = 120
RATES = {"Fp1": 256.0, "ECG": 512.0, "F3": 256.0, "slow": 64.0}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    chans = {}
    for i, (name, fs) in enumerate(RATES.items()):
        x = random_walk(int(fs * SECONDS), seed=30 + i)
        if name == "ECG":
            x[int(fs * 50):int(fs * 53)] = np.nan          # a 3 s gap
        chans[name] = (x, fs)
    path = tmp_path_factory.mktemp("mixed") / "mixed.mefd"
    return write_session(path, chans)


@pytest.fixture(scope="module")
def server():
    h = launch_server({"TILE_CACHE_MB": "64", "TILE_DURATION_S": "7"})
    yield h
    h.stop()


@pytest.fixture
def client(server, client_factory, recording):
    c = client_factory(server.address, raise_errors=True)
    c.open_file(str(recording))
    return c


@pytest.mark.parametrize("start_s, seconds", [(0.0, 10.0), (48.3, 7.0), (13.9, 20.0),
                                              (115.0, 10.0)])
def test_each_channel_at_its_own_rate_equals_mef3io(client, recording, start_s, seconds):
    """Windows off the 7 s tile grid, across tile edges, over ECG's gap, past the end."""
    t0 = T0 + int(start_s * 1e6)
    t1 = t0 + int(seconds * 1e6)
    names = ["ECG", "Fp1", "slow", "F3"]
    res = client.get_signal_range(str(recording), names, t0, t1, mixed_rates=True)
    assert res["channel_names"] == names
    assert res["fs"] == [RATES[n] for n in names]
    assert res["start_uutc"] == t0
    for name, arr, n in zip(names, res["arrays"], res["n_samples"]):
        want = direct_read(recording, [name], t0, t1)[0]
        assert arr.size == n == want.size
        np.testing.assert_array_equal(arr, want)


def test_all_channels_when_none_named(client, recording):
    order = client.get_file_info(str(recording))["channel_names"]      # the file's order
    res = client.get_signal_range(str(recording), None, T0, T0 + 10**6, mixed_rates=True)
    assert res["channel_names"] == order
    assert res["n_samples"] == [int(RATES[n]) for n in order]


def test_n_points_puts_every_channel_on_one_grid(client, recording):
    t0, t1 = T0 + 1_000_000, T0 + 101_000_000
    names = ["slow", "ECG", "Fp1"]
    res = client.get_signal_range(str(recording), names, t0, t1, n_points=1500,
                                  mixed_rates=True)
    assert res["n_samples"] == [1500, 1500, 1500]
    assert len(set(res["fs"])) == 1 and res["fs"][0] == pytest.approx(15.0)
    for name, arr in zip(names, res["arrays"]):
        want = reduce_to_points(direct_read(recording, [name], t0, t1), 1500)[0]
        np.testing.assert_array_equal(arr, want)


def test_n_points_above_a_slow_channels_samples_leaves_it_at_its_rate(client, recording):
    t0, t1 = T0, T0 + 10_000_000                 # slow: 640 samples < 1000
    res = client.get_signal_range(str(recording), ["Fp1", "slow"], t0, t1, n_points=1000,
                                  mixed_rates=True)
    assert res["n_samples"] == [1000, 640]
    assert res["fs"] == [pytest.approx(100.0), 64.0]
    np.testing.assert_array_equal(res["arrays"][1], direct_read(recording, ["slow"], t0, t1)[0])


def test_filters_per_rate(client, recording):
    t0, t1 = T0 + 20_000_000, T0 + 40_000_000
    res = client.get_signal_range(str(recording), ["ECG", "Fp1"], t0, t1, mixed_rates=True,
                                  filters=[highpass(1.0)])
    for name, arr in zip(["ECG", "Fp1"], res["arrays"]):
        fs = RATES[name]
        whole = direct_read(recording, [name], T0, T0 + 50 * 10**6)[0].astype(np.float64)
        want = signal.sosfiltfilt(signal.butter(2, 1.0, "highpass", output="sos", fs=fs), whole)
        i = int(20 * fs)
        np.testing.assert_allclose(arr, want[i:i + arr.size], atol=1e-3 * np.abs(want).max())


def test_cache_fs_groups_by_served_rate(server, client_factory, recording):
    c = client_factory(server.address, raise_errors=True)
    c.open_file(str(recording), cache_fs=128.0, allow_mixed_rates=True)
    res = c.get_signal_range(str(recording), ["ECG", "Fp1", "slow"], T0, T0 + 10**7,
                             mixed_rates=True)
    assert res["fs"] == [128.0, 128.0, 64.0]
    plain = c.get_signal_range(str(recording), ["ECG", "Fp1"], T0, T0 + 10**7)
    np.testing.assert_array_equal(np.stack(res["arrays"][:2]), plain["array"])


def test_without_mixed_rates_the_published_answer_is_kept(server, recording, client):
    """The published client's request (no field 23): refused, naming the rates."""
    import grpc

    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.gRPCMef3ServerStub(ch)
        req = pb2.SignalRangeRequest(file_path=str(recording), channel_names=["Fp1", "ECG"],
                                     start_uutc=T0, end_uutc=T0 + 10**6)
        msgs = list(stub.GetSignalRange(req))
    assert len(msgs) == 1 and "share a sampling rate" in msgs[0].error_message
    assert "512 Hz" in msgs[0].error_message and not msgs[0].HasField("group")


def test_a_montage_across_rates_is_refused(client, recording):
    with pytest.raises(ReadFailed, match="share a sampling rate"):
        client.get_signal_range(str(recording), None, T0, T0 + 10**6,
                                montage=bipolar([("Fp1", "ECG")]))
    with pytest.raises(ReadFailed, match="one rate"):
        client.get_signal_range(str(recording), None, T0, T0 + 10**6, mixed_rates=True,
                                montage=bipolar([("Fp1", "F3")]))
