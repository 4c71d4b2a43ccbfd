"""Events the master derives from changes it observes. Pure.

The reconciler already records what it decides (a node lost, a slot pending,
rebalancing) and the daemon records node status changes and service
revisions. This module adds what is only visible by comparing before and
after:

- ``task_events(before, changed)``: a task placed on a node, started, failed
  (with the agent's reason), restarted in place, turned unhealthy;
- ``lb_evictions(previous, snapshot)``: a backend that left the load
  balancer's eligible set because an active health check failed or a
  passive check ejected it (and came back).

Kinds used here: ``task`` and ``lb``; the store keeps the log bounded. A
slot that keeps failing (``backoff.py``) and a container the agent keeps
restarting make keyed events: the store keeps the newest of each key, so they
stay one event each, with the count in its message.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Tuple

from ..shipped.models import Health, TaskState
from . import backoff as bo
from .reconcile import Event
from .state import Task


def task_events(before: Mapping[str, Task], changed: Iterable[Task]) -> List[Event]:
    """What happened to each changed (or created) task, compared with ``before``."""
    out: List[Event] = []
    for t in changed:
        old = before.get(t.task_id)
        where = f"{t.service} slot {t.slot}"
        if t.node and (old is None or old.node != t.node):
            if t.failures:      # a retry of a failing slot: one event for all of them
                out.append(Event("task", t.task_id, f"{where}: attempt {t.failures + 1} placed "
                                 f"on {t.node}", bo.event_key("placed", t.service, t.slot)))
            else:
                out.append(Event("task", t.task_id, f"{where}: placed on {t.node}"))
        if old is None:
            continue
        if t.state == TaskState.RUNNING and old.state < TaskState.RUNNING:
            out.append(Event("task", t.task_id, f"{where}: started on {t.node}"))
        if t.state == TaskState.FAILED and old.state != TaskState.FAILED:
            why = t.reason or "no reason given"
            out.append(Event("task", t.task_id,
                             f"{where}: failed on {t.node}: {why}{bo.times(t.failures + 1)}",
                             bo.event_key("failed", t.service, t.slot, why)))
        if t.restarts > old.restarts:
            why = f": {t.reason}" if t.reason else ""
            out.append(Event("task", t.task_id, f"{where}: restarted on {t.node} "
                                                f"({t.restarts} restarts){why}",
                             bo.event_key("restarted", t.task_id, 0)))
        elif (t.health == Health.UNHEALTHY and old.health != Health.UNHEALTHY
              and t.state == TaskState.RUNNING):
            why = f": {t.reason}" if t.reason else ""
            out.append(Event("task", t.task_id, f"{where}: unhealthy on {t.node}{why}"))
    return out


# (listener port, backend address) -> (eligible?, ejections so far)
LBState = Dict[Tuple[str, str], Tuple[bool, int]]


def lb_state(snapshot: Mapping[str, Any]) -> LBState:
    """The part of ``Ingress.snapshot()`` that eviction events are made of."""
    out: LBState = {}
    for port, lb in snapshot.items():
        for b in lb.get("backends", ()):
            if b.get("draining"):
                continue   # leaving on purpose: not an eviction
            ok = bool(b.get("healthy")) and not b.get("ejected")
            out[(str(port), str(b.get("address")))] = (ok, int(b.get("ejections", 0)))
    return out


def lb_evictions(previous: LBState, snapshot: Mapping[str, Any]) -> Tuple[LBState, List[Event]]:
    """Events for backends evicted from (or readmitted to) the load balancer since ``previous``."""
    now = lb_state(snapshot)
    out: List[Event] = []
    for port, lb in snapshot.items():
        service = str(lb.get("service", port))
        for b in lb.get("backends", ()):
            key = (str(port), str(b.get("address")))
            if key not in now:
                continue
            ok, ejections = now[key]
            was_ok, was_ejections = previous.get(key, (True, ejections))
            name = str(b.get("name") or b.get("address"))
            if ejections > was_ejections or (was_ok and not ok):
                why = (f"ejected ({b.get('eject_kind') or 'errors'})" if b.get("ejected")
                       else "failed its health check")
                err = f": {b['last_error']}" if b.get("last_error") else ""
                out.append(Event("lb", name, f"{service} port {port}: evicted {b.get('address')}, "
                                             f"{why}{err}"))
            elif ok and not was_ok:
                out.append(Event("lb", name, f"{service} port {port}: {b.get('address')} back in"))
    return now, out
