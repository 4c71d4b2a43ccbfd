"""The scheduler: a pure, deterministic function from cluster state to a plan.

Input: nodes (``NodeInfo``: capacity, utilization from gossip, labels, status),
the tasks already placed (``Placed``: what they reserve and which host ports
they hold), and placement requests (``Request``: a spec and a slot). Output: a
``Plan`` mapping each request to a node, or to a sentence saying why no node
can take it ("no node has 2 GiB of memory free: node-1 has 1.2 GiB, ...").

Filters, in the order explanations use: node ready (not down, suspect, left
or draining), label/name constraints, ``max_per_node``, host-port conflicts,
CPU reservation, memory reservation. Reservations are checked against
capacity, never against observed use, so a node is never over-committed.

Strategies (``ServiceSpec.placement``):
- ``spread`` (default): fewest replicas of this service on the node, then the
  lowest utilization (max of observed CPU/memory use and reserved fractions,
  compared in 5 % steps), then the fewest tasks, then the name.
- ``binpack``: fill the most utilized node that fits first.

Spread preferences (``ServiceSpec.preferences``, Swarm's ``placement.preferences:
[{spread: node.labels.zone}]``) come before all of these: replicas are spread
evenly over the values of each label in turn (nodes without the label form one
group of their own), then over nodes as above.

Speed (``bench/scheduler``): nodes passing the static filters are cached per
constraint set; spread keeps one lazy min-heap per service. Every sort key
only grows as tasks are placed, so a popped entry whose key is stale is
re-pushed with its current key, and a node that no longer fits is dropped
for the rest of that service (resources only shrink within one plan). Each
placement is O(log N) instead of a rescan of every node; a service that
cannot be placed is explained once, in O(N).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..shipped.models import NodeInfo, NodeStatus, ServiceSpec
from ..shipped.constraints import Constraint, first_failing, parse_all

SPREAD = "spread"
BINPACK = "binpack"
STRATEGIES = (SPREAD, BINPACK)
_EPS = 1e-9
_BUCKETS = 20  # 5 % utilization steps: near-equal nodes are then told apart by task count

Port = Tuple[int, str]


@dataclass(frozen=True)
class Placed:
    """A task already on a node: it counts, reserves, and holds host ports."""

    service: str
    node: str
    cpus: float = 0.0
    memory: int = 0
    host_ports: Tuple[Port, ...] = ()


@dataclass(frozen=True)
class Request:
    """Place one replica of ``spec``; ``key`` is the caller's handle (a task id)."""

    key: str
    spec: ServiceSpec
    slot: int = 0


@dataclass(frozen=True)
class Plan:
    placements: Dict[str, str]   # request key -> node name
    unplaced: Dict[str, str]     # request key -> why no node can take it


def host_ports(spec: ServiceSpec) -> Tuple[Port, ...]:
    return tuple((p.host_port, p.protocol) for p in spec.ports if p.host_port)


def placed(spec: ServiceSpec, node: str) -> Placed:
    """What a task of ``spec`` on ``node`` occupies."""
    r = spec.reservations
    return Placed(spec.name, node, float(r.cpus or 0.0), int(r.memory or 0), host_ports(spec))


class _Node:
    __slots__ = ("name", "ready", "status", "labels", "cpus", "mem_total", "res_cpu",
                 "res_mem", "observed", "tasks", "ports")

    def __init__(self, info: NodeInfo) -> None:
        self.name = info.name
        self.status = info.status
        self.ready = info.status == NodeStatus.READY
        self.labels = info.labels
        self.cpus = float(info.cpus)
        self.mem_total = int(info.mem_total)
        self.res_cpu = 0.0
        self.res_mem = 0
        used = info.mem_used / info.mem_total if info.mem_total > 0 else 0.0
        self.observed = max(0.0, min(1.0, max(info.cpu_percent / 100.0, used)))
        self.tasks = 0
        self.ports: set = set()

    def take(self, cpus: float, memory: int, ports: Iterable[Port]) -> None:
        self.res_cpu += cpus
        self.res_mem += memory
        self.tasks += 1
        self.ports.update(ports)

    @property
    def cpu_free(self) -> float:
        return self.cpus - self.res_cpu

    @property
    def mem_free(self) -> int:
        return self.mem_total - self.res_mem

    def bucket(self) -> int:
        u = self.observed
        if self.cpus > 0:
            u = max(u, self.res_cpu / self.cpus)
        if self.mem_total > 0:
            u = max(u, self.res_mem / self.mem_total)
        return int(min(u, 1.0) * _BUCKETS)


class _Need:
    """What one replica of a spec needs, precomputed once per service."""

    __slots__ = ("cpus", "memory", "ports", "port_set", "max_per_node", "constraints")

    def __init__(self, spec: ServiceSpec, constraints: Tuple[Constraint, ...]) -> None:
        self.cpus = float(spec.reservations.cpus or 0.0)
        self.memory = int(spec.reservations.memory or 0)
        self.ports = host_ports(spec)
        self.port_set = frozenset(self.ports)
        self.max_per_node = spec.max_per_node
        self.constraints = constraints

    def fits(self, n: _Node, count: int) -> bool:
        if self.max_per_node is not None and count >= self.max_per_node:
            return False
        if self.port_set and not self.port_set.isdisjoint(n.ports):
            return False
        if self.cpus > 0 and self.cpus > n.cpus - n.res_cpu + _EPS:
            return False
        if self.memory > 0 and (n.mem_total <= 0 or self.memory > n.mem_total - n.res_mem):
            return False
        return True


class Scheduler:
    """Cluster accounting for one planning pass; ``place`` may be called repeatedly.

    Build it from the nodes and the tasks already placed, then ask it to place
    requests. Placements it makes are accounted for in later calls, so the
    reconciler can place replacements after new replicas in one pass.
    """

    def __init__(self, nodes: Iterable[NodeInfo], existing: Iterable[Placed] = ()) -> None:
        self._order: List[_Node] = [_Node(i) for i in sorted(nodes, key=lambda i: i.name)]
        self._nodes: Dict[str, _Node] = {n.name: n for n in self._order}
        self._count: Dict[str, Dict[str, int]] = {}
        self._eligible: Dict[Tuple[Constraint, ...], List[_Node]] = {}
        for p in existing:
            self.account(p)

    def account(self, p: Placed) -> None:
        """Record a task that occupies a node (unknown nodes are ignored)."""
        n = self._nodes.get(p.node)
        if n is None:
            return
        n.take(p.cpus, p.memory, p.host_ports)
        per = self._count.setdefault(p.service, {})
        per[p.node] = per.get(p.node, 0) + 1

    def count(self, service: str, node: str) -> int:
        return self._count.get(service, {}).get(node, 0)

    def eligible(self, spec: ServiceSpec) -> List[str]:
        """Ready nodes matching the spec's constraints (capacity not checked)."""
        return [n.name for n in self._eligible_nodes(parse_all(spec.constraints))]

    def _eligible_nodes(self, cons: Tuple[Constraint, ...]) -> List[_Node]:
        got = self._eligible.get(cons)
        if got is None:
            got = [n for n in self._order
                   if n.ready and (not cons or first_failing(cons, n.name, n.labels) is None)]
            self._eligible[cons] = got
        return got

    def place(self, requests: Sequence[Request]) -> Plan:
        placements: Dict[str, str] = {}
        unplaced: Dict[str, str] = {}
        # One group per service and constraint set (global services pin each
        # request to a node with an extra node.name== constraint).
        groups: Dict[Tuple[str, Tuple[str, ...]], List[Request]] = {}
        for r in requests:
            groups.setdefault((r.spec.name, r.spec.constraints), []).append(r)
        for reqs in groups.values():
            spec = reqs[0].spec
            need = _Need(spec, parse_all(spec.constraints))
            candidates = self._eligible_nodes(need.constraints)
            counts = self._count.setdefault(spec.name, {})
            if spec.placement == BINPACK:
                chosen = self._binpack(reqs, need, candidates, counts)
            else:
                chosen = self._spread(reqs, need, candidates, counts)
            why = ""
            for r, node in zip(reqs, chosen):
                if node is None:
                    why = why or self.explain(spec, need)
                    unplaced[r.key] = why
                else:
                    placements[r.key] = node
        return Plan(placements, unplaced)

    def _take(self, n: _Node, need: _Need, counts: Dict[str, int]) -> None:
        n.take(need.cpus, need.memory, need.ports)
        counts[n.name] = counts.get(n.name, 0) + 1

    def _spread(self, reqs: List[Request], need: _Need, candidates: List[_Node],
                counts: Dict[str, int]) -> List[Optional[str]]:
        prefs = _preference_labels(reqs[0].spec.preferences)
        # Replicas of this service per value of each preference label (all nodes count).
        groups: List[Dict[str, int]] = [{} for _ in prefs]
        for node_name, k in counts.items():
            node = self._nodes.get(node_name)
            if node is not None:
                for i, label in enumerate(prefs):
                    value = node.labels.get(label, "")
                    groups[i][value] = groups[i].get(value, 0) + k

        def key(n: _Node) -> tuple:
            g = tuple(groups[i].get(n.labels.get(label, ""), 0) for i, label in enumerate(prefs))
            return (g, counts.get(n.name, 0), n.bucket(), n.tasks, n.name)

        heap = [key(n) + (n,) for n in candidates]
        heapq.heapify(heap)
        out: List[Optional[str]] = []
        for _ in reqs:
            chosen = None
            while heap:
                top = heap[0]
                n = top[-1]
                fresh = key(n)
                if fresh != top[:-1]:
                    heapq.heapreplace(heap, fresh + (n,))
                    continue
                if not need.fits(n, fresh[1]):
                    heapq.heappop(heap)   # only gets fuller within this plan
                    continue
                chosen = n
                break
            if chosen is None:
                out.append(None)
                continue
            self._take(chosen, need, counts)
            for i, label in enumerate(prefs):
                value = chosen.labels.get(label, "")
                groups[i][value] = groups[i].get(value, 0) + 1
            heapq.heapreplace(heap, key(chosen) + (chosen,))
            out.append(chosen.name)
        return out

    def _binpack(self, reqs: List[Request], need: _Need, candidates: List[_Node],
                 counts: Dict[str, int]) -> List[Optional[str]]:
        # Most utilized first. Filling a node only raises it further, and a node
        # skipped for not fitting never fits again in this plan: one pass suffices.
        order = sorted(candidates, key=lambda n: (-n.bucket(), -n.tasks, n.name))
        i = 0
        out: List[Optional[str]] = []
        for _ in reqs:
            while i < len(order) and not need.fits(order[i], counts.get(order[i].name, 0)):
                i += 1
            if i == len(order):
                out.append(None)
                continue
            self._take(order[i], need, counts)
            out.append(order[i].name)
        return out

    # --- explanations -----------------------------------------------------

    def explain(self, spec: ServiceSpec, need: Optional[_Need] = None) -> str:
        """Why no node can take one more replica of ``spec``, in one sentence."""
        if need is None:
            need = _Need(spec, parse_all(spec.constraints))
        if not self._order:
            return "no nodes in the cluster"
        counts = self._count.get(spec.name, {})
        not_ready: List[str] = []
        failed_constraint: Dict[str, int] = {}
        at_max = 0
        port_busy: Dict[str, int] = {}
        short_cpu: List[Tuple[float, str]] = []
        short_mem: List[Tuple[int, str]] = []
        for n in self._order:
            if not n.ready:
                not_ready.append(f"{n.name} {n.status.value}")
                continue
            c = first_failing(need.constraints, n.name, n.labels)
            if c is not None:
                failed_constraint[c.text] = failed_constraint.get(c.text, 0) + 1
                continue
            if need.max_per_node is not None and counts.get(n.name, 0) >= need.max_per_node:
                at_max += 1
                continue
            busy = [p for p in need.ports if p in n.ports]
            if busy:
                key = f"{busy[0][0]}/{busy[0][1]}"
                port_busy[key] = port_busy.get(key, 0) + 1
                continue
            if need.cpus > 0 and need.cpus > n.cpu_free + _EPS:
                short_cpu.append((n.cpu_free, n.name))
                continue
            if need.memory > 0 and (n.mem_total <= 0 or need.memory > n.mem_free):
                short_mem.append((n.mem_free if n.mem_total > 0 else -1, n.name))
                continue
        total = len(self._order)
        parts: List[str] = []
        if short_mem:
            parts.append(_shortage(len(short_mem) == total, f"{fmt_bytes(need.memory)} of memory",
                                   [(f, nm, fmt_bytes(f) if f >= 0 else "unknown memory")
                                    for f, nm in short_mem]))
        if short_cpu:
            parts.append(_shortage(len(short_cpu) == total, f"{fmt_cpus(need.cpus)} CPUs",
                                   [(f, nm, fmt_cpus(max(f, 0.0))) for f, nm in short_cpu]))
        for port, k in port_busy.items():
            parts.append(f"{_nodes(k)} already use host port {port}")
        if at_max:
            parts.append(f"{_nodes(at_max)} already run {need.max_per_node} "
                         f"(max per node)")
        for text, k in failed_constraint.items():
            parts.append(f"{_nodes(k)} fail constraint {text}")
        if not_ready:
            parts.append(f"{_nodes(len(not_ready))} not ready ({_first(not_ready)})")
        if not parts:
            return "no node can take it"
        return "; ".join(parts)


def _preference_labels(prefs: Sequence[str]) -> List[str]:
    """``node.labels.zone`` -> the node label ``zone`` (``engine.labels.*`` read the same labels)."""
    out = []
    for p in prefs:
        for head in ("node.labels.", "engine.labels."):
            if p.startswith(head):
                out.append(p[len(head):])
    return out


def _shortage(everyone: bool, what: str, free: List[Tuple[float, str, str]]) -> str:
    free.sort(key=lambda x: (-x[0], x[1]))
    shown = ", ".join(f"{name} has {text}" for _, name, text in free[:3])
    more = ", …" if len(free) > 3 else ""
    if everyone:
        return f"no node has {what} free: {shown}{more}"
    return f"{_nodes(len(free))} lack {what} free ({shown}{more})"


def _nodes(k: int) -> str:
    return f"{k} node" if k == 1 else f"{k} nodes"


def _first(items: List[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (", …" if len(items) > k else "")


def fmt_bytes(n: float) -> str:
    gib = 1024 ** 3
    if n >= gib:
        return f"{round(n / gib, 1):g} GiB"
    return f"{round(n / 1024 ** 2, 1):g} MiB"


def fmt_cpus(c: float) -> str:
    return f"{round(c, 2):g}"


def schedule(nodes: Iterable[NodeInfo], requests: Sequence[Request],
             existing: Iterable[Placed] = ()) -> Plan:
    """Place ``requests`` on ``nodes`` given the ``existing`` tasks. Pure."""
    return Scheduler(nodes, existing).place(requests)


def node_loads(nodes: Mapping[str, NodeInfo]) -> Dict[str, float]:
    """Observed utilization per node (0..1), as the scheduler sees it; for display."""
    return {name: _Node(info).observed for name, info in nodes.items()}
