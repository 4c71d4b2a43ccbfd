"""Judging rolling updates (pure, fake clock): completion after the monitor
period, failure on an unhealthy/failed/crashing/slow new task, the failure
ratio, and rollbacks that pause rather than roll back again."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.master import rollout as ro
from swarmlet.master.state import RUNNING, SHUTDOWN, Service, Task
from swarmlet.shipped.models import Health, HealthCheck, ServiceSpec, TaskState, UpdateConfig

pytestmark = pytest.mark.unit

SPEC = ServiceSpec("web", "img:2", replicas=2, health=HealthCheck(kind="http", path="/health"),
                   update=UpdateConfig(monitor=5.0))


def svc(spec=SPEC, revision=2, template=2) -> Service:
    return Service(spec, revision, 0.0, 0.0, template)


def task(tid, slot, rev, *, state=TaskState.RUNNING, health=Health.HEALTHY, desired=RUNNING,
         created=0.0, restarts=0, reason=""):
    return Task(tid, "web", slot, rev, node="n1", desired=desired, state=state, health=health,
                created_at=created, restarts=restarts, reason=reason)


def start(**kw):
    return ro.Rollout("web", 2, 1, 0.0, **kw)


def test_completes_only_after_monitor_with_no_old_task_left():
    tasks = [task("a", 1, 2), task("b", 2, 2), task("old", 2, 1)]
    r = ro.assess(start(), svc(), tasks, now=10.0)
    assert r.status == ro.UPDATING and r.updated == 2          # an old task still runs
    tasks[2] = dataclasses.replace(tasks[2], desired=SHUTDOWN)
    r = ro.assess(r, svc(), tasks, now=11.0)
    assert r.status == ro.UPDATING                             # serving since 10 s: monitor 5 s
    r = ro.assess(r, svc(), tasks, now=15.0)
    assert r.status == ro.COMPLETED


@pytest.mark.parametrize("bad, words", [
    (dict(health=Health.UNHEALTHY), "is unhealthy"),
    (dict(state=TaskState.FAILED, reason="pull failed"), "failed: pull failed"),
    (dict(restarts=2), "restarted 2 time(s)"),
    (dict(health=Health.STARTING, created=0.0), "did not become healthy"),
])
def test_a_bad_new_task_fails_the_update(bad, words):
    tasks = [task("a", 1, 2, **bad), task("old1", 1, 1), task("old2", 2, 1)]
    r = ro.assess(start(), svc(), tasks, now=100.0)
    assert r.status == ro.FAILED
    assert words in r.reason


def test_a_starting_task_within_its_grace_is_not_a_failure():
    tasks = [task("a", 1, 2, health=Health.STARTING, created=95.0), task("old1", 1, 1)]
    assert ro.assess(start(), svc(), tasks, now=100.0).status == ro.UPDATING


def test_failure_ratio_tolerates_some_failures():
    spec = dataclasses.replace(SPEC, replicas=4, update=UpdateConfig(max_failure_ratio=0.3))
    one_bad = [task("a", 1, 2, health=Health.UNHEALTHY), task("b", 2, 2)]
    assert ro.assess(start(), svc(spec), one_bad, now=1.0).status == ro.UPDATING
    two_bad = one_bad + [task("c", 3, 2, health=Health.UNHEALTHY)]
    assert ro.assess(start(), svc(spec), two_bad, now=1.0).status == ro.FAILED


@pytest.mark.parametrize("action, status", [("pause", ro.PAUSED), ("continue", ro.UPDATING)])
def test_other_failure_actions(action, status):
    spec = dataclasses.replace(SPEC, update=UpdateConfig(failure_action=action))
    tasks = [task("a", 1, 2, health=Health.UNHEALTHY), task("old", 1, 1)]
    assert ro.assess(start(), svc(spec), tasks, now=1.0).status == status


def test_a_failing_rollback_pauses_instead_of_rolling_back_again():
    r = ro.Rollout("web", 3, 2, 0.0, status=ro.ROLLING_BACK, rollback_of=2)
    tasks = [Task("a", "web", 1, 3, node="n1", state=TaskState.FAILED, reason="x")]
    out = ro.assess(r, svc(revision=3, template=3), tasks, now=1.0)
    assert out.status == ro.PAUSED


def test_a_finished_rollback_says_rolled_back():
    r = ro.Rollout("web", 3, 2, 0.0, status=ro.ROLLING_BACK, rollback_of=2)
    spec = dataclasses.replace(SPEC, rollback=UpdateConfig(monitor=0.0))
    tasks = [task("a", 1, 3), task("b", 2, 3)]
    assert ro.assess(r, svc(spec, 3, 3), tasks, now=1.0).status == ro.ROLLED_BACK


def test_a_newer_revision_leaves_the_old_rollout_alone():
    r = start()
    assert ro.assess(r, svc(revision=3, template=3), [], now=1.0) is r


def test_a_finished_automatic_rollback_keeps_its_reason():
    r = ro.Rollout("web", 3, 2, 0.0, status=ro.ROLLING_BACK, rollback_of=2,
                   reason="update to revision 2 failed: task x is unhealthy")
    spec = dataclasses.replace(SPEC, rollback=UpdateConfig(monitor=0.0))
    out = ro.assess(r, svc(spec, 3, 3), [task("a", 1, 3), task("b", 2, 3)], now=1.0)
    assert out.status == ro.ROLLED_BACK and "unhealthy" in out.reason


def test_a_scale_during_the_update_does_not_strand_it():
    """Found by the HA history test: scale while an update rolls made a new revision with the
    same template, and the rollout stayed 'updating' for ever."""
    scaled = svc(dataclasses.replace(SPEC, replicas=3), revision=3, template=2)
    tasks = [task("a", 1, 2), task("b", 2, 2), task("c", 3, 2)]
    r = ro.assess(start(), scaled, tasks, now=10.0)
    assert r.status == ro.UPDATING and r.total == 3 and r.updated == 3
    assert ro.assess(r, scaled, tasks, now=15.0).status == ro.COMPLETED
