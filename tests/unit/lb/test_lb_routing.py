"""The pure routing rules with a fake clock: choice, rise/fall, ejection, panic, drain."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as stt

from swarmlet.shipped.lb import Backend, HealthConfig, LBConfig, LoadBalancerError, OutlierConfig
from swarmlet.shipped.lb.routing import Router

pytestmark = pytest.mark.unit


def bk(i: int) -> Backend:
    return Backend("10.0.0.%d" % i, 8080, "/up", name=f"t{i}")


def router(n: int = 3, **kw) -> Router:
    r = Router(LBConfig(**kw))
    r.set_backends([bk(i) for i in range(n)], now=0.0)
    return r


def test_round_robin_is_even():
    r = router(3)
    picks = Counter(r.pick(1.0).key for _ in range(300))
    assert sorted(picks.values()) == [100, 100, 100]


def test_least_conn_prefers_the_idle_one():
    r = router(3, policy="least_conn")
    states = list(r.states.values())
    states[0].active, states[1].active, states[2].active = 5, 1, 3
    assert {r.pick(1.0) for _ in range(10)} == {states[1]}
    states[2].active = 1     # ties rotate
    assert {r.pick(1.0) for _ in range(10)} == {states[1], states[2]}


def test_unknown_policy_is_refused():
    with pytest.raises(LoadBalancerError):
        LBConfig(policy="random")


def test_fall_and_rise_thresholds():
    r = router(2)
    st = r.states[bk(0).key]
    assert r.record_check(st, False, 1.0) is None
    assert r.record_check(st, False, 2.0) is None
    assert r.record_check(st, False, 3.0) == "down"         # fall=3
    assert {r.pick(4.0).key for _ in range(6)} == {bk(1).key}
    assert r.record_check(st, True, 5.0) is None
    assert r.record_check(st, False, 6.0) is None           # a flap resets the streak
    assert r.record_check(st, True, 7.0) is None
    assert r.record_check(st, True, 8.0) == "up"            # rise=2
    assert {r.pick(9.0).key for _ in range(6)} == {bk(0).key, bk(1).key}


def test_network_failure_ejects_at_once_and_a_check_lets_it_back():
    r = router(2)
    st = r.states[bk(0).key]
    assert r.record_failure(st, 10.0, "refused")
    assert not r.record_failure(st, 10.1, "refused")        # a burst is one ejection
    assert st.ejections_total == 1
    assert {r.pick(11.0).key for _ in range(4)} == {bk(1).key}
    r.record_check(st, True, 12.0)                          # reachable again
    assert not st.ejected(12.0)
    assert {r.pick(12.0).key for _ in range(4)} == {bk(0).key, bk(1).key}


def test_5xx_streak_ejects_for_a_growing_then_decaying_time():
    r = router(2, outlier=OutlierConfig(consecutive_5xx=3, base_ejection=30, max_ejection=100))
    st = r.states[bk(0).key]
    assert not r.record_response(st, 500, 1.0)
    assert not r.record_response(st, 200, 1.0)              # a success resets the streak
    for _ in range(2):
        assert not r.record_response(st, 503, 2.0)
    assert r.record_response(st, 502, 2.0)
    assert st.ejected_until == 32.0
    r.record_check(st, True, 5.0)                           # checks don't end a 5xx ejection
    assert st.ejected(31.0) and not st.ejected(32.0)
    for _ in range(3):
        r.record_response(st, 500, 40.0)
    assert st.ejected_until == 100.0                        # 2nd ejection: 60 s
    for _ in range(3):
        r.record_response(st, 500, 101.0)
    assert st.ejected_until == 101.0 + 90.0                 # 3rd: 90 s
    for _ in range(3):
        r.record_response(st, 500, 500.0)                   # stayed in > max: count restarts
    assert st.ejections == 1 and st.ejected_until == 530.0


def test_panic_routes_to_all_when_none_is_eligible():
    r = router(3)
    for st in r.states.values():
        r.record_failure(st, 1.0, "refused")
    picks = {r.pick(2.0).key for _ in range(9)}
    assert r.panic and picks == {bk(i).key for i in range(3)}
    assert r.panics == 9
    assert r.pick(2.0, exclude=[bk(0).key, bk(1).key, bk(2).key]) is None


def test_panic_threshold():
    r = router(4, panic_threshold=0.5)
    sts = list(r.states.values())
    r.record_failure(sts[0], 1.0, "x")
    assert {r.pick(2.0) for _ in range(12)} == set(sts[1:]) and not r.panic
    r.record_failure(sts[1], 1.0, "x")                      # 2 of 4 eligible: panic
    assert {r.pick(2.0) for _ in range(12)} == set(sts)


def test_ejection_expiry_is_seen_without_any_event():
    r = router(2)
    st = r.states[bk(0).key]
    r.record_failure(st, 0.0, "refused")
    assert bk(0).key not in {r.pick(29.9).key for _ in range(4)}
    assert bk(0).key in {r.pick(30.0).key for _ in range(4)}


def test_drain_then_collect_when_idle_or_late():
    r = router(3, drain_timeout=10)
    a, b = r.states[bk(0).key], r.states[bk(1).key]
    a.active = 2
    b.active = 1
    added, drained = r.set_backends([bk(2)], now=5.0)
    assert added == [] and set(drained) == {a, b}
    assert {r.pick(6.0).key for _ in range(5)} == {bk(2).key}
    b.active = 0
    assert r.collect_drained(6.0) == [b]
    assert r.collect_drained(14.9) == []
    assert r.collect_drained(15.0) == [a]                   # deadline: gone even if busy
    assert set(r.states) == {bk(2).key}


def test_readding_a_draining_backend_revives_it():
    r = router(2)
    st = r.states[bk(0).key]
    st.active = 1
    r.set_backends([bk(1)], now=1.0)
    r.set_backends([bk(0), bk(1)], now=2.0)
    assert not st.draining and r.states[bk(0).key] is st
    assert bk(0).key in {r.pick(3.0).key for _ in range(4)}


def test_sticky_pins_while_eligible():
    r = router(3)
    target = r.states[bk(2).key]
    assert {r.pick(1.0, sticky=target.sticky_id) for _ in range(5)} == {target}
    r.record_failure(target, 1.0, "refused")
    assert target not in {r.pick(2.0, sticky=target.sticky_id) for _ in range(5)}
    assert r.pick(2.0, sticky="garbage") is not None


def test_new_backends_start_down_when_asked():
    r = Router(LBConfig(health=HealthConfig(initial_healthy=False)))
    r.set_backends([bk(0)], now=0.0)
    assert r.pick(1.0) is not None and r.panic              # panic still serves


ops = stt.lists(stt.tuples(
    stt.sampled_from(["fail", "5xx", "ok", "check_bad", "check_ok", "set", "active"]),
    stt.integers(0, 4), stt.floats(0, 5)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_pick_invariants(seq):
    """Whatever happens: never a draining or unknown backend; eligible ones first."""
    r = Router(LBConfig(outlier=OutlierConfig(consecutive_5xx=2)))
    now = 0.0
    r.set_backends([bk(i) for i in range(3)], now)
    for op, i, dt in seq:
        now += dt
        st = r.states.get(bk(i).key)
        if op == "set":
            r.set_backends([bk(j) for j in range(5) if (j + i) % 3], now)
        elif op == "active" and st:
            st.active = (st.active + 1) % 3
        elif st and op == "fail":
            r.record_failure(st, now, "x")
        elif st and op == "5xx":
            r.record_response(st, 500, now)
        elif st and op == "ok":
            r.record_response(st, 200, now)
        elif st and op.startswith("check"):
            r.record_check(st, op == "check_ok", now)
        r.collect_drained(now)
        picked = r.pick(now)
        live = [s for s in r.states.values() if not s.draining]
        eligible = [s for s in live if s.healthy and not s.ejected(now)]
        if not live:
            assert picked is None
            continue
        assert picked is not None and not picked.draining and picked.key in r.states
        if eligible:
            assert picked in eligible and not r.panic
        else:
            assert r.panic


def test_status_shows_per_backend_rate():
    r = router(1)
    st = r.states[bk(0).key]
    for i in range(30):
        r.record_response(st, 200, 10.0 + i / 10)      # 10 answers a second for 3 s
    d = st.describe(13.5)
    assert d["requests"] == 30 and d["requests_per_second"] == pytest.approx(30 / 9)
    assert d["healthy"] and not d["ejected"] and d["address"] == "10.0.0.0:8080"
