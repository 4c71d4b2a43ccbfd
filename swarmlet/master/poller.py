"""The poller: what the master sees of each node, and the node's status from it.

Owns each node's ``NodeLive`` (not persisted) and these loops:

- one watch per node: a long poll on ``GET /v1/tasks?since=SEQ&wait=S``
  (``agent/watch.py``), so the agent answers when its report changes or after
  ``long_poll`` seconds (stretched so that idle answers from all nodes together
  stay within ``long_poll_rate`` a second: at 1,000 nodes each waits 50 s; an
  answer and a new request were two fifths of the idle master's CPU there):
  an idle node costs one answer per wait instead of two polls a second (each
  wait jittered by up to a tenth, and its answer awaited up to
  ``client.LONG_POLL_SLACK`` past it: a late answer on a busy machine is no
  dead node). An
  agent without long polls (an older version) is polled every
  ``poll_interval`` as before. ``/v1/info`` once; an agent behind the stored
  version is pushed its assignment again. A node that stops answering is
  retried at ``poll_interval``, backing off to ``retry_max`` once it has
  failed for ``down_after`` (it is down by then; gossip saying alive again
  wakes its watch at once), or for ``restart_grace`` while its host refuses
  the connection (an agent restarting: ``liveness``);
- group commit: reports are folded in (``merge_observed``) and stored in one
  commit every ``observe_batch`` seconds, whatever the number of nodes;
- stats: ``GET /v1/stats`` of every node every ``stats_interval``, but never
  more than ``stats_rate`` requests a second in all (1,000 nodes: each every
  25 s); nodes running a replica of an autoscaled service keep
  ``stats_interval`` (the autoscaler needs fresh per-task figures);
- a tick: the gossip view (``/v1/members?brief=1`` of two reachable agents, merged)
  and every node's status judged by the pure
  ``nodestatus.judge``. A node the master holds a watch on but that gossip
  calls suspect or dead is probed at once (``/v1/info``): a long poll would
  not notice a silent death before its wait runs out. The client's sockets
  also use TCP keepalives (``swarmlet.client``), which cut a watch to a dead host
  within a few seconds. A change becomes an event, new routes, a push to a
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
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

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
LONG_POLL_MAX = 50.0    # seconds a watch may wait at most (agents refuse more than 60: agent/watch.py)


def stats_due(last: Dict[str, "tuple[float, float]"], now: float, budget: int) -> List[str]:
    """The nodes whose stats to ask now: at most ``budget`` of those whose period has run
    out, the longest overdue first. ``last`` maps a node to (when its stats were last
    asked or answered, its period). Ordering by how long ago a node was asked starved the
    autoscaled nodes (a 2 s period) behind a backlog of others (25 s at 1,000 nodes): their
    CPU reached the autoscaler 25 s late."""
    due = [(at + period, name) for name, (at, period) in last.items() if now - at >= period]
    due.sort()
    return [name for _, name in due[:budget]]


@dataclass
class NodeLive:
    """What the master currently knows about one node (not persisted)."""

    memory: NodeMemory = NodeMemory()
    reachable: bool = False
    failing_since: Optional[float] = None
    last_ok: Optional[float] = None
    stats: Dict[str, Any] = field(default_factory=dict)
    stats_at: float = 0.0            # when the stats were answered
    stats_asked: float = 0.0         # when they were last asked for
    info: Dict[str, Any] = field(default_factory=dict)
    agent_version: int = -1
    seq: Optional[int] = None        # the agent's report seq last seen (None: no long poll)
    failures: int = 0                # polls failed in a row
    refused: bool = False            # the last failure was a refused connection (host up)
    wake: asyncio.Event = field(default_factory=asyncio.Event)   # retry a failing node now
    probing: bool = False

    @property
    def status(self) -> NodeStatus:
        return self.memory.status


class Poller:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self._loops: Dict[str, "asyncio.Task[Any]"] = {}
        self._members_rr = 0
        self._seed_checked: Dict[str, float] = {}   # unknown member -> when nodes.json was read
        self._stats_loop: Optional["asyncio.Task[Any]"] = None
        self._reports: Dict[str, List[TaskStatus]] = {}   # node -> report not yet folded in
        self._flush_wake = asyncio.Event()
        self._flusher: Optional["asyncio.Task[Any]"] = None
        self._autoscaled: Set[str] = set()     # nodes with a replica of an autoscaled service
        self._autoscaled_at = -math.inf

    def start_node(self, name: str) -> None:
        if name not in self._loops or self._loops[name].done():
            self._loops[name] = asyncio.create_task(self._node_loop(name), name=f"poll-{name}")
        if self._stats_loop is None or self._stats_loop.done():
            self._stats_loop = asyncio.create_task(self.stats_loop(), name="master-stats")

    def stop_node(self, name: str) -> None:
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.cancel()

    def tasks(self) -> List["asyncio.Task[Any]"]:
        return list(self._loops.values()) + [t for t in (self._stats_loop, self._flusher) if t]

    # --- one node -----------------------------------------------------------------

    async def _node_loop(self, name: str) -> None:
        m = self.m
        while name in m.nodes:
            rec, live = m.nodes[name], m.live[name]
            peer = agent_peer(name, rec.address, rec.api_port)
            m.counters["polls"] += 1
            watching = live.seq is not None and live.reachable
            try:
                version, reported, extra = await m.client.tasks(
                    peer, since=live.seq if watching else None,
                    # jittered: watches answered together (a deploy touches every node) would
                    # otherwise all expire together, every wait, a thousand at once
                    wait=round(self.long_poll_wait() * random.uniform(0.9, 1.0), 2))
                m.certs.observed(name, extra)
                if not live.info:
                    live.info = await m.client.info(peer)
            except SwarmletError as exc:
                now = m.clock()
                m.counters["poll_failures"] += 1
                if live.reachable or live.failing_since is None:
                    log.info("node %s unreachable: %s", name, exc)
                live.reachable, live.seq = False, None
                live.refused = bool(getattr(exc, "refused", False))
                live.failures += 1
                if live.failing_since is None:
                    live.failing_since = now
                self.update_status(name)
                await self._retry_wait(live, now)
                continue
            seq = extra.get("seq")
            now = m.clock()
            live.reachable, live.failing_since, live.last_ok = True, None, now
            live.failures, live.refused = 0, False
            live.agent_version = version
            live.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            await self._observe(name, reported)
            # behind on its assignment, routes or secret values: resend
            m.pusher.poll_ok(name, version, bool(extra.get("secrets_missing")), extra.get("routes"))
            m.edge.observed(name, extra.get("edge"))
            self.update_status(name)
            if live.seq is None:   # an agent without long polls: poll it on a timer
                await asyncio.sleep(m.cfg.poll_interval)

    async def _retry_wait(self, live: NodeLive, now: float) -> None:
        """``poll_interval`` while a failure is fresh; then backing off to ``retry_max``."""
        m = self.m
        failing = now - (live.failing_since if live.failing_since is not None else now)
        delay = m.cfg.poll_interval
        # an agent restarting (refused) is retried at poll_interval until its grace is out
        if failing >= (m.cfg.liveness.restart_grace if live.refused else m.cfg.liveness.down_after):
            delay = min(m.cfg.retry_max, m.cfg.poll_interval * 2 ** min(live.failures, 8))
        live.wake.clear()
        try:
            await asyncio.wait_for(live.wake.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _probe(self, name: str) -> None:
        """Gossip suspects a node we hold a watch on: is it there?"""
        m = self.m
        rec, live = m.nodes.get(name), m.live.get(name)
        if rec is None or live is None:
            return
        try:
            await m.client.info(agent_peer(name, rec.address, rec.api_port))
        except SwarmletError as exc:
            if live.reachable:
                log.info("node %s unreachable (probed on gossip %s): %s", name, m.gossip.get(name), exc)
                live.reachable, live.seq = False, None
                live.refused = bool(getattr(exc, "refused", False))
                live.failing_since = m.clock()
                self.update_status(name)
        finally:
            live.probing = False

    # --- stats ----------------------------------------------------------------------

    def long_poll_wait(self) -> float:
        """Seconds a watch may wait: ``long_poll``, or longer where the nodes are many (see
        the module docstring), below the agents' limit (``agent/watch.py``: 60 s)."""
        m = self.m
        stretched = len(m.nodes) / max(m.cfg.long_poll_rate, 1e-3)
        return max(m.cfg.long_poll, min(LONG_POLL_MAX, stretched))

    def stats_period(self, name: str, nodes: int) -> float:
        """Seconds between two stats of ``name``: ``stats_interval``, stretched so that all
        ``nodes`` together stay within ``stats_rate`` requests a second."""
        m = self.m
        if name in self._autoscaled:
            return m.cfg.stats_interval
        return max(m.cfg.stats_interval, nodes / max(m.cfg.stats_rate, 1e-3))

    def _refresh_autoscaled(self, now: float) -> None:
        m = self.m
        if now - self._autoscaled_at < 2.0:
            return
        self._autoscaled_at = now
        scaled = {n for n, svc in m.services.items() if svc.spec.autoscale is not None}
        self._autoscaled = ({t.node for t in m.tasks.values() if t.service in scaled and t.node}
                            if scaled else set())

    async def stats_loop(self, step: float = 0.25) -> None:
        m = self.m
        while True:
            await asyncio.sleep(step)
            try:
                now = m.clock()
                self._refresh_autoscaled(now)
                n = len(m.nodes)
                last = {name: (max(live.stats_at, live.stats_asked), self.stats_period(name, n))
                        for name, live in m.live.items() if live.reachable and name in m.nodes}
                budget = max(1, math.ceil(m.cfg.stats_rate * step))
                for name in stats_due(last, now, budget):
                    m.live[name].stats_asked = now    # not twice, even if the answer is slow
                    m.spawn(self._fetch_stats(name))
            except Exception:  # never let the loop die; stats are for views and autoscale
                log.exception("stats loop crashed")

    async def _fetch_stats(self, name: str) -> None:
        m = self.m
        rec, live = m.nodes.get(name), m.live.get(name)
        if rec is None or live is None:
            return
        try:
            live.stats = await m.client.stats(agent_peer(name, rec.address, rec.api_port))
            live.stats_at = m.clock()
        except SwarmletError as exc:
            log.debug("stats of %s: %s", name, exc)

    async def _observe(self, name: str, reported: List[TaskStatus]) -> None:
        """Hand a node's report to the next group commit (a report is the node's whole
        state, so a newer one replaces one not yet folded in)."""
        self._reports[name] = reported
        self._flush_wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self.flush_loop(), name="master-observe")

    async def flush_loop(self) -> None:
        """Fold the reports in, ``observe_batch`` seconds' worth in one store commit: at 1,000
        nodes a commit (an fsync) per report held the lock for most of every second."""
        m = self.m
        while True:
            await self._flush_wake.wait()
            await asyncio.sleep(m.cfg.observe_batch)
            self._flush_wake.clear()
            reports, self._reports = self._reports, {}
            try:
                async with m.lock:
                    now = m.clock()
                    changed: List[Any] = []
                    for name, reported in reports.items():
                        if name in m.nodes:
                            changed += merge_observed(name, m.tasks.on(name), reported, now)
                    if changed:
                        await m.commit_changes(Changes(update=changed))
            except Exception:  # a store error or a bug: the next report brings it again
                log.exception("folding in %d node reports failed", len(reports))
                await asyncio.sleep(1.0)
                continue
            if changed:
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
                self._gossip_hint(name)
                self.update_status(name)
            await asyncio.sleep(m.cfg.tick_interval)

    def _gossip_hint(self, name: str) -> None:
        """What gossip says that a watch cannot see: a silent death, or a return."""
        live = self.m.live.get(name)
        if live is None:
            return
        g = self.m.gossip.get(name)
        if g in ("suspect", "dead", "down", "failed") and live.reachable and not live.probing:
            live.probing = True
            self.m.spawn(self._probe(name))
        elif g in ("alive", "ready") and not live.reachable and live.failures > 1:
            live.wake.set()

    async def _poll_members(self) -> None:
        m = self.m
        up = [n for n, live in m.live.items() if live.reachable and n in m.nodes]
        if not up:
            m.gossip = {}
            return
        self._members_rr += 1
        picks = [up[(self._members_rr + i) % len(up)] for i in range(min(2, len(up)))]
        results = await asyncio.gather(
            *(m.client.members(agent_peer(n, m.nodes[n].address, m.nodes[n].api_port), brief=True)
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
                                           m.gossip.get(name), rec.registered_at, m.started_at,
                                           live.refused),
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
