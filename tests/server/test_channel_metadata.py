"""Each channel's units conversion factor and description, as mef3io reads them, reach
the client with the file's metadata (FileInfoResponse fields 24 and 25), and the lab
adapters use them as sent."""
from __future__ import annotations

import warnings

import mef3io
import numpy as np

from conftest import GOLDEN, random_walk, write_session


def mef3io_channel_info(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = mef3io.Reader(str(path))
        try:
            return {ch: reader.info(ch) for ch in reader.channels}
        finally:
            reader.close()


def test_factors_and_descriptions_are_those_mef3io_reads(shared_server, client_factory,
                                                         tmp_path, golden):
    written = write_session(tmp_path / "prec.mefd", {
        "p0": random_walk(5000, 1), "p3": random_walk(5000, 2)}, precision=3)
    for path in (written, GOLDEN / "multi_channel.mefd"):
        truth = mef3io_channel_info(path)
        client = client_factory(shared_server.address)
        for answer in (client.open_file(str(path)), client.get_file_info(str(path))):
            assert answer["file_opened"], answer["error_message"]
            names = answer["channel_names"]
            assert answer["channel_units_conversion_factors"] == [
                truth[n]["units_conversion_factor"] for n in names]
            assert answer["channel_descriptions"] == [
                str(truth[n].get("channel_description") or "") for n in names]
    # precision 3 is a factor of 10**-3; the legacy writer's channels say "ts_channel"
    assert set(truth[n]["channel_description"] for n in truth) == {"ts_channel"}


def test_the_adapters_take_the_factor_as_sent(shared_server, tmp_path):
    """ServedRecording (under the MNE Raw and MefReader) gives the factor the server sent,
    the exact float64 mef3io reads (the recovery from samples is for servers that do not
    send it: tests/test_extras_published.py)."""
    from mef3io_server.served_recording import ServedRecording

    path = write_session(tmp_path / "odd.mefd", {"a": random_walk(3000, 3)}, precision=2)
    truth = mef3io_channel_info(path)["a"]["units_conversion_factor"]
    rec = ServedRecording(shared_server.address, str(path))
    try:
        assert rec.unit_factors(["a"]) == {"a": truth}
        assert np.float64(truth) == rec.info["channel_units_conversion_factors"][0]
    finally:
        rec.close()
