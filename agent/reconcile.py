"""Local reconcile, pure: desired tasks + observed containers + now -> a plan.

No I/O and no clock here; the daemon lists containers, calls ``plan`` and
applies the actions through the runtime. Rules:

- Only containers labelled ``io.swarmlet.managed=1`` *and* this node's name
  are ever considered (``is_ours``); anything else is invisible.
- A container whose task is not desired, or whose revision differs from the
  desired one, is removed. Of several containers for one task the best one
  (running first, then newest) is kept and the rest removed: no duplicates.
- A desired task without a container is created, unless it already failed
  for good (pull error, bad spec) or an action on it is in flight ("busy").
  A container of an older revision is removed first, the new one created
  in a later pass: one task id never has two live containers.
- A container that never started is started. One that exited is restarted
  per the task's restart policy with exponential backoff: ``delay * 2**streak``
  (capped) after it finished; a run longer than ``reset_after`` resets the
  streak. ``max_attempts`` exhausted or a policy that says no -> terminal.
- ``desired is None`` (no assignment known yet, e.g. a fresh agent whose
  state file is gone) means: touch nothing until the master sends one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from swarmlet.shipped.models import TaskSpec, TaskState

MANAGED = "io.swarmlet.managed"
NODE = "io.swarmlet.node"
SERVICE = "io.swarmlet.service"
TASK = "io.swarmlet.task"
REVISION = "io.swarmlet.revision"
SLOT = "io.swarmlet.slot"


def is_ours(labels: Mapping[str, str], node: str) -> bool:
    return labels.get(MANAGED) == "1" and labels.get(NODE) == node and bool(labels.get(TASK))


@dataclass(frozen=True)
class Observed:
    """One container as Docker reports it (only the fields reconcile needs)."""

    container_id: str
    labels: Dict[str, str]
    status: str                  # created|running|restarting|paused|exited|dead|removing
    exit_code: int = 0
    started_at: float = 0.0      # unix seconds; 0 = unknown
    finished_at: float = 0.0
    created_at: float = 0.0
    error: str = ""              # Docker's State.Error (e.g. a failed start)
    health: str = ""             # Docker's own health status, "" if none
    host_ports: Dict[str, int] = field(default_factory=dict)
    ip: str = ""

    @property
    def task_id(self) -> str:
        return self.labels.get(TASK, "")

    @property
    def revision(self) -> int:
        try:
            return int(self.labels.get(REVISION, "-1"))
        except ValueError:
            return -1


@dataclass(frozen=True)
class RestartRecord:
    total: int = 0               # restarts of this task seen by this agent
    streak: int = 0              # consecutive short runs: the backoff exponent


@dataclass(frozen=True)
class BackoffPolicy:
    max_delay: float = 30.0
    reset_after: float = 10.0


@dataclass(frozen=True)
class Create:
    task: TaskSpec


@dataclass(frozen=True)
class Start:
    task: TaskSpec
    container_id: str
    restart: bool = False        # True: a crash restart (counted)


@dataclass(frozen=True)
class Remove:
    """Stop (gracefully) then remove; ``key`` is the task id it belonged to."""

    container_id: str
    key: str
    reason: str = ""


Action = Union[Create, Start, Remove]


@dataclass(frozen=True)
class Verdict:
    """What the observed container says about a desired task."""

    state: TaskState
    reason: str = ""
    container_id: Optional[str] = None
    down: bool = False           # the container is not running right now
    health: str = ""             # Docker's health status, passed through
    host_ports: Dict[str, int] = field(default_factory=dict)
    ip: str = ""
    started_at: float = 0.0


@dataclass(frozen=True)
class Plan:
    actions: Tuple[Action, ...]
    restarts: Dict[str, RestartRecord]
    verdicts: Dict[str, Verdict]
    wake_at: Optional[float] = None   # when a backoff expires: plan again then


def backoff_delay(base: float, streak: int, cap: float) -> float:
    return min(cap, base * (2 ** min(streak, 30)))


def _best(containers: List[Observed]) -> Observed:
    return max(containers, key=lambda c: (c.status == "running", c.created_at, c.container_id))


def plan(
    node: str,
    desired: Optional[Sequence[TaskSpec]],
    observed: Iterable[Observed],
    now: float,
    restarts: Optional[Mapping[str, RestartRecord]] = None,
    failed: Optional[Mapping[str, str]] = None,
    busy: FrozenSet[str] = frozenset(),
    policy: BackoffPolicy = BackoffPolicy(),
) -> Plan:
    restarts = dict(restarts or {})
    failed = failed or {}
    actions: List[Action] = []
    verdicts: Dict[str, Verdict] = {}
    wake: List[float] = []

    by_task: Dict[str, List[Observed]] = {}
    for c in observed:
        if is_ours(c.labels, node):
            by_task.setdefault(c.task_id, []).append(c)

    if desired is None:
        # Unknown desired state: leave every container as it is.
        want: Dict[str, TaskSpec] = {}
    else:
        want = {t.task_id: t for t in desired}
        for tid, cs in by_task.items():
            if tid in want or tid in busy:
                continue
            for c in cs:
                actions.append(Remove(c.container_id, tid, "not assigned to this node"))

    for tid, task in want.items():
        if tid in busy:
            continue
        cs = by_task.get(tid, [])
        current = [c for c in cs if c.revision == task.revision and c.status not in ("dead", "removing")]
        stale = [c for c in cs if c not in current and c.status != "removing"]
        for c in stale:
            actions.append(Remove(c.container_id, tid, "stale revision or dead"))
        if not current:
            if stale or any(c.status == "removing" for c in cs):
                continue  # replace stop-first: create once the old container is gone
            if tid in failed:
                verdicts[tid] = Verdict(TaskState.FAILED, failed[tid])
            else:
                actions.append(Create(task))
            continue
        keep = _best(current)
        for c in current:
            if c is not keep:
                actions.append(Remove(c.container_id, tid, "duplicate"))
        verdict, action, record, due = _judge(task, keep, restarts.get(tid, RestartRecord()),
                                              failed.get(tid), now, policy)
        verdicts[tid] = verdict
        if action is not None:
            actions.append(action)
        if record is not None:
            restarts[tid] = record
        if due is not None:
            wake.append(due)
    return Plan(tuple(actions), restarts, verdicts, min(wake) if wake else None)


def _judge(task: TaskSpec, c: Observed, rec: RestartRecord, failure: Optional[str], now: float,
           policy: BackoffPolicy):
    """(verdict, action, new restart record, wake time) for one kept container."""
    common = dict(container_id=c.container_id, health=c.health, host_ports=c.host_ports,
                  ip=c.ip, started_at=c.started_at)
    if c.status in ("running", "paused"):
        return Verdict(TaskState.RUNNING, "paused" if c.status == "paused" else "", **common), \
            None, None, None
    if c.status == "restarting":
        return Verdict(TaskState.STARTING, "restarting", down=True, **common), None, None, None
    if failure is not None:
        return Verdict(TaskState.FAILED, failure, down=True, **common), None, None, None
    if c.status == "created":
        return Verdict(TaskState.STARTING, down=True, **common), Start(task, c.container_id), None, None
    # exited: the restart policy decides.
    code = c.exit_code
    why = f"exited with code {code}" + (f": {c.error}" if c.error else "")
    cond = task.restart.condition
    again = cond == "any" or (cond == "on-failure" and code != 0)
    if not again:
        state = TaskState.FAILED if code != 0 else TaskState.STOPPED
        return Verdict(state, why, down=True, **common), None, None, None
    if task.restart.max_attempts is not None and rec.total >= task.restart.max_attempts:
        return Verdict(TaskState.FAILED, f"{why}; gave up after {rec.total} restarts", down=True,
                       **common), None, None, None
    ran = c.finished_at - c.started_at if c.finished_at and c.started_at else 0.0
    streak = 0 if ran >= policy.reset_after else rec.streak
    delay = backoff_delay(task.restart.delay, streak, policy.max_delay)
    due = (c.finished_at or now) + delay
    if now >= due:
        return (Verdict(TaskState.STARTING, f"{why}; restarting", down=True, **common),
                Start(task, c.container_id, restart=True), RestartRecord(rec.total + 1, streak + 1),
                None)
    return (Verdict(TaskState.STARTING, f"{why}; restarting in {due - now:.1f}s", down=True, **common),
            None, None, due)
