"""Which nodes' stats the master asks for: the longest overdue first, within the rate."""

from __future__ import annotations

import math
from typing import Dict, Tuple

import pytest

from swarmlet.master.poller import stats_due

pytestmark = pytest.mark.unit


def test_only_nodes_whose_period_ran_out_within_the_budget() -> None:
    last = {"a": (0.0, 5.0), "b": (1.0, 5.0), "c": (9.0, 5.0)}
    assert stats_due(last, 10.0, 5) == ["a", "b"]       # c was asked a second ago
    assert stats_due(last, 10.0, 1) == ["a"]
    assert stats_due(last, 3.0, 5) == []


def test_a_short_period_long_overdue_goes_before_a_long_one_just_due() -> None:
    # asked 12 s ago with a 2 s period (10 s late) against 25.5 s ago with 25 s (0.5 s late)
    last = {"bulk": (0.0, 25.0), "auto": (13.5, 2.0)}
    assert stats_due(last, 25.5, 1) == ["auto"]


def test_autoscaled_nodes_keep_their_period_among_a_thousand() -> None:
    """The master's loop, simulated: 1,000 nodes within 40 requests a second (each every
    25 s) and 8 autoscaled ones every 2 s, answers at once. The autoscaled nodes' stats
    stay a few seconds old; ordered by when they were last asked, they waited out the
    others' backlog (25 s)."""
    rate, step, n = 40.0, 0.25, 1000
    last: Dict[str, Tuple[float, float]] = {
        f"n{i}": (-(i % 25) * 1.0, 2.0 if i < 8 else n / rate) for i in range(n)}
    budget = max(1, math.ceil(rate * step))
    worst = 0.0
    now = 0.0
    for _ in range(int(120 / step)):
        now += step
        for name in stats_due(last, now, budget):
            last[name] = (now, last[name][1])
        if now > 30:    # past the start, when all are due at once
            worst = max(worst, max(now - last[f"n{i}"][0] for i in range(8)))
    assert worst < 6.0, worst       # 24.75 s in the old order
    assert max(now - at for at, _ in last.values()) < 40.0   # and nobody starves
