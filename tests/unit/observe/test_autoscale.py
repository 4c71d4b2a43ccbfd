"""The autoscale decision (pure, fake clock): windows, cooldowns, bounds, no flapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from swarmlet.master.autoscale import AutoscalePolicy, ScaleState, decide, recommend
from swarmlet.shipped.models import AutoscaleSpec

pytestmark = pytest.mark.unit

P = AutoscalePolicy(interval=1, up_window=10, down_window=30, up_cooldown=15, down_cooldown=30)
SPEC = AutoscaleSpec(min=2, max=6, cpu=70)


def run(spec, replicas, cpu_at, until, step=1.0, policy=P):
    """Drive decide() every ``step`` seconds of fake time; returns [(t, replicas)] changes."""
    state, t, changes = ScaleState(), 0.0, []
    while t <= until:
        d = decide(spec, replicas, cpu_at(t, replicas), state, t, policy)
        state = d.state
        if d.replicas != replicas:
            changes.append((t, d.replicas))
            replicas = d.replicas
        t += step
    return changes, replicas


def test_recommend_is_the_hpa_formula_with_tolerance():
    assert recommend(2, 140.0, 70.0, 0.1) == 4
    assert recommend(3, 75.0, 70.0, 0.1) == 3          # within 10 %: no change
    assert recommend(4, 10.0, 70.0, 0.1) == 1
    assert recommend(2, None, 70.0, 0.1) == 2


def test_sustained_load_scales_up_after_the_window_not_before():
    changes, final = run(SPEC, 2, lambda t, n: 180.0 * 2 / n, until=9)
    assert changes == []                                # the window is not covered yet
    changes, final = run(SPEC, 2, lambda t, n: 180.0 * 2 / n, until=12)
    assert changes[0] == (10.0, 4)                      # ceil(2 * 180/70) = 6, at most doubled


def test_scales_up_to_max_and_stays_within_bounds():
    changes, final = run(SPEC, 2, lambda t, n: 100.0 * 8 / n, until=200)   # load worth 8 at 100 %
    assert final == 6 and all(2 <= r <= 6 for _, r in changes)


def test_a_spike_shorter_than_the_window_does_not_scale():
    cpu = lambda t, n: 300.0 if 20 <= t < 25 else 50.0
    changes, _ = run(SPEC, 2, cpu, until=120)
    assert changes == []


def test_scale_down_waits_for_the_down_window_and_cooldown():
    cpu = lambda t, n: 200.0 * 2 / n if t < 40 else 5.0
    changes, final = run(SPEC, 2, cpu, until=300)
    ups = [c for c in changes if c[1] > 2]
    assert ups and ups[0][0] == 10.0
    downs = [(t, r) for (t, r), (t0, r0) in zip(changes[1:], changes) if r < r0]
    assert downs and downs[0][0] >= 40 + P.down_window   # every recent recommendation was lower
    assert final == SPEC.min


@pytest.mark.parametrize("step", [0.3, 0.7, 1.3, 2.9])
def test_windows_work_whatever_the_decision_interval(step):
    cpu = lambda t, n: 200.0 * 2 / n if t < 40 else 5.0
    changes, final = run(SPEC, 2, cpu, until=200, step=step)
    assert changes[0][1] > 2 and 10.0 <= changes[0][0] < 10.0 + step + 1e-9
    assert final == SPEC.min


def test_out_of_bounds_count_is_corrected_at_once():
    d = decide(SPEC, 9, None, ScaleState(), 0.0, P)
    assert d.replicas == 6 and "bounds" in d.reason
    d = decide(SPEC, 0, 10.0, ScaleState(), 0.0, P)
    assert d.replicas == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 400), min_size=1, max_size=80),
       st.integers(1, 4), st.integers(0, 6), st.integers(2, 10))
def test_never_flaps_and_always_within_bounds(loads, lo, extra, start):
    spec = AutoscaleSpec(min=lo, max=lo + extra, cpu=70)
    state, replicas, t = ScaleState(), max(lo, min(lo + extra, start)), 0.0
    changes = []
    for i, load in enumerate(loads):
        for _ in range(5):               # each load level holds 5 s, decisions every second
            cpu = load * 2 / max(replicas, 1)
            d = decide(spec, replicas, cpu, state, t, P)
            state = d.state
            if d.replicas != replicas:
                changes.append((t, replicas, d.replicas))
                replicas = d.replicas
            assert spec.min <= replicas <= spec.max
            t += 1.0
    for (t0, a0, b0), (t1, a1, b1) in zip(changes, changes[1:]):
        assert t1 - t0 >= P.up_cooldown                    # never two changes in a cooldown
        if (b0 > a0) != (b1 > a1):                           # a reversal of direction
            assert t1 - t0 >= min(P.up_cooldown, P.down_cooldown)
        if b1 < a1:
            assert t1 - t0 >= P.down_cooldown              # scale-down only after its cooldown


def test_a_service_window_replaces_the_masters_and_bounds_its_cooldown():
    # the load above: high until 40 s, then low. The master's window is 30 s, and so is
    # its scale-down cooldown.
    cpu = lambda t, n: 200.0 * 2 / n if t < 40 else 5.0
    for window in (5.0, 12.0, 50.0):
        spec = AutoscaleSpec(min=2, max=6, cpu=70, down_window=window)
        changes, final = run(spec, 2, cpu, until=300)
        counts = [2] + [r for _, r in changes]
        ups = [t for (t, r), before in zip(changes, counts) if r > before]
        downs = [t for (t, r), before in zip(changes, counts) if r < before]
        assert ups and downs, (window, changes)
        # not before the load has been low for the whole window, nor sooner after the last
        # scale-up than the window (at most the master's cooldown); and no later than that
        due = max(40 + window, ups[-1] + min(window, P.down_cooldown))
        assert due <= downs[0] <= due + 1.0, (window, changes)
        assert max(ups) < min(downs) and final == spec.min      # up, then down: no flapping
    changes, _ = run(SPEC, 2, cpu, until=300)                   # without one: the master's
    counts = [2] + [r for _, r in changes]
    downs = [t for (t, r), before in zip(changes, counts) if r < before]
    assert downs[0] >= 40 + P.down_window
