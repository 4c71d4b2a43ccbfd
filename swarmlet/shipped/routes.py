"""Routes: which healthy replicas serve each published port. Pure.

The master computes the cluster's routing table from its services, tasks and
nodes, runs a load balancer for every published port from it, and ships the
same table to every agent inside its assignment, so each agent can run the
same proxies (ingress mode) and keep routing while the master is down. A
backend is a replica that runs and is healthy (or has no health check), on a
node that is not down or gone, reached at the node's address and the host
port Docker gave the replica's target port.

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .models import STACK_LABEL, STACK_SERVICE_LABEL, Health, Route, RouteBackend, ServiceSpec, TaskState
from .validate import edge_port

__all__ = ["Route", "RouteBackend", "ReplicaView", "build_routes", "by_port", "edge_routes", "health_path", "serving"]


@dataclass(frozen=True)
class ReplicaView:
    """What routing needs to know of one task (decoupled from the master's Task)."""

    task_id: str
    service: str
    node: Optional[str]
    state: TaskState
    health: Health
    host_ports: Mapping[str, int] = field(default_factory=dict)
    desired_running: bool = True


def health_path(spec: ServiceSpec) -> Optional[str]:
    """The path the load balancer checks: the service's HTTP check, else TCP connects."""
    return spec.health.path if spec.health.kind == "http" else None


def serving(r: ReplicaView) -> bool:
    return (r.desired_running and r.node is not None and r.state == TaskState.RUNNING
            and r.health in (Health.HEALTHY, Health.NONE))


def build_routes(specs: Iterable[ServiceSpec], replicas: Iterable[ReplicaView],
                 node_address: Mapping[str, str],
                 vips: Optional[Mapping[str, str]] = None) -> Tuple[Route, ...]:
    """The routing table: a route per TCP port a service declares. ``published``
    is set where the load balancer publishes it; ``vip`` (from ``vips``) makes it
    reachable by name. ``node_address`` holds only nodes fit to serve."""
    by_service: Dict[str, List[ReplicaView]] = {}
    for r in replicas:
        if serving(r) and r.node in node_address:
            by_service.setdefault(r.service, []).append(r)
    routes: List[Route] = []
    for spec in sorted(specs, key=lambda s: s.name):
        for p in spec.ports:
            if p.protocol != "tcp":
                continue
            published = p.published if p.host_port is None else None
            key = f"{p.target}/tcp"
            backends = tuple(sorted(
                (RouteBackend(r.task_id, r.node or "", node_address[r.node or ""], int(r.host_ports[key]))
                 for r in by_service.get(spec.name, []) if key in r.host_ports),
                key=lambda b: b.task_id))
            e = spec.edge
            edge = {} if not e.hosts or p.target != edge_port(spec) else {
                "hosts": e.hosts, "path": e.path, "tls": e.tls, "redirect": e.redirect,
                "hsts": e.hsts}
            stack = spec.labels.get(STACK_LABEL) or None
            alias = (spec.labels.get(STACK_SERVICE_LABEL) or spec.name) if stack else None
            routes.append(Route(spec.name, published, p.target, health_path(spec), spec.lb, backends,
                                (vips or {}).get(spec.name), stack=stack, alias=alias, **edge))
    return tuple(routes)


def edge_routes(routes: Iterable[Route]) -> List[Route]:
    """Routes served by host name on the edge ports."""
    return [r for r in routes if r.hosts]


def by_port(routes: Iterable[Route]) -> Dict[int, Route]:
    """Routes keyed by published port; a port claimed twice keeps the first service."""
    out: Dict[int, Route] = {}
    for r in routes:
        if r.published is not None:
            out.setdefault(r.published, r)
    return out
