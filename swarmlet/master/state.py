"""The master's own records: services with revisions, tasks (desired + observed), nodes.

Frozen dataclasses, shared by the pure core (scheduler, reconcile) and the
shells (store, api, daemon). A task keeps what the master wants (``desired``:
running or shutdown, ``node``) apart from what agents report (``state``,
``health``, ``reason``), as swarmkit does. ``merge_observed`` folds one
agent's report into the tasks placed on that node (pure); ``task_spec`` and
``assignment_tasks`` build what an agent receives. ``SecretVersion`` is one
stored version of a secret or config (sealed, see ``vault``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..shipped.models import EdgeSpec, Health, NodeStatus, ServiceSpec, TaskSpec, TaskState, TaskStatus

RUNNING = "running"
SHUTDOWN = "shutdown"
ACTIVE = "active"    # node availability set by the user
DRAIN = "drain"


@dataclass(frozen=True)
class Service:
    spec: ServiceSpec
    revision: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    # The revision whose task template is current: scaling makes a revision
    # but must not replace running tasks, so tasks of revision >= this are current.
    template_revision: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def current_from(self) -> int:
        return self.template_revision or self.revision


def same_template(a: ServiceSpec, b: ServiceSpec) -> bool:
    """Whether two revisions run identical tasks (they differ at most in replicas, in the
    autoscale policy, which only moves the replica count, or in their edge routing, which
    only the load balancers read)."""
    return (dataclasses.replace(a, replicas=0, autoscale=None, edge=EdgeSpec())
            == dataclasses.replace(b, replicas=0, autoscale=None, edge=EdgeSpec()))


def kept_revisions(svc: Service, revisions: Iterable[int],
                   specs: Optional[Mapping[Tuple[str, int], ServiceSpec]]) -> FrozenSet[int]:
    """Which of ``revisions`` (older than the current template) run the current template all the
    same. A rollback stores an earlier spec as a new revision: the tasks still running that
    spec are kept as they are (same task ids), only the ones it had updated are replaced."""
    if not specs:
        return frozenset()
    out = set()
    for rev in set(revisions):
        spec = specs.get((svc.name, rev))
        if rev < svc.current_from and spec is not None and same_template(spec, svc.spec):
            out.add(rev)
    return frozenset(out)


def next_revision(old: Optional[Service], spec: ServiceSpec, now: float) -> Service:
    """The service after storing ``spec`` as its next revision."""
    if old is None:
        return Service(spec, 1, now, now, 1)
    rev = old.revision + 1
    tmpl = old.current_from if same_template(old.spec, spec) else rev
    return Service(spec, rev, old.created_at, now, tmpl)


@dataclass(frozen=True)
class Task:
    task_id: str
    service: str
    slot: int
    revision: int
    node: Optional[str] = None           # None: pending (``reason`` says why)
    desired: str = RUNNING               # running | shutdown
    state: TaskState = TaskState.PENDING
    health: Health = Health.NONE
    reason: str = ""
    container_id: Optional[str] = None
    host_ports: Dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    # Replacement backoff (``backoff.py``): failed attempts of this slot in a row before this
    # task, not placed before ``not_before``, the last of those failures, when it first served.
    failures: int = 0
    not_before: float = 0.0
    last_error: str = ""
    serving_since: float = 0.0

    @property
    def serving(self) -> bool:
        """Running and, if it has a health check, healthy: safe to stop its predecessor."""
        return self.state == TaskState.RUNNING and self.health in (Health.HEALTHY, Health.NONE)


@dataclass(frozen=True)
class NodeRecord:
    """A registered node as the master stores it (liveness is computed, not stored)."""

    name: str
    address: str
    api_port: int = 7443
    labels: Dict[str, str] = field(default_factory=dict)
    availability: str = ACTIVE            # active | drain
    assignment_version: int = 0
    registered_at: float = 0.0


@dataclass(frozen=True)
class SecretVersion:
    """One stored version of a secret or config (``kind``): its value sealed by the
    ``vault`` (never in clear), its size and the vault's keyed fingerprint of it."""

    kind: str                 # secret | config
    name: str
    version: int
    sealed: str = field(default="", repr=False)
    size: int = 0
    fingerprint: str = field(default="", repr=False)
    created_at: float = 0.0
    labels: Dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> "SecretKey":
        return (self.kind, self.name, self.version)


SecretKey = Tuple[str, str, int]     # (kind, name, version)


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


def task_labels(spec: ServiceSpec) -> Dict[str, str]:
    """A task's container labels: the service's container labels (``labels:`` in a stack
    file) and swarmlet's own ``io.swarmlet.*`` service labels (its stack), not the
    other service labels (``deploy.labels``), which Docker keeps on the service only."""
    out = dict(spec.container.labels)
    out.update({k: v for k, v in spec.labels.items() if k.startswith("io.swarmlet.")})
    return out


def task_spec(task: Task, spec: ServiceSpec) -> TaskSpec:
    """What an agent needs to run ``task`` of ``spec`` (the task's own revision)."""
    return TaskSpec(
        task_id=task.task_id, service=task.service, revision=task.revision, slot=task.slot,
        image=spec.image, command=spec.command, entrypoint=spec.entrypoint, env=dict(spec.env),
        ports=spec.ports, volumes=spec.volumes, health=spec.health, limits=spec.limits,
        restart=spec.restart, labels=task_labels(spec), secrets=spec.secrets,
        configs=spec.configs, container=dataclasses.replace(spec.container, labels={}))


def assignment_tasks(node: str, tasks: Iterable[Task],
                     spec_of: Mapping[Tuple[str, int], ServiceSpec]) -> Tuple[TaskSpec, ...]:
    """The node's full desired task set, sorted by task id (stable for comparison)."""
    out = []
    for t in tasks:
        if t.node == node and t.desired == RUNNING:
            spec = spec_of.get((t.service, t.revision))
            if spec is not None:
                out.append(task_spec(t, spec))
    return tuple(sorted(out, key=lambda s: s.task_id))


def merge_observed(node: str, tasks: Sequence[Task], reported: Sequence[TaskStatus],
                   now: float) -> List[Task]:
    """Fold an agent's task report into the master's tasks on ``node``; changed ones only.

    Observed states only move forward, except that a task the agent restarted
    may report health again. A task we want shut down that the agent no longer
    reports is finished (STOPPED).
    """
    by_id = {s.task_id: s for s in reported}
    changed: List[Task] = []
    for t in tasks:
        if t.node != node:
            continue
        s = by_id.get(t.task_id)
        if s is None:
            if t.desired == SHUTDOWN and not t.state.terminal:
                changed.append(replace(t, state=TaskState.STOPPED, updated_at=now))
            continue
        new = replace(t, state=t.state.advance(s.state), health=s.health,
                      reason=s.reason or (t.reason if t.desired == SHUTDOWN else ""),
                      container_id=s.container_id or t.container_id,
                      host_ports=dict(s.host_ports) or t.host_ports, restarts=s.restarts)
        if new.serving and not new.serving_since:
            new = replace(new, serving_since=now)
        if new != t:
            changed.append(replace(new, updated_at=now))
    return changed


def node_status(record: NodeRecord, live: NodeStatus) -> NodeStatus:
    """A node's status for scheduling: liveness first, then the user's drain."""
    if live in (NodeStatus.DOWN, NodeStatus.LEFT):
        return live
    if record.availability == DRAIN:
        return NodeStatus.DRAINING
    return live
