"""DemandGate: background decodes wait for foreground ones, never forever."""
from __future__ import annotations

import threading
import time

from mef3io_server.server.decode.demand_gate import DemandGate


def _start_waiter(gate: DemandGate) -> tuple[threading.Thread, threading.Event]:
    went = threading.Event()

    def bg():
        gate.wait_turn()
        went.set()

    t = threading.Thread(target=bg, daemon=True)
    t.start()
    return t, went


def test_background_starts_at_once_when_nothing_is_demanded():
    gate = DemandGate(max_wait_s=30)
    t, went = _start_waiter(gate)
    assert went.wait(5)
    assert gate.waits == 0


def test_background_waits_while_a_foreground_decode_runs():
    gate = DemandGate(max_wait_s=30)
    with gate.demand():
        t, went = _start_waiter(gate)
        assert not went.wait(0.3), "a background decode started during a foreground one"
    assert went.wait(5), "the end of the foreground decode did not release it"
    assert gate.waits == 1 and gate.waited_s > 0.2


def test_nested_demand_holds_until_the_last_ends():
    gate = DemandGate(max_wait_s=30)
    with gate.demand():
        with gate.demand():
            t, went = _start_waiter(gate)
        assert not went.wait(0.3)
    assert went.wait(5)


def test_an_urgent_waiter_lets_background_decodes_go():
    gate = DemandGate(max_wait_s=30)
    with gate.demand():
        t, went = _start_waiter(gate)
        assert not went.wait(0.2)
        with gate.urgent():
            assert went.wait(5), "a read waiting on prefetch left prefetch waiting"


def test_endless_demand_delays_background_at_most_max_wait():
    gate = DemandGate(max_wait_s=0.2)
    with gate.demand():
        start = time.monotonic()
        t, went = _start_waiter(gate)
        assert went.wait(5)
        assert time.monotonic() - start >= 0.15


def test_close_releases_waiters():
    gate = DemandGate(max_wait_s=30)
    with gate.demand():
        t, went = _start_waiter(gate)
        assert not went.wait(0.2)
        gate.close()
        assert went.wait(5)
