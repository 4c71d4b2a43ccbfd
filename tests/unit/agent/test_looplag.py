"""``LagProbe``: a blocking call on the loop is lag of our own; a wait for a CPU is not."""

from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet_agent.looplag import LagProbe, _queued

pytestmark = pytest.mark.unit


async def test_a_blocking_call_on_the_loop_is_our_own_lag():
    probe = LagProbe(0.01)
    probe.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)                 # a blocking call: the thread sleeps, it is not queued
        await asyncio.sleep(0.05)
    finally:
        await probe.stop()
    assert probe.samples >= 3
    assert probe.max_own_lag >= 0.15 and probe.max_lag >= probe.max_own_lag


def test_this_machine_reports_run_queue_waits():
    # Linux's schedstat is what tells the two apart; without it own lag is the plain lag.
    q = _queued()
    assert q is not None and q >= 0.0
