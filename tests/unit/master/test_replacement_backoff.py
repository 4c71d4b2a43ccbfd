"""A task that cannot start is replaced with backoff, one event per kind of failure (issue 20, item 2).

Pure: the reconciler and the event rules with a fake clock, agents simulated the way
the real one behaves (a pull that fails reports the task FAILED with the reason), and
the store's keyed-event rule modelled by a dict. Five simulated minutes run in
well under a second; the same mechanism against a real master and agent is
``tests/integration/master/test_master_backoff.py``.
"""

from __future__ import annotations

import itertools
from typing import Dict, List

import pytest

from swarmlet.master import backoff as bo
from swarmlet.master.events import task_events
from swarmlet.master.reconcile import Event, reconcile
from swarmlet.master.state import RUNNING, Service, Task, next_revision, replace
from swarmlet.master.views import task_row
from swarmlet.shipped.models import Health, NodeInfo, NodeStatus, ServiceSpec, TaskState

pytestmark = pytest.mark.unit

PULL = "pull does-not-exist:1 failed: no such host"


class Cluster:
    """Master state + simulated agents; ``log`` keeps events as the store does (one per key)."""

    def __init__(self, policy: bo.Backoff = bo.Backoff()) -> None:
        self.now = 1000.0
        self.policy = policy
        self.ids = itertools.count(1)
        self.services: Dict[str, Service] = {}
        self.tasks: Dict[str, Task] = {}
        self.nodes = [NodeInfo(name=f"node-{i}", address="10.0.0.1", cpus=4, mem_total=8 << 30)
                      for i in (1, 2, 3)]
        self.log: Dict[object, Event] = {}
        self.seq = itertools.count()
        self.placed: List[str] = []
        self.wakes: List[float] = []

    def run(self, spec: ServiceSpec) -> None:
        self.services[spec.name] = next_revision(self.services.get(spec.name), spec, self.now)

    def record(self, events: List[Event]) -> None:
        for e in events:
            if e.key:
                self.log.pop(e.key, None)
            self.log[e.key or next(self.seq)] = e

    def apply(self, changed: List[Task]) -> None:
        self.record(task_events(self.tasks, changed))
        for t in changed:
            if t.node and (t.task_id not in self.tasks or self.tasks[t.task_id].node != t.node):
                self.placed.append(t.task_id)
            self.tasks[t.task_id] = t

    def reconcile(self) -> None:
        ch = reconcile(self.services, list(self.tasks.values()), self.nodes, self.now,
                       lambda s, slot: f"{s}.{slot}.{next(self.ids)}", backoff=self.policy)
        self.record(ch.events)
        self.apply(ch.create + ch.update)
        for tid in ch.delete:
            del self.tasks[tid]
        if ch.wake_at is not None:
            self.wakes.append(ch.wake_at)

    def agents(self, fail=lambda t: PULL) -> None:
        """A placed task's image pull ends a second after it was placed: failed, or running."""
        changed = []
        for t in self.tasks.values():
            if t.desired == RUNNING and t.node and t.state == TaskState.ASSIGNED \
                    and self.now - t.updated_at >= 1.0:
                why = fail(t)
                changed.append(replace(t, state=TaskState.FAILED, reason=why, updated_at=self.now)
                               if why else replace(t, state=TaskState.RUNNING, health=Health.NONE,
                                                   serving_since=self.now, updated_at=self.now))
        self.apply(changed)

    def minutes(self, n: float, **kw) -> None:
        end = self.now + 60 * n
        while self.now < end:
            self.now += 0.5               # the master's poll and reconcile cadence
            self.agents(**kw)
            self.reconcile()

    def rows(self, service: str = "bad") -> List[dict]:
        return [task_row(t) for t in self.tasks.values() if t.service == service and t.desired == RUNNING]


def test_five_minutes_of_a_failing_pull():
    c = Cluster()
    c.run(ServiceSpec("bad", "does-not-exist:1"))
    c.reconcile()
    c.minutes(5)
    attempts = len(c.placed)
    assert 8 <= attempts < 30, attempts           # 600 without backoff (one per poll)
    events = [e for e in c.log.values()]
    assert len(events) < 40, [e.message for e in events]
    failed = [e for e in events if "failed on" in e.message]
    assert len(failed) == 1 and f"{PULL} ({attempts} times in a row)" in failed[0].message, failed
    (row,) = c.rows()
    assert row["reason"].startswith(PULL), row     # ps: the pull error, waiting or assigned


def test_the_wait_doubles_up_to_the_cap_and_ps_says_why():
    c = Cluster(bo.Backoff(max_delay=8.0))
    c.run(ServiceSpec("bad", "does-not-exist:1"))
    c.reconcile()
    waits = []
    for _ in range(400):
        c.now += 0.5
        c.agents()
        c.reconcile()
        pending = [t for t in c.tasks.values() if t.desired == RUNNING and t.node is None]
        for t in pending:
            if t.not_before and (not waits or waits[-1][0] != t.task_id):
                waits.append((t.task_id, t.not_before - t.created_at))
                row = task_row(t)
                assert row["state"] == "pending" and row["reason"].startswith(PULL)
                assert f"failure {t.failures}, next try in" in row["reason"]
    assert [w for _, w in waits[:6]] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(c.wakes)                          # the daemon is told when to look again


def test_a_task_that_served_a_while_starts_the_count_again():
    c = Cluster(bo.Backoff(max_delay=30.0, reset_after=10.0))
    c.run(ServiceSpec("bad", "img:1"))
    c.reconcile()
    c.minutes(2)                                  # fails for two minutes: the wait is at the cap
    (t,) = [t for t in c.tasks.values() if t.desired == RUNNING]
    assert t.failures >= 6
    c.minutes(1, fail=lambda t: "")               # now it starts and serves for a minute
    (t,) = [t for t in c.tasks.values() if t.desired == RUNNING]
    assert t.state == TaskState.RUNNING
    assert task_row(t)["reason"] == ""            # running: no stale failure shown
    # it crashes for good after serving: its successor waits the first step again
    c.tasks[t.task_id] = replace(t, state=TaskState.FAILED, reason="exited with code 1; gave up",
                                 updated_at=c.now)
    c.reconcile()
    (nxt,) = [t for t in c.tasks.values() if t.desired == RUNNING]
    assert nxt.failures == 1 and nxt.not_before - c.now == pytest.approx(0.5)


def test_a_new_revision_starts_afresh_and_a_lost_node_is_no_failure():
    c = Cluster()
    c.run(ServiceSpec("bad", "does-not-exist:1"))
    c.reconcile()
    c.minutes(1)
    c.run(ServiceSpec("bad", "img:1"))            # the fix: placed at once, not after the wait
    c.reconcile()
    (t,) = [t for t in c.tasks.values() if t.desired == RUNNING]
    assert t.failures == 0 and t.node is not None
    c.minutes(0.1, fail=lambda t: "")
    c.nodes = [replace(n, status=NodeStatus.DOWN) if n.name == t.node else n for n in c.nodes]
    c.reconcile()
    (t2,) = [x for x in c.tasks.values() if x.desired == RUNNING]
    assert t2.node is not None and t2.failures == 0   # replaced at once elsewhere


def test_global_services_back_off_per_node():
    c = Cluster(bo.Backoff(max_delay=30.0))
    c.run(ServiceSpec("bad", "does-not-exist:1", mode="global"))
    c.reconcile()
    c.minutes(5)
    assert 3 * 8 <= len(c.placed) < 3 * 30, len(c.placed)     # three nodes, each backing off
    assert len(c.log) < 40, [e.message for e in c.log.values()]


def test_event_keys_and_counts():
    assert bo.times(1) == "" and bo.times(7) == " (7 times in a row)"
    assert bo.event_key("failed", "bad", 1, PULL) == bo.event_key("failed", "bad", 1, PULL)
    assert bo.event_key("failed", "bad", 1, PULL) != bo.event_key("failed", "bad", 1, "other")
    assert bo.event_key("failed", "bad", 1, PULL) != bo.event_key("failed", "bad", 2, PULL)
    assert bo.delay(0.5, 1, bo.Backoff()) == 0.5 and bo.delay(0.5, 40, bo.Backoff()) == 30.0


def test_an_update_whose_successor_cannot_start_backs_off_too():
    """failure_action pause: the old replica keeps serving; its successor is retried slowly."""
    from swarmlet.shipped.models import UpdateConfig
    c = Cluster()
    good = ServiceSpec("bad", "img:1", update=UpdateConfig(failure_action="pause"))
    c.run(good)
    c.reconcile()
    c.minutes(0.1, fail=lambda t: "")
    (old,) = [t for t in c.tasks.values() if t.desired == RUNNING]
    c.run(replace(good, image="does-not-exist:1"))
    c.placed.clear()
    c.minutes(5, fail=lambda t: PULL if t.revision == 2 else "")
    assert 8 <= len(c.placed) < 30, len(c.placed)
    assert c.tasks[old.task_id].desired == RUNNING and c.tasks[old.task_id].serving
    assert len(c.log) < 40
