"""JSON views of the master's state for the API (and so for ``-o json``). Pure: reads only.

The row functions turn records into rows; the functions at the end read a
running master's working state (``node_infos`` is also what the scheduler
gets: every node's status, labels and last polled utilization).

The keys here are the CLI's contract: ``ps`` rows carry ``service``, ``task``,
``node``, ``state``, ``health``, ``reason`` and ``revision`` (plus ``slot``,
``desired`` and details).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..shipped.models import NodeInfo, NodeStatus, ServiceSpec, TaskState, to_wire
from ..stack.plan import DeployPlan
from ..shipped.exceptions import APIError
from .backoff import last_error
from .state import RUNNING, NodeRecord, Service, Task, node_status


def task_row(t: Task) -> Dict[str, Any]:
    state = t.state.name.lower()
    if t.desired != RUNNING and not t.state.terminal:
        state = "stopping" if t.node else "stopped"
    return {
        "service": t.service, "task": t.task_id, "node": t.node, "state": state,
        # a retry that has not run yet shows the failure it follows (backoff.last_error)
        "health": t.health.value, "reason": last_error(t) or t.reason, "revision": t.revision,
        "slot": t.slot, "desired": t.desired, "container_id": t.container_id,
        "host_ports": dict(t.host_ports), "restarts": t.restarts, "created_at": t.created_at,
        "updated_at": t.updated_at, "failures": t.failures,
    }


def ports_text(spec: ServiceSpec) -> str:
    out = []
    for p in spec.ports:
        left = p.published if p.published else (f"host:{p.host_port}" if p.host_port else "")
        out.append(f"{left}:{p.target}/{p.protocol}" if left else f"{p.target}/{p.protocol}")
    return ",".join(out)


def service_row(svc: Service, tasks: Iterable[Task]) -> Dict[str, Any]:
    live = [t for t in tasks if t.service == svc.name and t.desired == RUNNING]
    spec = svc.spec
    return {
        "name": svc.name, "revision": svc.revision, "image": spec.image, "mode": spec.mode,
        "replicas": spec.replicas, "running": sum(1 for t in live if t.serving),
        "pending": sum(1 for t in live if t.node is None), "tasks": len(live),
        "ports": ports_text(spec), "placement": spec.placement,
        "constraints": list(spec.constraints), "created_at": svc.created_at,
        "updated_at": svc.updated_at, "spec": to_wire(spec),
    }


def node_row(rec: NodeRecord, info: NodeInfo, tasks: int, last_seen: Any) -> Dict[str, Any]:
    return {
        "name": rec.name, "address": rec.address, "api_port": rec.api_port,
        "status": info.status.value, "availability": rec.availability, "labels": dict(rec.labels),
        "version": info.version, "cpus": info.cpus, "cpu_percent": info.cpu_percent,
        "mem_used": info.mem_used, "mem_total": info.mem_total, "load1": info.load1,
        "tasks": tasks, "assignment_version": rec.assignment_version, "last_seen": last_seen,
    }


def status_summary(cluster: Mapping[str, Any], infos: List[NodeInfo], services: Mapping[str, Service],
                   tasks: Iterable[Task], extra: Mapping[str, Any]) -> Dict[str, Any]:
    nodes: Dict[str, int] = {"total": len(infos)}
    for s in NodeStatus:
        nodes[s.value] = sum(1 for i in infos if i.status == s)
    live = [t for t in tasks if t.desired == RUNNING]
    desired = sum(s.spec.replicas for s in services.values() if s.spec.mode != "global")
    return {
        "cluster": dict(cluster), "nodes": nodes,
        "services": len(services),
        "tasks": {"desired": desired, "total": len(live),
                  "running": sum(1 for t in live if t.state == TaskState.RUNNING),
                  "healthy": sum(1 for t in live if t.serving),
                  "pending": sum(1 for t in live if t.node is None)},
        **extra,
    }


def plan_view(plan: DeployPlan, text: str) -> Dict[str, Any]:
    """A stack apply's plan as the API answers it (``text`` is what ``deploy`` prints)."""
    return {
        "stack": plan.stack, "file": plan.file, "text": text, "has_changes": plan.has_changes,
        "create": [{"name": c.name, "image": c.new.image if c.new else None} for c in plan.create],
        "update": [{"name": c.name, "image": c.new.image if c.new else None, "rollout": c.rollout,
                    "changes": [dict(zip(("path", "old", "new", "secret"),
                                         (f.path, *f.shown(), f.secret))) for f in c.changes]}
                   for c in plan.update],
        "remove": [c.name for c in plan.remove],
        "unchanged": [c.name for c in plan.unchanged],
        "kept": [c.name for c in plan.kept],
        "warnings": [str(w) for w in plan.warnings],
    }


# --- views of a running master (read its working state; no I/O) ---------------------------

def _num(v: Any, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def node_infos(m: Any) -> List[NodeInfo]:
    """Every node as the scheduler sees it: status, labels, and the last polled utilization."""
    out = []
    for name, rec in sorted(m.nodes.items()):
        live = m.live.get(name)
        stats = live.stats if live is not None and isinstance(live.stats, dict) else {}
        s = stats.get("node", {}) if isinstance(stats.get("node", {}), dict) else {}
        out.append(NodeInfo(
            name=name, address=rec.address, api_port=rec.api_port,
            status=node_status(rec, live.status if live is not None else NodeStatus.SUSPECT),
            labels=dict(rec.labels), version=str((live.info if live is not None else {}).get("version", "")),
            cpus=_num(s.get("cpus"), 1.0), cpu_percent=_num(s.get("cpu_percent"), 0.0),
            mem_used=int(_num(s.get("mem_used"), 0)), mem_total=int(_num(s.get("mem_total"), 0)),
            load1=_num(s.get("load1"), 0.0),
            tasks=sum(1 for t in m.tasks.on(name) if t.desired == RUNNING)))
    return out


def nodes_view(m: Any) -> List[Dict[str, Any]]:
    out = []
    for info in node_infos(m):
        live = m.live.get(info.name)
        out.append(node_row(m.nodes[info.name], info, info.tasks,
                            live.last_ok if live is not None else None))
    return out


def rollout_view(m: Any, name: str) -> Optional[Dict[str, Any]]:
    r = m.rollouts.get(name)
    return r.view() if r is not None else None


def tasks_of(m: Any, service: str) -> List[Task]:
    """A service's tasks from the index (``TaskIndex.of``), or by a scan of a plain mapping."""
    of = getattr(m.tasks, "of", None)
    return of(service) if of is not None else [t for t in m.tasks.values() if t.service == service]


def services_view(m: Any) -> List[Dict[str, Any]]:
    return [{**service_row(m.services[n], tasks_of(m, n)), "update": rollout_view(m, n)}
            for n in sorted(m.services)]


def service_view(m: Any, name: str) -> Dict[str, Any]:
    svc = m.services.get(name)
    if svc is None:
        raise APIError(f"no service {name!r}", status=404)
    return {**service_row(svc, tasks_of(m, name)), "update": rollout_view(m, name)}


def task_list(m: Any, service: Optional[str] = None, all_tasks: bool = False) -> List[Task]:
    """The tasks ``ps`` lists, in its order (``taskrows.TaskRows`` encodes them)."""
    pool = m.tasks.values() if service is None else tasks_of(m, service)
    if service is not None and service not in m.services and not pool:
        raise APIError(f"no service {service!r}", status=404)
    rows = [t for t in pool if all_tasks or t.desired == RUNNING or not t.state.terminal]
    rows.sort(key=lambda t: (t.service, t.slot, t.desired != RUNNING, -t.created_at))
    return rows


def tasks_view(m: Any, service: Optional[str] = None, all_tasks: bool = False) -> List[Dict[str, Any]]:
    return [task_row(t) for t in task_list(m, service, all_tasks)]


def status_view(m: Any) -> Dict[str, Any]:
    return status_summary(m.cluster, node_infos(m), m.services, m.tasks.values(),
                          {"auto_rebalance": m.auto_rebalance,
                           "uptime": round(m.clock() - m.started_at, 1),
                           "counters": dict(m.counters)})
