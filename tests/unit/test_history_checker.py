"""The history checker used by the HA failover tests can fail: lost, doubled, refused-but-applied."""

from __future__ import annotations

from tests.tools.history import FAIL, OK, UNKNOWN, Op, check


def rev(n, replicas, mark):
    return {"revision": n, "spec": {"replicas": replicas, "env": {"MARK": mark}}}


BASE = [rev(1, 3, "u0")]


def test_a_clean_history_is_valid():
    ops = [Op("scale", 1, 4, OK), Op("update", 1, "u1", OK), Op("scale", 2, 5, OK)]
    revs = BASE + [rev(2, 4, "u0"), rev(3, 4, "u1"), rev(4, 5, "u1")]
    r = check(ops, revs, 3, "u0")
    assert r.ok, r.problems
    assert r.counts["applied"] == 3


def test_unknown_writes_may_or_may_not_land():
    ops = [Op("scale", 1, 4, UNKNOWN), Op("scale", 2, 5, OK), Op("update", 1, "u1", UNKNOWN)]
    assert check(ops, BASE + [rev(2, 5, "u0")], 3, "u0").ok
    assert check(ops, BASE + [rev(2, 4, "u0"), rev(3, 5, "u0"), rev(4, 5, "u1")], 3, "u0").ok


def test_an_acknowledged_write_that_vanished_is_found():
    ops = [Op("update", 1, "u1", OK), Op("update", 2, "u2", OK)]
    r = check(ops, BASE + [rev(2, 3, "u2")], 3, "u0")
    assert not r.ok and r.counts["acked_lost"] == 1 and "#1" in r.problems[0]
    r = check([Op("scale", 1, 4, OK)], BASE, 3, "u0")
    assert not r.ok and "not in the final history" in r.problems[0]


def test_a_write_applied_twice_is_found():
    ops = [Op("update", 1, "u1", OK), Op("update", 2, "u2", OK)]
    revs = BASE + [rev(2, 3, "u1"), rev(3, 3, "u2"), rev(4, 3, "u1")]     # u1 again, stale
    r = check(ops, revs, 3, "u0")
    assert not r.ok and r.counts["duplicates"] == 1


def test_a_refused_write_must_not_land():
    ops = [Op("scale", 1, 4, FAIL, detail="no quorum")]
    r = check(ops, BASE + [rev(2, 4, "u0")], 3, "u0")
    assert not r.ok and "refused" in r.problems[0]


def test_revision_gaps_are_found():
    r = check([], BASE + [rev(3, 3, "u0")], 3, "u0")
    assert not r.ok
