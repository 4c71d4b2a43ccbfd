"""Route table deltas (shipped/routediff.py): apply(old, diff(old, new)) == new, and small."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from swarmlet.shipped import routediff
from swarmlet.shipped.models import LBOptions, Route, RouteBackend, to_wire

pytestmark = pytest.mark.unit


def _route(service, published, backends, health="/health", lb=LBOptions()):
    return Route(service, published, 8080, health, lb,
                 tuple(sorted(backends, key=lambda b: b.task_id)), None)


backend = st.builds(RouteBackend, task_id=st.sampled_from([f"t{i}" for i in range(8)]),
                    node=st.sampled_from(["n1", "n2"]), host=st.sampled_from(["10.0.0.1", "10.0.0.2"]),
                    port=st.integers(30000, 30003))
route = st.builds(lambda s, p, bs, h: _route(s, p, {b.task_id: b for b in bs}.values(), h),
                  st.sampled_from(["web", "api", "db"]), st.sampled_from([None, 8080, 9090]),
                  st.lists(backend, max_size=6), st.sampled_from(["/health", None]))
table = st.lists(route, max_size=5).map(lambda rs: routediff.ordered({routediff.key(r): r for r in rs}.values()))


@settings(max_examples=400, deadline=None)
@given(table, table)
def test_apply_of_diff_gives_the_new_table(old, new):
    assert routediff.apply(old, *routediff.diff(old, new)) == routediff.ordered(new)


@given(table)
def test_no_change_is_an_empty_delta(t):
    assert routediff.diff(t, t) == ((), (), ())


def test_one_health_flip_is_one_small_change_among_a_thousand_backends():
    backends = [RouteBackend(f"web.{i}.abcdef", f"node-{i % 100}", f"10.1.{i // 250}.{i % 250}", 30000 + i)
                for i in range(1000)]
    old = (_route("web", 8080, backends),)
    new = (_route("web", 8080, backends[:500] + backends[501:]),)
    whole, removed, changes = routediff.diff(old, new)
    assert whole == () and removed == () and len(changes) == 1
    assert changes[0].remove == ("web.500.abcdef",) and changes[0].add == ()
    size = len(json.dumps([to_wire(c) for c in changes]))
    full = len(json.dumps([to_wire(r) for r in new]))
    assert size < 100 and full > 50_000
    assert routediff.apply(old, whole, removed, changes) == new


def test_a_changed_route_option_is_sent_whole():
    b = [RouteBackend("t1", "n1", "10.0.0.1", 30000)]
    old = (_route("web", 8080, b),)
    new = (_route("web", 8080, b, lb=LBOptions(algorithm="least_conn")),)
    whole, removed, changes = routediff.diff(old, new)
    assert whole == new and removed == () and changes == ()
