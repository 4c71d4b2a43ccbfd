"""Rolling updates: watch one update and decide when it is done or has failed. Pure.

The reconciler already performs the update (start-first by default: a slot's
successor must serve before its predecessor is stopped, ``parallelism`` slots
at a time), so a failing new revision never takes capacity away. This module
judges it, as Swarm's ``update_config`` does:

- a task of the new revision *fails* if it failed, turned unhealthy, crashed
  (restarted), or is still not serving ``startup_timeout`` after it was made;
- the update *fails* once the failed share of the replicas exceeds
  ``max_failure_ratio`` (0 by default: one failure is enough);
- it *completes* when every slot is served by the new revision, no older task
  runs, and the last of them has served for ``monitor`` seconds, with no
  failure meanwhile.

The daemon then applies ``failure_action``: ``rollback`` (the default) stores
the previous spec as a new revision, which the reconciler rolls out the same
health-gated way: the old tasks still run that spec, so they count as new here
and are kept (a crash or a slow start before the rollout began is not held
against them), and only the slots it had updated get new tasks; ``pause`` leaves the update stuck where it is, which with
start-first means the old replicas keep serving; ``continue`` ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Mapping, Optional, Tuple

from ..shipped.models import Health, ServiceSpec, TaskState
from .state import RUNNING, Service, Task, kept_revisions

UPDATING, COMPLETED, FAILED, PAUSED = "updating", "completed", "failed", "paused"
ROLLING_BACK, ROLLED_BACK = "rolling_back", "rolled_back"
ACTIVE = (UPDATING, ROLLING_BACK)


@dataclass(frozen=True)
class Rollout:
    service: str
    revision: int            # the revision being rolled out
    previous: int            # the revision it replaces (the rollback target)
    started_at: float
    status: str = UPDATING
    rollback_of: Optional[int] = None   # set when this rollout is itself a rollback
    reason: str = ""
    serving_since: Dict[str, float] = field(default_factory=dict)   # new task id -> first seen serving
    updated: int = 0
    total: int = 0

    def view(self) -> Dict[str, object]:
        return {"status": self.status, "revision": self.revision, "previous": self.previous,
                "rollback_of": self.rollback_of, "reason": self.reason,
                "started_at": self.started_at, "updated": self.updated, "total": self.total}


def startup_timeout(svc: Service) -> float:
    """How long a new task may take to serve before it counts as failed."""
    h = svc.spec.health
    grace = h.start_period + (h.interval + h.timeout) * (max(1, h.retries) + 1) if h.kind != "none" else 0.0
    return 30.0 + grace


def _failure(t: Task, now: float, timeout: float, since: float) -> Optional[str]:
    if t.state == TaskState.FAILED:
        return f"task {t.task_id} failed: {t.reason or 'no reason given'}"
    if t.health == Health.UNHEALTHY:
        return f"task {t.task_id} is unhealthy" + (f": {t.reason}" if t.reason else "")
    if t.created_at < since:
        return None    # a kept task: its past restarts and start-up are not this rollout's
    if t.restarts > 0:
        return f"task {t.task_id} crashed and was restarted {t.restarts} time(s)"
    if not t.serving and now - t.created_at > timeout:
        return f"task {t.task_id} did not become healthy within {timeout:.0f}s"
    return None


def assess(r: Rollout, svc: Service, tasks: Iterable[Task], now: float,
           specs: Optional[Mapping[Tuple[str, int], ServiceSpec]] = None) -> Rollout:
    """The rollout after looking at the service's tasks at ``now`` (``specs``: every stored
    revision's spec, so older tasks that run the current spec count as updated)."""
    # A scale during the update makes a newer revision with the same template: the rollout
    # of that template goes on (judged against the new replica count).
    if r.status not in ACTIVE or svc.current_from != r.revision:
        return r
    spec = svc.spec
    cfg = spec.rollback if r.rollback_of is not None else spec.update
    mine = [t for t in tasks if t.service == spec.name]
    kept = kept_revisions(svc, (t.revision for t in mine), specs)

    def current(t: Task) -> bool:
        return t.revision >= svc.current_from or t.revision in kept

    # A kept task counts while it is wanted; one stopped before this rollout is history.
    new = [t for t in mine if t.node is not None and (t.revision >= svc.current_from
                                                      or (t.revision in kept and t.desired == RUNNING))]
    old_live = [t for t in mine if not current(t) and t.desired == RUNNING]
    since = dict(r.serving_since)
    for t in new:
        if t.desired == RUNNING and t.serving:
            since.setdefault(t.task_id, now)
    timeout = startup_timeout(svc)
    failures = [f for f in (_failure(t, now, timeout, r.started_at) for t in new) if f]
    total = spec.replicas
    serving_new = [t for t in new if t.desired == RUNNING and t.serving]
    r = replace(r, serving_since=since, updated=len(serving_new), total=total)
    if failures and cfg.failure_action != "continue" and \
            len(failures) / max(1, total) > cfg.max_failure_ratio:
        status = FAILED if cfg.failure_action == "rollback" and r.rollback_of is None else PAUSED
        return replace(r, status=status, reason=failures[0])
    settled = len(serving_new) >= total and not old_live
    if settled and (not serving_new or now - max(since[t.task_id] for t in serving_new) >= cfg.monitor):
        if r.rollback_of is not None:
            return replace(r, status=ROLLED_BACK)       # keeps why it rolled back
        return replace(r, status=COMPLETED, reason="")
    return r
