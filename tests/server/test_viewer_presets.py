"""The montages and filters the web viewer offers by name: the same DerivedSpec a gRPC
client's montage and filters become."""
from __future__ import annotations

import pytest

from mef3io_server.montages import average_reference, bandpass, bipolar, notch
from mef3io_server.server.errors import BadRequest
from mef3io_server.server.service import derived_spec as grpc_spec
from mef3io_server.server.viewer_presets import bipolar_pairs, derived_spec, offers
from mef3io_server.messages import signal_request


def test_double_banana_from_the_10_20_names_present():
    chans = ["EKG", "o1", "FP1", "C3", "T7", "F7", "P3", "F3", "Fp2", "Fz", "Cz"]
    assert [f"{a}-{b}" for a, b in bipolar_pairs(chans)] == [
        "FP1-F7", "F7-T7", "FP1-F3", "F3-C3", "C3-P3", "P3-o1", "Fz-Cz"]


def test_neighbours_in_order_without_10_20_names():
    assert bipolar_pairs(["E2", "E0", "E1"]) == [("E2", "E0"), ("E0", "E1")]
    assert bipolar_pairs(["E0"]) == []


def test_each_preset_is_the_spec_of_the_same_grpc_request():
    chans = ["Fp1", "F3", "C3", "P3"]
    pairs = [("Fp1", "F3"), ("F3", "C3"), ("C3", "P3")]
    cases = [("bipolar", "0.5-70Hz", bipolar(pairs), [bandpass(0.5, 70)]),
             ("average", "0.5-70Hz-notch60", average_reference(chans),
              [bandpass(0.5, 70), notch(60)]),
             ("", "0.5-70Hz-notch50", None, [bandpass(0.5, 70), notch(50)])]
    for montage, filt, m, f in cases:
        request = signal_request("r.mefd", None, 0, 1, montage=m, filters=f)
        assert derived_spec(montage, filt, chans) == grpc_spec(request, 1024)
    assert derived_spec("", "", chans) is None


def test_offers_and_bad_names():
    o = offers()
    assert {m["name"] for m in o["montages"]} == {"average", "bipolar"}
    assert len(o["filters"]) == 3 and all(f["label"] for f in o["filters"])
    for montage, filt, words in (("x", "", "unknown montage 'x'"),
                                 ("", "x", "unknown filter 'x'"),
                                 ("bipolar", "", "at least two channels")):
        with pytest.raises(BadRequest, match=words):
            derived_spec(montage, filt, ["E0"])
    with pytest.raises(BadRequest, match="MAX_CHANNELS_PER_READ"):
        derived_spec("average", "", ["a", "b", "c"], 2)
