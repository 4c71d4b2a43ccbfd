"""Events derived from task changes and load balancer snapshots (pure); service health."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.master.dashboard.overview import lb_by_service, service_health
from swarmlet.master.events import lb_evictions, task_events
from swarmlet.master.state import Task
from swarmlet.shipped.models import Health, TaskState

pytestmark = pytest.mark.unit


def _t(**kw):
    base = dict(task_id="web.1.aa", service="web", slot=1, revision=1)
    base.update(kw)
    return Task(**base)


def test_placed_started_failed_restarted():
    pending = _t()
    placed = dataclasses.replace(pending, node="n1", state=TaskState.ASSIGNED)
    (e,) = task_events({}, [placed])
    assert (e.kind, e.subject) == ("task", "web.1.aa") and "placed on n1" in e.message
    (e,) = task_events({pending.task_id: pending}, [placed])
    assert "placed on n1" in e.message
    running = dataclasses.replace(placed, state=TaskState.RUNNING)
    (e,) = task_events({placed.task_id: placed}, [running])
    assert "started on n1" in e.message
    failed = dataclasses.replace(running, state=TaskState.FAILED, reason="exit code 3")
    (e,) = task_events({running.task_id: running}, [failed])
    assert "failed on n1: exit code 3" in e.message
    again = dataclasses.replace(running, restarts=1, reason="exited (1)", health=Health.UNHEALTHY)
    (e,) = task_events({running.task_id: running}, [again])
    assert "restarted on n1 (1 restarts): exited (1)" in e.message


def test_no_event_for_unchanged_or_cosmetic_changes():
    t = _t(node="n1", state=TaskState.RUNNING)
    assert task_events({t.task_id: t}, [dataclasses.replace(t, updated_at=5.0)]) == []


def test_unhealthy_event_once():
    t = _t(node="n1", state=TaskState.RUNNING, health=Health.HEALTHY)
    bad = dataclasses.replace(t, health=Health.UNHEALTHY)
    (e,) = task_events({t.task_id: t}, [bad])
    assert "unhealthy on n1" in e.message
    assert task_events({bad.task_id: bad}, [bad]) == []


def _snap(healthy=True, ejected=False, ejections=0, draining=False):
    return {"8080": {"service": "web", "requests_per_second": 3.0, "requests": 10,
                     "by_status": {"200": 8, "502": 2}, "upstream_errors": {"connect": 1},
                     "backends": [{"address": "10.0.0.1:3000", "name": "web.1.aa",
                                   "healthy": healthy, "ejected": ejected,
                                   "ejections": ejections, "draining": draining,
                                   "eject_kind": "5xx", "last_error": ""}]}}


def test_lb_eviction_and_readmission():
    state, evs = lb_evictions({}, _snap())
    assert evs == []
    state, evs = lb_evictions(state, _snap(healthy=False))
    (e,) = evs
    assert (e.kind, e.subject) == ("lb", "web.1.aa") and "evicted 10.0.0.1:3000" in e.message
    assert "health check" in e.message
    state, evs = lb_evictions(state, _snap(healthy=False))
    assert evs == []                                   # still out: said once
    state, evs = lb_evictions(state, _snap())
    assert "back in" in evs[0].message
    state, evs = lb_evictions(state, _snap(ejected=True, ejections=1))
    assert "ejected (5xx)" in evs[0].message


def test_draining_backend_is_not_an_eviction():
    state, _ = lb_evictions({}, _snap())
    _, evs = lb_evictions(state, _snap(healthy=False, draining=True))
    assert evs == []


def test_lb_by_service_sums_errors_and_rates():
    agg = lb_by_service(_snap())
    assert agg["web"] == {"req_s": 3.0, "requests": 10, "errors": 3}


@pytest.mark.parametrize("desired, serving, want", [(3, 3, "ok"), (3, 1, "degraded"),
                                                     (3, 0, "down"), (0, 0, "idle")])
def test_service_health(desired, serving, want):
    assert service_health(desired, serving) == want
