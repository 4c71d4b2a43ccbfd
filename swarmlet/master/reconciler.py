"""The reconciler loop: turns the pure ``reconcile`` and ``rollout`` decisions into stored changes.

Runs a pass on every kick (an API change, a node status change, a task that
started, failed or changed health) and every ``reconcile_interval`` unless the
last pass left the state settled (``_timed_pass_needed``):
``reconcile.reconcile`` (scheduler, replacements, rebalancing) gives the task
changes, they are stored, the routes are marked dirty before the pusher sends
new assignments (load balancers stop routing to stopping tasks first), then
every rollout in progress is judged and a failed one rolled back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from typing import TYPE_CHECKING, FrozenSet, Optional, Union

from ..shipped.exceptions import SwarmletError
from . import rollout as ro
from . import views
from .reconcile import Changes, Event, reconcile
from .state import RUNNING, kept_revisions
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master")
MAX_SKIPS = 11      # timed passes skipped in a row over settled state at most (about a minute)


class Reconciler:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self.wake_at: Optional[float] = None
        # The tasks version after a pass that changed nothing and left nothing for the clock
        # to do (None: the next timed pass runs). See ``_timed_pass_needed``.
        self._settled: Optional[int] = None
        self._skipped = 0

    def recover_rollouts(self) -> None:
        """After a restart: a service with tasks older than its template is mid-update."""
        m = self.m
        now = m.clock()
        for name, svc in m.services.items():
            mine = [t.revision for t in views.tasks_of(m, name) if t.desired == RUNNING]
            kept = kept_revisions(svc, mine, m.specs)     # a rollback's kept tasks are current
            old = [rev for rev in mine if rev < svc.current_from and rev not in kept]
            if old:
                m.rollouts[name] = ro.Rollout(name, svc.revision, max(old), now)

    def _new_id(self, service: str, slot: int) -> str:
        return f"{service}.{slot}.{secrets.token_hex(3)}"

    async def loop(self) -> None:
        m = self.m
        while True:
            wait = m.cfg.reconcile_interval
            if self.wake_at is not None:     # a replacement's backoff ends sooner
                wait = min(wait, max(0.05, self.wake_at - m.clock()))
            kicked = True
            try:
                await asyncio.wait_for(m.kick_event.wait(), wait)
            except asyncio.TimeoutError:
                kicked = False
            m.kick_event.clear()
            try:
                if kicked or self._timed_pass_needed():
                    await self.reconcile_once()
                await self.check_rollouts()
            except SwarmletError as exc:
                log.error("reconcile failed: %s", exc)
            except Exception:  # a bug: log it, keep the control loop alive
                log.exception("reconcile crashed")
                await asyncio.sleep(1.0)

    async def reconcile_once(self, rebalance: bool = False) -> int:
        """One pass; returns the number of rebalance moves started."""
        m = self.m
        async with m.lock:
            now, t0 = m.clock(), time.perf_counter()
            for name in [n for n, until in m.rebalance_services.items() if now >= until]:
                del m.rebalance_services[name]
            which: Union[bool, FrozenSet[str]] = (
                True if rebalance or now < m.rebalance_until else frozenset(m.rebalance_services))
            ch = reconcile(m.services, list(m.tasks.values()), views.node_infos(m), now,
                           self._new_id, rebalance=which, gc_after=m.cfg.gc_after,
                           specs=m.specs, backoff=m.cfg.backoff)
            self.wake_at = ch.wake_at
            m.counters["reconcile_passes"] += 1
            self._settled = self._settled_after(ch)
            if not ch.empty or ch.events:
                await m.commit_changes(ch, now=now)
            m.pusher.routes_dirty.set()   # before the push: the LB stops routing to stopped tasks first
            await m.pusher.sync()
            m.edge.changed()              # certificates in use may have changed with the services
            m.acme.kick()
            m.obs.reconciled(time.perf_counter() - t0)
            return sum(1 for e in ch.events if "rebalancing" in e.message)

    def _settled_after(self, ch: Changes) -> Optional[int]:
        """The tasks version if this pass leaves nothing that time alone could change: no
        change, no event, no backoff to wait out, no pending task (a node's use may free room
        for it), no stopped task for ``gc_after`` to forget, no rollout or rebalance window."""
        m = self.m
        if not ch.empty or ch.events or ch.wake_at is not None:
            return None
        if any(t.node is None or t.desired != RUNNING for t in m.tasks.values()):
            return None
        return m.tasks.version

    def _timed_pass_needed(self) -> bool:
        """A timed pass (no kick) over settled state would find nothing to do: every input
        that changes without the clock kicks the loop (an API write, a node's status, a task
        report), and the rest is ruled out by ``_settled_after``. At 1,000 nodes and 10,000
        tasks a pass costs tens of milliseconds every 5 s; one still runs every
        ``MAX_SKIPS`` intervals, as a safety net."""
        m = self.m
        now = m.clock()
        busy = (self._settled != m.tasks.version or self.wake_at is not None
                or any(r.status in ro.ACTIVE for r in m.rollouts.values())
                or m.rebalance_services or now < m.rebalance_until)
        if busy or self._skipped >= MAX_SKIPS:
            self._skipped = 0
            return True
        self._skipped += 1
        return False

    async def check_rollouts(self) -> None:
        """Judge every rollout in progress; roll back a failed one (see ``rollout``)."""
        m = self.m
        now = m.clock()
        for name, r in list(m.rollouts.items()):
            svc = m.services.get(name)
            if svc is None or svc.current_from != r.revision:     # a scale keeps the template
                if svc is None:
                    del m.rollouts[name]
                continue
            new = ro.assess(r, svc, views.tasks_of(m, name), now, m.specs)
            m.rollouts[name] = new
            if new.status == r.status:
                continue
            msg = {ro.COMPLETED: f"update to revision {r.revision} completed",
                   ro.ROLLED_BACK: f"rolled back: revision {r.revision} serves on every replica",
                   ro.PAUSED: f"update to revision {r.revision} paused: {new.reason}",
                   ro.FAILED: f"update to revision {r.revision} failed: {new.reason}; "
                              f"rolling back to revision {r.previous}"}.get(new.status, new.status)
            log.info("service %s: %s", name, msg)
            await m.write(Batch.of(events=[Event("service", name, msg)],
                                   now=now))
            if new.status == ro.FAILED:
                spec = m.specs.get((name, r.previous))
                if spec is not None:
                    await m.put_service(spec, rollback_of=r.revision, rollback_to=r.previous)
                    if name in m.rollouts:   # the rollback carries why it happened
                        m.rollouts[name] = dataclasses.replace(
                            m.rollouts[name],
                            reason=f"update to revision {r.revision} failed: {new.reason}")
