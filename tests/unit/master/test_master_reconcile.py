"""The reconciler, pass by pass, with a fake clock and simulated agents."""

from __future__ import annotations

import itertools
from typing import Dict, List

import pytest

from swarmlet.master.reconcile import Changes, reconcile
from swarmlet.master.state import (RUNNING, SHUTDOWN, Service, Task, assignment_tasks,
                                   next_revision, replace)
from swarmlet.shipped.models import (Health, HealthCheck, NodeInfo, NodeStatus, Resources, ServiceSpec,
                             TaskState, UpdateConfig)

pytestmark = pytest.mark.unit


class World:
    """Desired state + tasks + nodes, advanced by explicit reconcile passes and clock ticks."""

    def __init__(self, nodes: int = 3) -> None:
        self.now = 1000.0
        self.ids = itertools.count(1)
        self.services: Dict[str, Service] = {}
        self.tasks: Dict[str, Task] = {}
        self.nodes: Dict[str, NodeInfo] = {}
        for i in range(1, nodes + 1):
            self.add_node(f"node-{i}")

    def add_node(self, name: str, **kw) -> None:
        self.nodes[name] = NodeInfo(name=name, address="10.0.0.1", cpus=4, mem_total=8 << 30, **kw)

    def set_status(self, name: str, status: NodeStatus) -> None:
        self.nodes[name] = replace(self.nodes[name], status=status)

    def run(self, spec: ServiceSpec) -> None:
        self.services[spec.name] = next_revision(self.services.get(spec.name), spec, self.now)

    def step(self, **kw) -> Changes:
        self.now += 1.0
        ch = reconcile(self.services, list(self.tasks.values()), list(self.nodes.values()), self.now,
                       lambda svc, slot: f"{svc}.{slot}.{next(self.ids)}", **kw)
        for t in ch.create + ch.update:
            self.tasks[t.task_id] = t
        for tid in ch.delete:
            del self.tasks[tid]
        return ch

    def agents_start(self, healthy: bool = True) -> None:
        """Every reachable node runs what it is assigned and stops what it is not."""
        for t in list(self.tasks.values()):
            st = self.nodes.get(t.node).status if t.node in self.nodes else None
            if st in (None, NodeStatus.DOWN, NodeStatus.LEFT):
                continue
            if t.desired == RUNNING and t.state < TaskState.RUNNING:
                self.tasks[t.task_id] = replace(t, state=TaskState.RUNNING,
                                                health=Health.HEALTHY if healthy else Health.STARTING)
            elif t.desired == SHUTDOWN and not t.state.terminal:
                self.tasks[t.task_id] = replace(t, state=TaskState.STOPPED)

    def settle(self, **kw) -> None:
        for _ in range(6):
            self.agents_start()
            if self.step(**kw).empty:
                return
        raise AssertionError("did not settle")

    def live(self, service: str = "web") -> List[Task]:
        return [t for t in self.tasks.values() if t.service == service and t.desired == RUNNING]

    def serving_on_up_nodes(self, service: str = "web") -> int:
        return sum(1 for t in self.tasks.values() if t.service == service and t.serving
                   and t.node in self.nodes and self.nodes[t.node].status
                   not in (NodeStatus.DOWN, NodeStatus.LEFT))

    def per_node(self, service: str = "web") -> Dict[str, int]:
        out: Dict[str, int] = {}
        for t in self.live(service):
            out[t.node] = out.get(t.node, 0) + 1
        return out


def test_creates_placed_tasks_and_is_idempotent():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=3))
    ch = w.step()
    assert len(ch.create) == 3 and all(t.state == TaskState.ASSIGNED for t in ch.create)
    assert w.per_node() == {"node-1": 1, "node-2": 1, "node-3": 1}
    assert w.step().empty


def test_dead_node_tasks_replaced_and_stale_ones_stopped_on_return():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=3))
    w.settle()
    w.set_status("node-2", NodeStatus.DOWN)
    ch = w.step()
    assert [t.reason for t in ch.update] == ["node node-2 is down"]
    assert len(ch.create) == 1 and ch.create[0].node in ("node-1", "node-3")
    assert any("node node-2 down, replacing" in e.message for e in ch.events)
    w.settle()
    assert w.serving_on_up_nodes() == 3
    # node-2 returns still running its old task: its new assignment no longer has it
    w.set_status("node-2", NodeStatus.READY)
    stale = [t for t in w.tasks.values() if t.node == "node-2"]
    assert stale and all(t.desired == SHUTDOWN for t in stale)
    spec_of = {("web", 1): w.services["web"].spec}
    assert assignment_tasks("node-2", w.tasks.values(), spec_of) == ()
    w.settle()
    assert len(w.live()) == 3


def test_drain_starts_successor_before_stopping():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=3, health=HealthCheck(kind="http")))
    w.settle()
    w.set_status("node-1", NodeStatus.DRAINING)
    ch = w.step()
    assert len(ch.create) == 1 and ch.create[0].node != "node-1"
    old = [t for t in w.live() if t.node == "node-1"]
    assert len(old) == 1 and old[0].desired == RUNNING   # still serving
    # successor running but not healthy yet: the old one stays
    w.agents_start(healthy=False)
    assert w.step().empty
    assert w.tasks[old[0].task_id].desired == RUNNING
    new_id = ch.create[0].task_id
    w.tasks[new_id] = replace(w.tasks[new_id], health=Health.HEALTHY)
    ch = w.step()
    assert [(t.task_id, t.desired) for t in ch.update] == [(old[0].task_id, SHUTDOWN)]
    w.settle()
    assert "node-1" not in w.per_node() and len(w.live()) == 3


def test_drain_without_room_keeps_the_old_task():
    w = World(nodes=2)
    w.run(ServiceSpec("web", "img", replicas=2, max_per_node=1))
    w.settle()
    w.set_status("node-1", NodeStatus.DRAINING)
    ch = w.step()
    assert len(ch.create) == 1 and ch.create[0].node is None
    assert "already run 1 (max per node)" in ch.create[0].reason
    assert w.serving_on_up_nodes() == 2


def test_scale_up_and_down():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=2))
    w.settle()
    w.run(ServiceSpec("web", "img", replicas=5))
    w.settle()
    assert len(w.live()) == 5 and sorted(t.slot for t in w.live()) == [1, 2, 3, 4, 5]
    w.run(ServiceSpec("web", "img", replicas=1))
    ch = w.step()
    assert {t.reason for t in ch.update} == {"scaled down"}
    assert [t.slot for t in w.live()] == [1]


def test_rebalance_after_join_never_drops_capacity():
    w = World(nodes=2)
    w.run(ServiceSpec("web", "img", replicas=6))
    w.settle()
    w.add_node("node-3")
    w.add_node("node-4")
    assert w.step().empty                     # no rebalance unless asked
    ch = w.step(rebalance=True)
    assert len(ch.create) == 2 and {t.node for t in ch.create} == {"node-3", "node-4"}
    for _ in range(4):
        assert w.serving_on_up_nodes() >= 6
        w.agents_start()
        w.step(rebalance=True)
    assert sorted(w.per_node().values()) == [1, 1, 2, 2]
    assert w.step(rebalance=True).empty


def test_rebalance_of_named_services_moves_only_those():
    """What the master asks after a scale-down (``Master.rebalance_services``): that service
    is spread out again, the others are left where they are."""
    w = World(nodes=2)
    for name in ("web", "api"):
        w.run(ServiceSpec(name, "img", replicas=4))
    w.settle()
    w.add_node("node-3")
    w.settle()                                  # joined: nothing moves unless asked
    assert sorted(w.per_node("web").values()) == sorted(w.per_node("api").values()) == [2, 2]
    for _ in range(4):
        w.step(rebalance=frozenset({"web", "gone"}))    # a removed service is ignored
        w.agents_start()
    assert sorted(w.per_node("web").values()) == [1, 1, 2]
    assert sorted(w.per_node("api").values()) == [2, 2]
    assert w.step(rebalance=frozenset({"web"})).empty


def test_update_replaces_one_slot_at_a_time():
    w = World()
    w.run(ServiceSpec("web", "img:1", replicas=3))
    w.settle()
    w.run(ServiceSpec("web", "img:2", replicas=3, update=UpdateConfig(parallelism=1)))
    ch = w.step()
    assert len(ch.create) == 1 and ch.create[0].revision == 2
    assert w.step().empty                      # successor not running yet
    w.settle()
    assert {t.revision for t in w.live()} == {2} and len(w.live()) == 3


def test_pending_task_explains_then_places_when_a_node_joins():
    w = World(nodes=1)
    w.run(ServiceSpec("db", "img", replicas=2, reservations=Resources(memory=5 << 30)))
    ch = w.step()
    pending = [t for t in ch.create if t.node is None]
    assert len(pending) == 1
    assert pending[0].reason == "no node has 5 GiB of memory free: node-1 has 3 GiB"
    w.add_node("node-2")
    ch = w.step()
    assert [(t.task_id, t.node, t.reason) for t in ch.update] == [(pending[0].task_id, "node-2", "")]


def test_removed_service_and_garbage_collection():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=2))
    w.settle()
    del w.services["web"]
    ch = w.step()
    assert {t.reason for t in ch.update} == {"service removed"}
    w.agents_start()
    assert w.step(gc_after=30).delete == []
    w.now += 30
    assert len(w.step(gc_after=30).delete) == 2
    assert not w.tasks


def test_failed_task_is_replaced():
    w = World()
    w.run(ServiceSpec("web", "img", replicas=1))
    w.settle()
    (t,) = w.live()
    w.tasks[t.task_id] = replace(t, state=TaskState.FAILED, reason="exit code 1")
    ch = w.step()
    assert ch.update[0].reason == "task failed: exit code 1"
    assert len(ch.create) == 1 and ch.create[0].slot == 1


def test_global_service_one_per_eligible_node():
    w = World()
    w.nodes["node-3"] = replace(w.nodes["node-3"], labels={"role": "edge"})
    w.run(ServiceSpec("agent", "img", mode="global", constraints=("node.labels.role!=edge",)))
    ch = w.step()
    assert sorted(t.node for t in ch.create) == ["node-1", "node-2"]
    w.set_status("node-1", NodeStatus.DRAINING)
    ch = w.step()
    assert [t.node for t in ch.update if t.desired == SHUTDOWN] == ["node-1"]
    assert not ch.create


def test_activate_before_successor_placed_keeps_the_old_task():
    w = World(nodes=1)
    w.run(ServiceSpec("web", "img", replicas=1))
    w.settle()
    (old,) = w.live()
    w.set_status("node-1", NodeStatus.DRAINING)
    ch = w.step()
    assert len(ch.create) == 1 and ch.create[0].node is None   # nowhere to go
    w.set_status("node-1", NodeStatus.READY)
    ch = w.step()
    assert [(t.task_id, t.reason) for t in ch.update] == [(ch.update[0].task_id, "not needed any more")]
    assert [t.task_id for t in w.live()] == [old.task_id]
