"""A rollback replaces only the tasks it had updated (issue 20, item 3). Pure: reconcile + rollout."""

from __future__ import annotations

from typing import Dict, Tuple

import pytest

from swarmlet.master import rollout as ro
from swarmlet.master.state import RUNNING, replace
from swarmlet.shipped.models import Health, HealthCheck, ServiceSpec, TaskState, UpdateConfig
from tests.unit.master.test_master_reconcile import World

pytestmark = pytest.mark.unit

HEALTH = HealthCheck(kind="http", path="/health")


class Revisions(World):
    """The World, remembering every revision's spec as the master's store does."""

    def __init__(self) -> None:
        super().__init__(nodes=3)
        self.specs: Dict[Tuple[str, int], ServiceSpec] = {}

    def run(self, spec: ServiceSpec) -> None:
        super().run(spec)
        self.specs[(spec.name, self.services[spec.name].revision)] = spec

    def step(self, **kw):
        return super().step(specs=self.specs, **kw)

    def agents_report(self, broken_image: str) -> None:
        """Agents run what they are given; the broken image answers its health check with 500."""
        self.agents_start()
        for t in list(self.tasks.values()):
            if t.desired == RUNNING and self.specs[(t.service, t.revision)].image == broken_image:
                self.tasks[t.task_id] = replace(t, health=Health.UNHEALTHY, reason="GET /health: 500")


def test_a_failed_update_rolls_back_keeping_the_old_tasks_as_they_are():
    w = Revisions()
    good = ServiceSpec("web", "hello:2", replicas=3, health=HEALTH, update=UpdateConfig(monitor=2.0))
    w.run(good)
    w.settle()
    before = {t.slot: t.task_id for t in w.live()}
    assert len(before) == 3
    w.run(replace(good, image="hello:broken"))                                   # revision 2
    r = ro.Rollout("web", 2, 1, w.now)
    for _ in range(10):
        w.step()
        w.agents_report("hello:broken")
        r = ro.assess(r, w.services["web"], w.tasks.values(), w.now, w.specs)
        if r.status == ro.FAILED:
            break
    assert r.status == ro.FAILED and "unhealthy" in r.reason
    failed_new = {t.task_id for t in w.live() if t.revision == 2}
    assert failed_new                                                  # the update made a new replica
    w.run(w.specs[("web", 1)])                                        # the rollback: revision 3
    assert w.services["web"].current_from == 3
    rb = ro.Rollout("web", 3, 2, w.now, status=ro.ROLLING_BACK, rollback_of=2)
    for _ in range(10):
        w.step()
        w.agents_report("hello:broken")
        rb = ro.assess(rb, w.services["web"], w.tasks.values(), w.now, w.specs)
        if rb.status == ro.ROLLED_BACK:
            break
    assert rb.status == ro.ROLLED_BACK, rb
    after = {t.slot: t.task_id for t in w.live()}
    assert after == before                          # same task ids: nothing restarted or moved
    gone = {t.task_id: t.desired for t in w.tasks.values() if t.task_id in failed_new}
    assert set(gone.values()) <= {"shutdown"}       # only the failed new ones were removed
    assert all(t.state == TaskState.RUNNING for t in w.live())


def test_kept_tasks_let_the_service_settle_for_rebalance_and_global():
    w = Revisions()
    spec = ServiceSpec("agentd", "mon:1", mode="global")
    w.run(spec)
    w.settle()
    before = {t.task_id for t in w.live("agentd")}
    assert len(before) == 3
    w.run(replace(spec, image="mon:2"))
    w.run(spec)                           # restored before any task was replaced
    w.settle()
    assert {t.task_id for t in w.live("agentd")} == before
