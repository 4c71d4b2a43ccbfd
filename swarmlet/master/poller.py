"""The poller: what the master sees of each node, and the node's status from it.

Owns each node's ``NodeLive`` (not persisted) and two loops:

- one poll loop per node: ``GET /v1/tasks`` every ``poll_interval`` (folded
  into the tasks with ``state.merge_observed``), ``/v1/info`` once,
  ``/v1/stats`` every ``stats_interval``; an agent behind the stored version
  is pushed its assignment again;
- a tick: the gossip view (``/v1/members`` of two reachable agents, merged)
  and every node's status judged by the pure
  ``nodestatus.judge``. A change becomes an event, new routes, a push to a
  node that came back, a reconcile and maybe the auto-rebalance window.

Until a node is polled after a master restart it counts as suspect: its tasks
are kept and nothing new lands on it.

Gossip changes only the liveness of known nodes. A member the master does
not know is never registered from what gossip says of it (any gossip key
holder can forge a member): only if the admin host's nodes.json lists it
(joined while the master was down), with nodes.json's address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..shipped.exceptions import SwarmletError
from ..shipped.models import NodeStatus, TaskStatus
from ..client import agent_peer
from .liveness import gossip_views
from .nodestatus import NodeMemory, Observation, judge
from .reconcile import Changes, Event
from .state import merge_observed
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master.poller")


@dataclass
class NodeLive:
    """What the master currently knows about one node (not persisted)."""

    memory: NodeMemory = NodeMemory()
    reachable: bool = False
    failing_since: Optional[float] = None
    last_ok: Optional[float] = None
    stats: Dict[str, Any] = field(default_factory=dict)
    stats_at: float = 0.0
    info: Dict[str, Any] = field(default_factory=dict)
    agent_version: int = -1

    @property
    def status(self) -> NodeStatus:
        return self.memory.status


class Poller:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self._loops: Dict[str, "asyncio.Task[Any]"] = {}
        self._members_rr = 0
        self._seed_checked: Dict[str, float] = {}   # unknown member -> when nodes.json was read

    def start_node(self, name: str) -> None:
        if name not in self._loops or self._loops[name].done():
            self._loops[name] = asyncio.create_task(self._node_loop(name), name=f"poll-{name}")

    def stop_node(self, name: str) -> None:
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.cancel()

    def tasks(self) -> List["asyncio.Task[Any]"]:
        return list(self._loops.values())

    # --- one node -----------------------------------------------------------------

    async def _node_loop(self, name: str) -> None:
        m = self.m
        while name in m.nodes:
            rec, live = m.nodes[name], m.live[name]
            peer = agent_peer(name, rec.address, rec.api_port)
            now = m.clock()
            m.counters["polls"] += 1
            try:
                version, reported, extra = await m.client.tasks(peer)
                m.certs.observed(name, extra)
                if not live.info:
                    live.info = await m.client.info(peer)
                if now - live.stats_at >= m.cfg.stats_interval:
                    live.stats = await m.client.stats(peer)
                    live.stats_at = now
            except SwarmletError as exc:
                m.counters["poll_failures"] += 1
                if live.reachable or live.failing_since is None:
                    log.info("node %s unreachable: %s", name, exc)
                live.reachable = False
                if live.failing_since is None:
                    live.failing_since = now
            else:
                live.reachable, live.failing_since, live.last_ok = True, None, now
                live.agent_version = version
                await self._observe(name, reported)
                m.pusher.poll_ok(name, version)   # behind on its assignment or routes: resend
            self.update_status(name)
            await asyncio.sleep(m.cfg.poll_interval)

    async def _observe(self, name: str, reported: List[TaskStatus]) -> None:
        m = self.m
        async with m.lock:
            changed = merge_observed(name, m.tasks.on(name), reported, m.clock())
            if not changed:
                return
            await m.commit_changes(Changes(update=changed))
        m.pusher.routes_dirty.set()
        m.kick()   # a task started, stopped, failed or changed health: reconcile reacts

    # --- every node -----------------------------------------------------------------

    async def tick_loop(self) -> None:
        m = self.m
        while True:
            try:
                await self._poll_members()
            except Exception:  # never let the liveness loop die
                log.exception("members poll crashed")
            for name in list(m.nodes):
                self.update_status(name)
            await asyncio.sleep(m.cfg.tick_interval)

    async def _poll_members(self) -> None:
        m = self.m
        up = [n for n, live in m.live.items() if live.reachable and n in m.nodes]
        if not up:
            m.gossip = {}
            return
        self._members_rr += 1
        picks = [up[(self._members_rr + i) % len(up)] for i in range(min(2, len(up)))]
        results = await asyncio.gather(
            *(m.client.members(agent_peer(n, m.nodes[n].address, m.nodes[n].api_port))
              for n in picks if n in m.nodes), return_exceptions=True)
        lists = [r for r in results if isinstance(r, list)]
        if lists:
            m.gossip = gossip_views(lists)
            await self._learn_members(lists)

    async def _learn_members(self, lists: List[List[Dict[str, Any]]]) -> None:
        """An alive member the master does not know: registered only if nodes.json lists it."""
        m = self.m
        now = time.monotonic()
        unknown = {str(mem.get("name")) for members in lists for mem in members
                   if mem.get("name") and str(mem.get("name")) not in m.nodes
                   and str(mem.get("state")) == "alive"
                   and now - self._seed_checked.get(str(mem.get("name")), -1e9) >= 10.0}
        if unknown:
            if len(self._seed_checked) > 10_000:   # bounded, whatever a forger sends
                self._seed_checked.clear()
            self._seed_checked.update({n: now for n in unknown})
            await m.commands.register_seeds(only=unknown)

    def update_status(self, name: str) -> None:
        """Judge one node now and act on a change (see ``nodestatus``)."""
        m = self.m
        rec, live = m.nodes.get(name), m.live.get(name)
        if rec is None or live is None:
            return
        t = judge(live.memory, Observation(m.clock(), live.reachable, live.failing_since,
                                           m.gossip.get(name), rec.registered_at, m.started_at),
                  m.cfg.liveness)
        if t is None:
            return
        live.memory = t.memory
        if t.rebalance and m.auto_rebalance:
            m.rebalance_until = m.clock() + m.cfg.rebalance_window
        log.info("node %s: %s", name, t.message)
        m.spawn(m.write(Batch.of(events=[Event("node", name, t.message)])))
        m.obs.touch()   # the live views (top, dashboard) show it now
        if t.new == NodeStatus.READY:
            m.pusher.push(name)
            m.pusher.push_routes(name)
        m.pusher.routes_dirty.set()
        m.kick()
