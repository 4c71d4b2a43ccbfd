"""The pusher: what each agent should run, and the routing table, on two channels.

Assignments (``PUT /v1/assignment``): after each reconcile pass ``sync`` bumps
the stored version of every node whose desired task set changed and pushes its
full assignment (idempotent: a lost push is harmless; the poller re-pushes when
an agent reports an older version, or values missing). An assignment carries the
values of the secrets and configs its tasks mount (``SecretBook.values_for``):
a value reaches only the nodes that run a task using it. A 409 from an agent that holds a newer
version (a store restored from a backup) leapfrogs it, unless a newer leader
sent it.

Routes (``PUT /v1/routes``, ``models.RoutesUpdate``): ``routes()`` is the table
both the master's own load balancers (``ingress_loop``) and every agent's
ingress serve: healthy replicas behind each published port. It has its own
version (per master run: ``epoch``), and each node is sent only what changed
since the version it acknowledged (``routediff``): one replica's health flip is
one small ``RouteChange`` per node, not every node's full assignment. A node
whose version is unknown (nothing acknowledged yet, or a 409 naming a table we
no longer have), or older than every table kept (the newest 16 and any a node
holds, up to 512; they share the routes that did not change), gets the whole
table. A push that got no answer keeps the version the node acknowledged before:
the node holds that table or the one just sent, and a delta against the first is
applied, or refused with a 409 that names the table it holds, and a delta from
that one follows (at 1,000 nodes a whole table is about 1 MB: sent after every
timeout, or after every 409, it made a busy master busier).
An agent that predates the channel (404) gets the routes inside its assignment, as before.

Every node holding the same version is sent the same update: it is encoded once
per (base version, table version, term) and only the node's name is spliced in
(``body_for``). Encoding it again for each of 1,000 nodes (``to_wire`` and
``json.dumps`` of the same delta) was two thirds of the master's CPU while a
deploy of 10,000 replicas turned them healthy (bench/scale, profiled).

Relayed (``relaypush.py``): when at least ``relay_threshold`` nodes hold the same
version and the delta from it is small (``relay_max_bytes``, 4 KB: a health flip is
about 250 bytes, a deploy's deltas tens of KB), that delta is signed once and sent to ``relay_seeds`` of them, which
relay it to the rest (``push_routes_many``, ``_relay_loop``); the nodes that did
not acknowledge it get the direct push above. One wave at a time, over a tree
spanning every node that is up (the same from wave to wave, so agents reuse their
connections), and no more often than ``_relay_gap`` (at 1,000 nodes 5 s while
routes churn; a change after a calm goes out at once): a wave every 0.5 s during
a deploy of 10,000 replicas saturated bench/scale's simulated agents. While a wave
is out its nodes count as pushing (a change meanwhile coalesces into the next
wave). What relays acknowledged is checked against the nodes' own poll answers
(``_check_reported``): a lying relay delays a node's routes, never for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set, Tuple

from ..shipped import routediff
from ..shipped.discovery import assign_vips
from ..shipped.exceptions import APIError, StaleAssignment, StaleRoutes, SwarmletError
from ..shipped.models import Assignment, RoutesUpdate, TaskSpec, TaskState, to_wire
from ..shipped.routes import ReplicaView, Route, build_routes
from ..client import agent_peer
from . import views
from .nodestatus import LOST
from .relaypush import RelayPush, groups
from .state import RUNNING, SHUTDOWN, NodeRecord, assignment_tasks, replace
from .store import Batch

if TYPE_CHECKING:   # the daemon wires us; only for type names
    from .daemon import Master

log = logging.getLogger("swarmlet.master.pusher")

Routing = Tuple[Tuple[Route, ...], Tuple[str, ...]]     # routes, draining task ids
KEEP_TABLES = 16        # the newest route tables, always kept to make deltas from
MAX_TABLES = 512        # and any a node holds, up to this many (a node further behind gets all)


@dataclass
class _Prepared:
    """What one node was last prepared and sent, and the pushes in flight."""

    content: Optional[Tuple[TaskSpec, ...]] = None
    routing: Routing = ((), ())          # inside the assignment: only for a legacy agent
    pushing: bool = False
    repush: bool = False
    legacy: bool = False                 # no routes channel (an agent of an earlier version)
    routes_acked: Optional[int] = None   # the routes version the node holds (None: unknown)
    routes_pushing: bool = False
    routes_repush: bool = False
    routes_doubt: Optional[Tuple[int, int]] = None   # (reported, acked): a poll said it is behind


class Pusher:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self._nodes: Dict[str, _Prepared] = {}
        self._vips: Dict[str, str] = {}     # service -> virtual IP (stable while running)
        self._routes: Tuple[Route, ...] = ()
        self._routes_key: Optional[tuple] = None
        self.routes_dirty = asyncio.Event()
        self.epoch = int(m.started_at * 1000) % (1 << 62)   # this master run's routes
        self.version = 0                                    # the routes table's version
        self._tables: Dict[int, Routing] = {0: ((), ())}
        self._deltas: Dict[Tuple[int, int], routediff.Delta] = {}   # (from, to) -> delta
        # (base, version, term) -> the update's JSON without its node: for the current version only
        self._bodies: Dict[Tuple[int, int, int], bytes] = {}
        self._shared_from: Optional[Tuple[Route, ...]] = None    # routes() as last shared
        self._shared_table: Tuple[Route, ...] = ()
        self.relay = RelayPush(m)
        self._relay_wanted: Set[str] = set()     # nodes waiting for the next relay wave
        self._relay_running = False
        self._relay_next_at = 0.0

    def forget(self, name: str) -> None:
        self._nodes.pop(name, None)

    def poll_ok(self, name: str, version: int, secrets_missing: bool = False,
                routes: Any = None) -> None:
        """The poller reached ``name`` and it holds assignment ``version`` (``secrets_missing``:
        but not every value its tasks mount, e.g. after a reboot emptied its tmpfs); ``routes``:
        the ``{"version", "epoch"}`` of the table its poll answer reports."""
        rec, prep = self.m.nodes.get(name), self._nodes.get(name)
        if rec is None or prep is None:
            return
        self._check_reported(prep, routes)
        if version < rec.assignment_version or (secrets_missing and version == rec.assignment_version):
            if version == 0:
                prep.routes_acked = None      # it lost its state: its routes too
            self.push(name)
        if not prep.legacy and prep.routes_acked != self.version:
            self.push_routes_many([name])

    def _check_reported(self, prep: _Prepared, routes: Any) -> None:
        """Trust, but verify, what relays acknowledged for a node: an agent that relays can
        claim a node holds a version it does not. A node whose poll answer reports, twice in a
        row with no push in between, a version of this run older than the one acknowledged is
        believed (then pushed from there). Twice: one answer may have been made just before a
        push was applied."""
        if not isinstance(routes, dict) or prep.routes_acked is None or prep.routes_pushing:
            prep.routes_doubt = None
            return
        v, e = routes.get("version"), routes.get("epoch")
        if e != self.epoch or not isinstance(v, int) or isinstance(v, bool) or v >= prep.routes_acked:
            prep.routes_doubt = None
            return
        if prep.routes_doubt == (v, prep.routes_acked):
            log.warning("a node reports routes version %s, acknowledged %s: pushing", v,
                        prep.routes_acked)
            self.m.counters["routes_doubted"] = self.m.counters.get("routes_doubted", 0) + 1
            prep.routes_acked, prep.routes_doubt = (v if v in self._tables else None), None
        else:
            prep.routes_doubt = (v, prep.routes_acked)

    # --- routes ---------------------------------------------------------------

    def _up(self, node: Optional[str]) -> bool:
        live = self.m.live.get(node or "")
        return live is not None and live.status not in LOST

    def routes(self) -> Tuple[Route, ...]:
        """The routing table: healthy replicas behind every published port. Made again only
        when a task, a node's address or status, or a service changed (each reconcile pass and
        the ingress loop ask; at 10,000 tasks a table costs tens of milliseconds)."""
        m = self.m
        addr = {n: rec.address for n, rec in m.nodes.items() if self._up(n)}
        key = (getattr(m.tasks, "version", None), tuple(sorted(addr.items())),
               tuple(sorted((n, s.revision) for n, s in m.services.items())))
        if key[0] is not None and self._routes_key == key:
            return self._routes
        reps = [ReplicaView(t.task_id, t.service, t.node, t.state, t.health, t.host_ports,
                            t.desired == RUNNING) for t in m.tasks.values()]
        order = [svc.name for svc in sorted(m.services.values(), key=lambda v: (v.created_at, v.name))]
        self._vips = assign_vips(order, self._vips)
        self._routes = build_routes([svc.spec for svc in m.services.values()], reps, addr, self._vips)
        self._routes_key = key
        return self._routes

    def published_routes(self) -> Tuple[Route, ...]:
        """The routes of published ports and of host names on the edge (what the master's own
        LBs serve), made from those services' tasks alone: cheap however many replicas only
        use discovery."""
        m = self.m
        published = [svc.spec for svc in m.services.values()
                     if svc.spec.edge.hosts or any(p.published is not None and p.host_port is None
                                                   for p in svc.spec.ports)]
        if not published:
            return ()
        addr = {n: rec.address for n, rec in m.nodes.items() if self._up(n)}
        reps = [ReplicaView(t.task_id, t.service, t.node, t.state, t.health, t.host_ports,
                            t.desired == RUNNING)
                for spec in published for t in views.tasks_of(m, spec.name)]
        self._vips = assign_vips([svc.name for svc in sorted(m.services.values(),
                                                             key=lambda v: (v.created_at, v.name))],
                                 self._vips)
        return tuple(r for r in build_routes(published, reps, addr, self._vips)
                     if r.published is not None or r.hosts)

    def graceful(self) -> Set[str]:
        """Tasks leaving the routes on purpose while still running: let them drain."""
        return {t.task_id for t in self.m.tasks.values()
                if t.desired == SHUTDOWN and t.state == TaskState.RUNNING and self._up(t.node)}

    async def ingress_loop(self) -> None:
        """Apply the latest routes to the master's load balancers, one change at a time.

        Only published routes (the master's LBs listen on published ports; the rest is
        service discovery, which runs on agents), and only when they changed: the worker
        process is sent the whole table, which at 10,000 replicas is megabytes of JSON."""
        last: Optional[tuple] = None
        while True:
            await self.routes_dirty.wait()
            self.routes_dirty.clear()
            try:
                routes = self.published_routes()
                graceful = self.graceful()
                if (routes, graceful) == last:
                    continue
                await self.m.ingress.apply(routes, graceful)
                last = (routes, graceful)
            except Exception:  # never let the front door's loop die
                log.exception("ingress update failed")
                await asyncio.sleep(1.0)

    # --- assignments ------------------------------------------------------------

    async def sync(self) -> None:
        """Bump and push every node whose desired task set or routes changed (lock held)."""
        m = self.m
        built = self.routes()
        if built is not self._shared_from:     # made again since the last pass
            self._shared_from, self._shared_table = built, self._shared(routediff.ordered(built))
        routing = (self._shared_table, tuple(sorted(self.graceful())))
        if routing != self._tables[self.version]:
            self.version += 1
            self._tables[self.version] = routing
            self._prune_tables()
            # made towards an older version: never asked for again
            self._deltas.clear()
            self._bodies.clear()
        bumped: List[NodeRecord] = []
        routes_only: List[str] = []
        touched = m.tasks.take_touched()    # only their task sets can have changed
        for name, rec in m.nodes.items():
            prep = self._nodes.setdefault(name, _Prepared())
            fresh = prep.content is None or name in touched
            content = assignment_tasks(name, m.tasks.on(name), m.specs) if fresh else prep.content
            if content != prep.content or (prep.legacy and routing != prep.routing):
                prep.content = content
                prep.routing = routing if prep.legacy else ((), ())
                bumped.append(replace(rec, assignment_version=rec.assignment_version + 1))
            elif not prep.legacy and prep.routes_acked != self.version and self._up(name):
                routes_only.append(name)
        if bumped:
            await m.write(Batch.of(nodes=bumped))
        for rec in bumped:
            m.nodes[rec.name] = rec
            if self._up(rec.name):
                if not self._nodes[rec.name].legacy:
                    self.push_routes(rec.name)      # routes first: they may drain a stopping task
                self.push(rec.name)
        # New assignments (replacements of a dead node's replicas) go out before the route
        # changes every other node gets: at 1,000 nodes those are 1,000 requests.
        self.push_routes_many(routes_only)

    def _shared(self, table: Tuple[Route, ...]) -> Tuple[Route, ...]:
        """``table`` with every route equal to the current table's taken from it: tables share
        what did not change, so many can be kept, and ``routediff.diff`` skips them by identity."""
        prev = {routediff.key(r): r for r in self._tables[self.version][0]}
        out = []
        for r in table:
            was = prev.get(routediff.key(r))
            out.append(was if was is not None and was == r else r)
        return tuple(out)

    def _prune_tables(self) -> None:
        """Keep the newest ``KEEP_TABLES`` tables and every table a node holds (up to
        ``MAX_TABLES``): a node that was down, or paced behind while routes churned (a deploy
        of 10,000 replicas bumps the version hundreds of times), gets a delta, not the whole
        table (about 1 MB at 10,000 replicas, for each of them)."""
        held = {p.routes_acked for p in self._nodes.values() if p.routes_acked is not None}
        keep = sorted((v for v in self._tables
                       if v > self.version - KEEP_TABLES or v in held), reverse=True)[:MAX_TABLES]
        for v in set(self._tables) - set(keep):
            del self._tables[v]

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
                # the values of the secrets/configs its tasks mount: to this node only
                a = Assignment(name, rec.assignment_version, prep.content, *prep.routing,
                               term=m.term, secrets=m.secretbook.values_for(prep.content))
                try:
                    await m.client.put_assignment(agent_peer(name, rec.address, rec.api_port), a)
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

    # --- routes -------------------------------------------------------------------

    def push_routes(self, name: str) -> None:
        """Bring ``name``'s routing table to the current version; coalesces."""
        prep = self._nodes.get(name)
        if prep is None or prep.legacy:
            return
        if prep.routes_pushing:
            prep.routes_repush = True
            return
        prep.routes_pushing = True
        self.m.spawn(self._routes_task(name))

    def update_for(self, name: str, acked: Optional[int]) -> RoutesUpdate:
        """What brings a node holding ``acked`` to the current table: a delta when we still
        have its table, else the whole table."""
        routes, draining = self._tables[self.version]
        if acked is not None and acked in self._tables:
            # Most nodes hold the same version: one diff of the table serves them all (a diff
            # of 10,000 backends per node per change was seconds of CPU at 1,000 nodes).
            key = (acked, self.version)
            delta = self._deltas.get(key)
            if delta is None:
                delta = self._deltas[key] = routediff.diff(self._tables[acked][0], routes)
            whole, removed, changes = delta
            return RoutesUpdate(name, self.version, self.epoch, acked, whole, removed, changes,
                                draining, self.m.term)
        return RoutesUpdate(name, self.version, self.epoch, 0, routes, (), (), draining, self.m.term)

    def tail_for(self, acked: Optional[int]) -> bytes:
        """The JSON of ``update_for(_, acked)`` without its node: encoded once per (base,
        version, term) for every node holding ``acked`` (see the docstring)."""
        base = acked if acked is not None and acked in self._tables else 0
        key = (base, self.version, self.m.term)
        tail = self._bodies.get(key)
        if tail is None:
            wire = to_wire(self.update_for("", base or None))
            del wire["node"]
            tail = self._bodies[key] = json.dumps(wire, separators=(",", ":")).encode()
        return tail

    def body_for(self, name: str, acked: Optional[int]) -> Tuple[int, bytes]:
        """(version, JSON body) of ``update_for(name, acked)``: only the node's name is spliced
        into ``tail_for(acked)``."""
        tail = self.tail_for(acked)
        return self.version, b'{"node":%s,%s' % (json.dumps(name).encode(), tail[1:])

    def push_routes_many(self, names: List[str]) -> None:
        """``push_routes`` for each of ``names``, but nodes that a delta can bring up to date
        wait for the next relay wave (``_relay_loop``) when relaying is on."""
        m = self.m
        if m.cfg.relay_threshold <= 0:
            for name in names:
                self.push_routes(name)
            return
        for name in names:
            prep = self._nodes.get(name)
            if prep is None or prep.legacy or prep.routes_acked == self.version:
                continue
            if prep.routes_pushing or not self._relayable(name, prep):
                self.push_routes(name)      # coalesces, or needs the whole table: the direct path
            else:
                self._relay_wanted.add(name)
        if self._relay_wanted and not self._relay_running:
            self._relay_running = True
            m.spawn(self._relay_loop())

    def _relayable(self, name: str, prep: _Prepared) -> bool:
        """A delta brings it up to date, and that delta is small (``relay_max_bytes``): a big
        one (a deploy's: tens of KB) would have every agent receive, check, hold and send on
        tens of KB at the same moment; the direct pushes pace and coalesce it instead. (In
        bench/scale, 500 simulated nodes on one loop relaying a deploy's deltas stalled it
        until the master's polls timed out.)"""
        return (prep.routes_acked is not None and prep.routes_acked in self._tables
                and prep.routes_acked != self.version and not prep.legacy and self._up(name)
                and len(self.tail_for(prep.routes_acked)) <= self.m.cfg.relay_max_bytes)

    def _relay_gap(self) -> float:
        """Seconds between two waves: at least ``relay_gap``, and a wave costs every node about
        a request in and one out, twice a direct push, so no more often than direct pushes
        paced at ``routes_rate`` would reach every node twice (at 1,000 nodes: 5 s)."""
        m = self.m
        return max(m.cfg.relay_gap, 2 * len(m.nodes) / max(m.cfg.routes_rate, 1.0))

    async def _relay_loop(self) -> None:
        """One wave at a time, paced; the nodes waiting for one that cannot be relayed (their
        group is below the threshold, or they need the whole table) are pushed directly."""
        m = self.m
        try:
            while self._relay_wanted:
                delay = self._relay_next_at - m.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                wanted, self._relay_wanted = self._relay_wanted, set()
                bases: Dict[str, int] = {}
                direct: List[str] = []
                for name in wanted:
                    prep = self._nodes.get(name)
                    if prep is None or prep.routes_acked == self.version:
                        continue
                    if not prep.routes_pushing and self._relayable(name, prep):
                        bases[name] = prep.routes_acked       # type: ignore[assignment]
                    else:
                        direct.append(name)
                relay, rest = groups(bases, m.cfg.relay_threshold if m.leading() else 0)
                group: Optional[List[str]] = None
                if relay:       # the largest group; the others are few: pushed directly
                    base = max(relay, key=lambda b: (len(relay[b]), b))
                    group = relay.pop(base)
                    rest += [n for ns in relay.values() for n in ns]
                for name in direct + rest:
                    self.push_routes(name)
                if group is None:
                    continue
                self._relay_next_at = m.clock() + self._relay_gap()
                for name in group:
                    prep = self._nodes[name]
                    prep.routes_pushing, prep.routes_repush = True, False
                await self._relay_wave(base, group)
        finally:
            self._relay_running = False
        if self._relay_wanted:        # added while the loop was ending
            self.push_routes_many([])

    async def _relay_wave(self, base: int, group: List[str]) -> None:
        """One relay wave of the delta from ``base`` to ``group``; then the backstop. The tree
        spans every node that is up (stable from one wave to the next, so agents reuse their
        connections); only ``group`` is counted on. Each seed's range is settled as its answer
        comes: a seed that hangs holds back its own range, not the wave."""
        m = self.m
        version, tail = self.version, self.tail_for(base)
        everyone = [n for n, p in self._nodes.items() if not p.legacy and self._up(n)]
        waiting = set(group)

        def settle(names: Iterable[str], acked: Set[str]) -> None:
            backstop: List[str] = []
            for name in names:
                if name not in waiting:
                    continue
                waiting.discard(name)
                prep = self._nodes.get(name)
                if prep is None:
                    continue
                prep.routes_pushing = False
                if name in acked and prep.routes_acked == base:
                    prep.routes_acked = version
                    m.counters["route_pushes"] += 1
                if prep.routes_acked != version:
                    backstop.append(name)
                elif prep.routes_repush or prep.routes_acked != self.version:
                    self._relay_wanted.add(name)      # changed meanwhile: the next wave
            m.counters["relay_backstop"] = m.counters.get("relay_backstop", 0) + len(backstop)
            for name in backstop:          # the direct push: never depends on the relay
                self.push_routes(name)

        acked: Set[str] = set()
        try:
            acked = await self.relay.wave(everyone, tail, version, settle)
        except Exception:  # the backstop below still reaches every node
            log.exception("routes relay failed")
        settle(sorted(waiting), acked)     # in no seed's range (a seed unknown), or a failure

    async def _routes_task(self, name: str) -> None:
        m = self.m
        try:
            for _ in range(3):
                rec, prep = m.nodes.get(name), self._nodes.get(name)
                if (rec is None or prep is None or prep.legacy or prep.routes_acked == self.version
                        or not m.leading()):    # an HA leader whose lease may have lapsed: silent
                    return
                prep.routes_repush = False
                version, body = self.body_for(name, prep.routes_acked)
                try:
                    await m.client.put_routes(agent_peer(name, rec.address, rec.api_port), body)
                    prep.routes_acked = version
                    m.counters["route_pushes"] += 1
                    # Pace each node's pushes so all of them stay within routes_rate requests
                    # a second: changes meanwhile coalesce into one delta (1,000 nodes: one
                    # push per node per 2.5 s at most while routes churn; a change after a
                    # calm goes out at once).
                    gap = len(m.nodes) / max(m.cfg.routes_rate, 1.0)
                    if gap >= 0.05:
                        await asyncio.sleep(gap)
                except StaleRoutes as exc:
                    if exc.term > m.term:
                        log.warning("routes to %s refused: %s", name, exc)
                        return
                    # It holds another table than we believed (a push whose answer was lost
                    # landed; a relay reached it): a delta from that one if we still have it,
                    # else the whole table. Always the whole table made every timeout on a busy
                    # master cost a megabyte at 1,000 nodes, and made it busier (bench/scale).
                    held = (exc.current if exc.epoch == self.epoch and exc.term == m.term
                            and exc.current in self._tables and exc.current != prep.routes_acked
                            else None)
                    prep.routes_acked = held
                    prep.routes_repush = True
                except APIError as exc:
                    if exc.status == 404:             # an agent from before the routes channel
                        log.info("node %s takes its routes inside assignments", name)
                        prep.legacy, prep.routes_acked = True, None
                        m.kick()
                        return
                    # No answer (Unreachable) or an error: the node holds what it acknowledged
                    # before, or what was just sent. A delta against the former is applied, or
                    # refused with a 409 (then a delta from what it holds): never wrong, and no
                    # megabyte after every timeout. The poller pushes again once it answers.
                    m.counters["push_failures"] += 1
                    log.debug("routes to %s failed: %s", name, exc)
                    return
                except SwarmletError as exc:
                    m.counters["push_failures"] += 1
                    log.debug("routes to %s failed: %s", name, exc)
                    return
                if not prep.routes_repush and prep.routes_acked == self.version:
                    return
        finally:
            prep = self._nodes.get(name)
            if prep is not None:
                prep.routes_pushing = False

