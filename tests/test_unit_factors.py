"""Recovering a channel's units conversion factor from its counts and its float32 values."""
from __future__ import annotations

import numpy as np
import pytest

from mef3io_server.unit_factors import RAW_GAP, infer_factor


def served(counts, factor):
    """What the server sends for ``counts``: float32(count * factor), as mef3io computes it."""
    return (counts.astype(np.float64) * factor).astype(np.float32)


@pytest.mark.parametrize("factor", [1.0, 0.1, 0.01, 0.001, 1e-4, 0.25, 0.0195, 2.5e-7, 40.0])
def test_writers_factors_come_back_exactly(factor):
    counts = np.random.default_rng(1).integers(-2**20, 2**20, 256).astype(np.int32)
    assert infer_factor(counts, served(counts, factor)) == factor


def test_a_factor_that_is_no_short_decimal_is_close():
    factor = 1 / 3 * 1e-3
    counts = np.random.default_rng(2).integers(-30000, 30000, 256).astype(np.int32)
    got = infer_factor(counts, served(counts, factor))
    assert abs(got - factor) / factor < 2**-23
    np.testing.assert_array_equal(served(counts, got), served(counts, factor))


def test_gaps_and_zeros_are_ignored_and_flat_is_unknown():
    counts = np.array([RAW_GAP, 0, 1234, -77, RAW_GAP], dtype=np.int32)
    values = served(counts, 0.001)
    values[[0, 4]] = np.nan
    assert infer_factor(counts, values) == 0.001
    assert infer_factor(np.zeros(10, np.int32), np.zeros(10, np.float32)) is None
    assert infer_factor(np.full(3, RAW_GAP, np.int32), np.full(3, np.nan, np.float32)) is None


def test_a_client_refuses_float32_when_int32_was_asked():
    """An older server ignores SignalRangeRequest.dtype and sends float32."""
    from mef3io_server import messages
    from mef3io_server.protobufs import gRPCMef3Server_pb2 as pb2

    asm = messages.SignalAssembler(None, "int32")
    rows = np.zeros((1, 4), np.float32)
    asm.feed(pb2.SignalChunk(array_bytes=rows.tobytes(), dtype="float32", shape=[1, 4], fs=1.0))
    with pytest.raises(messages.ServerUnsupported, match="dtype=int32"):
        asm.result()
