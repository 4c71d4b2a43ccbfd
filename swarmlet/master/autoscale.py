"""Autoscaling by CPU: a pure decision like the Kubernetes HPA, and the loop that feeds it.

``decide(spec, current, cpu, state, now, policy)`` is pure (time is an input):

- the raw recommendation is ``ceil(current * cpu / target)``, or ``current``
  when the ratio is within ``tolerance`` (10 %, as the HPA) or there is no data;
- every recommendation is remembered with its time. Scaling up takes the
  *lowest* recommendation of the last ``up_window`` seconds (the load must
  hold for the whole window), scaling down the *highest* of the last
  ``down_window`` seconds (the HPA's stabilization window, default 300 s
  there; shorter here because a few hundred servers are not a cloud), and
  neither acts before the history covers its window;
- a cooldown follows every change (``up_cooldown`` before another change,
  ``down_cooldown`` before a scale-down), so the count never flaps;
- a service may set its own ``down_window`` (``swarmlet autoscale --down-window``,
  ``x-swarmlet.autoscale.down_window``): it replaces the master's window and bounds
  the scale-down cooldown, as the HPA's per-autoscaler stabilization window;
- one step at most doubles the replicas (the HPA's 100 % rule);
- the result is always within ``[min, max]``; a count outside (bounds just
  changed) is brought inside at once.

``Autoscaler`` (the shell) runs in the master: every ``interval`` it averages
the per-task CPU the master polls from agents' ``GET /v1/stats`` (percent of
one CPU, or of the task's CPU reservation/limit when it has one) over the
running replicas with fresh figures, decides, and stores a change as a new
revision with an event of kind ``scale`` saying why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..shipped.models import AutoscaleSpec, ServiceSpec, TaskState
from .views import tasks_of

log = logging.getLogger("swarmlet.master")


@dataclass(frozen=True)
class AutoscalePolicy:
    interval: float = 2.0        # seconds between decisions
    tolerance: float = 0.1
    up_window: float = 10.0
    down_window: float = 60.0
    up_cooldown: float = 15.0
    down_cooldown: float = 60.0
    max_up_factor: float = 2.0
    stale_after: float = 20.0    # stats older than this are not used


@dataclass(frozen=True)
class ScaleState:
    recs: Tuple[Tuple[float, int], ...] = ()   # (time, recommended replicas), oldest first
    last_change: float = -math.inf
    since: Optional[float] = None              # first decision: how much history there is


@dataclass(frozen=True)
class Decision:
    replicas: int
    state: ScaleState
    reason: str = ""

    def changed(self, current: int) -> bool:
        return self.replicas != current


def recommend(current: int, cpu: Optional[float], target: float, tolerance: float) -> int:
    """The replicas that would bring the average CPU to ``target`` (HPA's formula)."""
    if cpu is None or current <= 0 or target <= 0:
        return current
    ratio = cpu / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return max(1, math.ceil(current * ratio - 1e-9))


def decide(spec: AutoscaleSpec, current: int, cpu: Optional[float], state: ScaleState, now: float,
           policy: AutoscalePolicy = AutoscalePolicy()) -> Decision:
    lo, hi = max(0, spec.min), max(spec.min, spec.max)
    raw = recommend(current, cpu, spec.cpu, policy.tolerance)
    # A service's own window is its only scale-down delay, as the HPA's stabilization window
    # is (the cooldown is bounded by it): the window already keeps the count from flapping.
    own = spec.down_window > 0
    down_window = spec.down_window if own else policy.down_window
    down_cooldown = min(policy.down_cooldown, spec.down_window) if own else policy.down_cooldown
    keep = max(policy.up_window, down_window)
    recs = tuple((t, r) for t, r in state.recs if now - t <= keep) + ((now, raw),)
    since = now if state.since is None else state.since
    st = ScaleState(recs, state.last_change, since)
    if current < lo or current > hi:
        new = min(hi, max(lo, current))
        return Decision(new, ScaleState(recs, now, since), f"bounds are {lo}..{hi}")

    def window(w: float) -> Optional[Tuple[int, ...]]:
        if now - since < w:
            return None   # not enough history to call it sustained
        return tuple(r for t, r in recs if t >= now - w)

    quiet = now - state.last_change
    what = f"cpu {cpu:.0f}% for a target of {spec.cpu:g}%" if cpu is not None else "no cpu figures"
    up = window(policy.up_window)
    if up and min(up) > current and quiet >= policy.up_cooldown:
        step = max(current + 1, math.floor(current * policy.max_up_factor)) if current else 1
        new = min(hi, min(up), step)
        if new > current:
            return Decision(new, ScaleState(recs, now, since), what)
    down = window(down_window)
    if down and max(down) < current and quiet >= down_cooldown:
        new = max(lo, max(down))
        if new < current:
            return Decision(new, ScaleState(recs, now, since), what)
    return Decision(current, st)


def cpu_basis(spec: ServiceSpec) -> float:
    """What 100 % means for one replica: its CPU reservation or limit, else one CPU."""
    cpus = spec.reservations.cpus or spec.limits.cpus
    return float(cpus) if cpus else 1.0


class Autoscaler:
    """Feeds ``decide`` from the master's state; applies changes through ``put_service``."""

    def __init__(self, master: Any, policy: Optional[AutoscalePolicy] = None) -> None:
        self.master = master
        self.policy = policy or getattr(master.cfg, "autoscale", None) or AutoscalePolicy()
        self.states: Dict[str, ScaleState] = {}
        self.last_cpu: Dict[str, float] = {}

    def service_cpu(self, name: str, spec: ServiceSpec, now: float) -> Optional[float]:
        """Average CPU (percent of the basis) of the running replicas with fresh stats."""
        m = self.master
        vals = []
        for t in tasks_of(m, name):
            if t.desired != "running" or t.state != TaskState.RUNNING:
                continue
            live = m.live.get(t.node or "")
            if live is None or now - live.stats_at > self.policy.stale_after:
                continue
            s = (live.stats.get("tasks") or {}).get(t.task_id) if isinstance(live.stats, dict) else None
            if isinstance(s, dict) and isinstance(s.get("cpu_percent"), (int, float)):
                vals.append(float(s["cpu_percent"]) / cpu_basis(spec))
        return sum(vals) / len(vals) if vals else None

    async def step(self) -> None:
        m = self.master
        now = m.clock()
        for name in list(m.services):
            svc = m.services.get(name)
            spec = svc.spec if svc is not None else None
            if spec is None or spec.autoscale is None or spec.mode == "global":
                self.states.pop(name, None)
                self.last_cpu.pop(name, None)
                continue
            cpu = self.service_cpu(name, spec, now)
            if cpu is not None:
                self.last_cpu[name] = round(cpu, 2)
            d = decide(spec.autoscale, spec.replicas, cpu, self.states.get(name, ScaleState()), now,
                       self.policy)
            self.states[name] = d.state
            if d.changed(spec.replicas):
                why = f"autoscale {spec.replicas} -> {d.replicas}: {d.reason}"
                log.info("service %s: %s", name, why)
                await m.put_service(dataclasses.replace(spec, replicas=d.replicas), scale_reason=why)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval)
            try:
                await self.step()
            except Exception:  # a bug or a store error: log, keep the loop alive
                log.exception("autoscale step failed")
