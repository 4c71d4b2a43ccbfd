"""The LB fuzz, small (bench/lb/fuzz runs 100,000): mutated requests and mutated
answers through a swarmlet LB process to a recording backend; every invariant of
tests/lbconf/fuzz.py holds and the LB's memory stays flat."""

from __future__ import annotations

import pytest

from tests.lbconf.fuzz import run

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("seed", [11, 12])
async def test_fuzzed_traffic_keeps_every_invariant(seed):
    r = await run(3000, seed=seed, sample_every=500)
    assert r.violations == []
    assert r.requests_sent >= 3000 and r.refused > 100 and r.backend_requests > 500
    assert r.rss_growth() < 8e6
