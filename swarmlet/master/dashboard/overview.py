"""The live picture of the cluster that ``swarmlet top`` and the dashboard draw.

``overview(master, events, now)`` turns the master's in-memory state (nodes with
their last polled utilization, services, tasks) and the ingress load
balancers' snapshot into one JSON document:

    {"ts", "version", "cluster",
     "nodes":    [{"name", "status", "availability", "address", "cpus", "cpu_percent",
                   "mem_used", "mem_total", "tasks", "serving", "unhealthy", "labels"}],
     "services": [{"name", "mode", "image", "replicas", "running", "health",
                   "req_s", "errors", "requests", "ports", "cpu", "autoscale", "pending", "update",
                   "tasks": [{"task", "node", "slot", "state", "health"}]}],
     "events":   [{"id", "ts", "kind", "subject", "message"}], "tasks_listed"}

A service's ``tasks`` are listed only while the cluster runs at most ``TASK_LIST_MAX``
replicas (the node cards of a small cluster show them); above, ``tasks_listed`` is
false and each node row carries its counts (``serving``, ``unhealthy``), so a frame
for 1,000 nodes and 10,000 replicas stays a few hundred kilobytes.

``health`` of a service: ``ok`` (every replica serves), ``degraded`` (some),
``down`` (none), ``idle`` (zero asked for). ``errors`` counts 5xx answers and
failed upstream attempts of its published ports. Only reads; never blocks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from ...shipped.models import Health, TaskState
from ..state import RUNNING
from .. import views

TASK_LIST_MAX = 500


def service_health(desired: int, serving: int) -> str:
    if desired <= 0:
        return "idle"
    if serving >= desired:
        return "ok"
    return "degraded" if serving > 0 else "down"


def lb_by_service(snapshot: Mapping[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per service: req/s, answered requests and errors, summed over its published ports."""
    out: Dict[str, Dict[str, float]] = {}
    for lb in snapshot.values():
        agg = out.setdefault(str(lb.get("service")), {"req_s": 0.0, "requests": 0, "errors": 0})
        agg["req_s"] += float(lb.get("requests_per_second") or 0.0)
        agg["requests"] += int(lb.get("requests") or 0)
        fives = sum(int(n) for code, n in (lb.get("by_status") or {}).items() if str(code).startswith("5"))
        agg["errors"] += fives + sum(int(n) for n in (lb.get("upstream_errors") or {}).values())
    return out


def overview(master: Any, events: Sequence[Mapping[str, Any]], now: float) -> Dict[str, Any]:
    ingress = getattr(master, "ingress", None)
    lb = lb_by_service(ingress.snapshot()) if ingress is not None else {}
    scaler = getattr(master, "autoscaler", None)
    by_service: Dict[str, List[Any]] = {}
    serving_on: Dict[str, int] = {}
    unhealthy_on: Dict[str, int] = {}
    for t in master.tasks.values():
        if t.desired == RUNNING:
            by_service.setdefault(t.service, []).append(t)
            if t.node is not None:
                if t.serving:
                    serving_on[t.node] = serving_on.get(t.node, 0) + 1
                elif t.health == Health.UNHEALTHY or t.state == TaskState.FAILED:
                    unhealthy_on[t.node] = unhealthy_on.get(t.node, 0) + 1
    listed = sum(len(v) for v in by_service.values()) <= TASK_LIST_MAX
    nodes = [{**{k: row[k] for k in ("name", "status", "availability", "address", "cpus",
                                     "cpu_percent", "mem_used", "mem_total", "tasks", "labels")},
              "serving": serving_on.get(row["name"], 0), "unhealthy": unhealthy_on.get(row["name"], 0)}
             for row in master.nodes_view()]
    services = []
    for name in sorted(master.services):
        svc = master.services[name]
        spec = svc.spec
        live = sorted(by_service.get(name, []), key=lambda t: (t.slot, t.created_at))
        serving = sum(1 for t in live if t.serving)
        desired = spec.replicas if spec.mode != "global" else len(live)
        stats = lb.get(name, {})
        services.append({
            "name": name, "mode": spec.mode, "image": spec.image, "replicas": desired,
            "running": serving, "health": service_health(desired, serving),
            "req_s": round(float(stats.get("req_s", 0.0)), 2),
            "requests": int(stats.get("requests", 0)), "errors": int(stats.get("errors", 0)),
            "ports": views.ports_text(spec),
            "cpu": scaler.last_cpu.get(name) if scaler is not None else None,
            "autoscale": ({"min": spec.autoscale.min, "max": spec.autoscale.max,
                           "cpu": spec.autoscale.cpu, "down_window": spec.autoscale.down_window}
                          if spec.autoscale else None),
            "tasks": [{"task": t.task_id, "node": t.node, "slot": t.slot,
                       "state": views.task_row(t)["state"], "health": t.health.value}
                      for t in live] if listed else [],
            "pending": sum(1 for t in live if t.node is None),
            "update": master.rollout_view(name) if hasattr(master, "rollout_view") else None,
        })
    return {"ts": now, "version": master.obs.version, "cluster": dict(master.cluster),
            "nodes": nodes, "services": services, "events": list(events), "tasks_listed": listed}
