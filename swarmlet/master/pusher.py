"""The pusher: what each agent should run (its assignment) and the routing table, sent down.

Owns, per node, what was last prepared for it (task set and routes) and the
one push in flight. After each reconcile pass ``sync`` bumps the version of
every node whose desired task set or routes changed, stores the new versions,
and pushes the full assignment (idempotent: a lost push is harmless; the
poller re-pushes when an agent reports an older version). A 409 from an agent
that holds a newer version (a store restored from a backup) leapfrogs it.

``routes()`` is the table both the master's own load balancers (``ingress_loop``)
and every agent's ingress serve: healthy replicas behind each published port.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ..shipped.discovery import assign_vips
from ..shipped.exceptions import StaleAssignment, SwarmletError
from ..shipped.models import Assignment, TaskSpec, TaskState
from ..shipped.routes import ReplicaView, Route, build_routes
from .agents import base_url
from .nodestatus import LOST
from .state import RUNNING, SHUTDOWN, NodeRecord, assignment_tasks, replace
from .store import Batch

if TYPE_CHECKING:   # the daemon wires us; only for type names
    from .daemon import Master

log = logging.getLogger("swarmlet.master.pusher")

Routing = Tuple[Tuple[Route, ...], Tuple[str, ...]]     # routes, draining task ids


@dataclass
class _Prepared:
    """The last assignment content made for one node, and its push in flight."""

    content: Optional[Tuple[TaskSpec, ...]] = None
    routing: Routing = ((), ())
    pushing: bool = False
    repush: bool = False


class Pusher:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self._nodes: Dict[str, _Prepared] = {}
        self._vips: Dict[str, str] = {}     # service -> virtual IP (stable while running)
        self.routes_dirty = asyncio.Event()

    def forget(self, name: str) -> None:
        self._nodes.pop(name, None)

    # --- routes ---------------------------------------------------------------

    def _up(self, node: Optional[str]) -> bool:
        live = self.m.live.get(node or "")
        return live is not None and live.status not in LOST

    def routes(self) -> Tuple[Route, ...]:
        """The routing table: healthy replicas behind every published port."""
        m = self.m
        addr = {n: rec.address for n, rec in m.nodes.items() if self._up(n)}
        reps = [ReplicaView(t.task_id, t.service, t.node, t.state, t.health, t.host_ports,
                            t.desired == RUNNING) for t in m.tasks.values()]
        order = [svc.name for svc in sorted(m.services.values(), key=lambda v: (v.created_at, v.name))]
        self._vips = assign_vips(order, self._vips)
        return build_routes([svc.spec for svc in m.services.values()], reps, addr, self._vips)

    def graceful(self) -> Set[str]:
        """Tasks leaving the routes on purpose while still running: let them drain."""
        return {t.task_id for t in self.m.tasks.values()
                if t.desired == SHUTDOWN and t.state == TaskState.RUNNING and self._up(t.node)}

    async def ingress_loop(self) -> None:
        """Apply the latest routes to the master's load balancers, one change at a time."""
        while True:
            await self.routes_dirty.wait()
            self.routes_dirty.clear()
            try:
                await self.m.ingress.apply(self.routes(), self.graceful())
            except Exception:  # never let the front door's loop die
                log.exception("ingress update failed")
                await asyncio.sleep(1.0)

    # --- assignments ------------------------------------------------------------

    async def sync(self) -> None:
        """Bump and push every node whose desired task set or routes changed (lock held)."""
        m = self.m
        bumped: List[NodeRecord] = []
        routing = (self.routes(), tuple(sorted(self.graceful())))
        for name, rec in m.nodes.items():
            prep = self._nodes.setdefault(name, _Prepared())
            content = assignment_tasks(name, m.tasks.on(name), m.specs)
            if content != prep.content or routing != prep.routing:
                prep.content, prep.routing = content, routing
                bumped.append(replace(rec, assignment_version=rec.assignment_version + 1))
        if not bumped:
            return
        await m.write(Batch.of(nodes=bumped))
        for rec in bumped:
            m.nodes[rec.name] = rec
            if self._up(rec.name):
                self.push(rec.name)

    def push(self, name: str) -> None:
        """Send ``name`` its current assignment (once one was prepared); coalesces."""
        prep = self._nodes.get(name)
        if prep is None or prep.content is None:
            return
        if prep.pushing:
            prep.repush = True
            return
        prep.pushing = True
        self.m.spawn(self._push_task(name))

    async def _push_task(self, name: str) -> None:
        m = self.m
        try:
            for _ in range(3):
                rec, prep, live = m.nodes.get(name), self._nodes.get(name), m.live.get(name)
                if (rec is None or prep is None or live is None or prep.content is None
                        or not m.leading()):    # an HA leader whose lease may have lapsed: silent
                    return
                prep.repush = False
                a = Assignment(name, rec.assignment_version, prep.content, *prep.routing,
                               term=m.term)
                try:
                    await m.client.put_assignment(base_url(rec.address, rec.api_port), a)
                    m.counters["pushes"] += 1
                    live.agent_version = max(live.agent_version, a.version)
                except StaleAssignment as exc:
                    if exc.term > m.term:
                        # A newer leader talks to this node: we are deposed; never leapfrog it.
                        log.warning("push to %s refused: %s", name, exc)
                        return
                    # The agent holds a newer version (e.g. a store restored from backup): leapfrog.
                    async with m.lock:
                        rec = replace(m.nodes[name], assignment_version=exc.current + 1)
                        await m.write(Batch.of(nodes=[rec]))
                        m.nodes[name] = rec
                    prep.repush = True
                except SwarmletError as exc:
                    m.counters["push_failures"] += 1
                    log.debug("push to %s failed: %s", name, exc)
                    return   # the poll loop re-pushes once the agent answers again
                if not prep.repush:
                    return
        finally:
            prep = self._nodes.get(name)
            if prep is not None:
                prep.pushing = False


