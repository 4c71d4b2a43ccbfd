"""The overview document the dashboard and top draw, sized for 1,000 nodes (dashboard/overview.py)."""

from __future__ import annotations

from types import SimpleNamespace

from swarmlet.master.dashboard.overview import TASK_LIST_MAX, overview
from swarmlet.master.state import RUNNING, SHUTDOWN, Service, Task
from swarmlet.shipped.models import Health, ServiceSpec, TaskState


def _master(nodes: int, per_node: int) -> SimpleNamespace:
    spec = ServiceSpec("web", "img", replicas=nodes * per_node)
    tasks = {}
    for i in range(nodes * per_node):
        node = f"n{i % nodes}"
        health = Health.UNHEALTHY if i == 0 else Health.HEALTHY
        tasks[f"t{i}"] = Task(f"t{i}", "web", i + 1, 1, node=node, state=TaskState.RUNNING, health=health)
    tasks["gone"] = Task("gone", "web", 1, 1, node="n1", desired=SHUTDOWN, state=TaskState.RUNNING)
    rows = [{"name": f"n{i}", "status": "ready", "availability": "active", "address": "x", "cpus": 8,
             "cpu_percent": 1.0, "mem_used": 1, "mem_total": 2, "tasks": per_node, "labels": {}}
            for i in range(nodes)]
    return SimpleNamespace(nodes_view=lambda: rows, tasks=tasks, services={"web": Service(spec, 1, 0, 0, 1)},
                           obs=SimpleNamespace(version=7), cluster={"name": "c"}, ingress=None,
                           autoscaler=None, rollout_view=lambda name: None)


def test_a_small_cluster_lists_every_task_with_counts_per_node():
    doc = overview(_master(3, 2), [], 0)
    assert doc["tasks_listed"] is True
    assert len(doc["services"][0]["tasks"]) == 6            # the shut-down one is not shown
    by = {n["name"]: n for n in doc["nodes"]}
    assert (by["n0"]["serving"], by["n0"]["unhealthy"]) == (1, 1)
    assert (by["n1"]["serving"], by["n1"]["unhealthy"]) == (2, 0)


def test_a_big_cluster_sends_counts_not_task_lists():
    m = _master(1000, 10)
    assert 10 * 1000 > TASK_LIST_MAX
    doc = overview(m, [], 0)
    assert doc["tasks_listed"] is False and doc["services"][0]["tasks"] == []
    assert sum(n["serving"] for n in doc["nodes"]) == 9999
    assert sum(n["unhealthy"] for n in doc["nodes"]) == 1
    assert doc["services"][0]["running"] == 9999 and doc["services"][0]["health"] == "degraded"
