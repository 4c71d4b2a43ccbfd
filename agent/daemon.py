"""The agent daemon: wires config, state, Docker, reconcile, health, stats, gossip and API.

Owns the loops; every decision is delegated to the pure ``reconcile.plan``,
what is remembered per task to the ``ledger.TaskLedger``, every action to the
``executor.Executor`` and every Docker call to ``runtime`` (whose container
shape comes from the pure ``containerspec``). One clock is injected
(``clock``): timestamps, backoff, probe schedules and rates all read it.
Loops:

- reconcile: wakes on a Docker event, an assignment, a finished action, an
  expiring backoff, or every ``resync_interval`` (events can be missed).
  Each pass lists this node's containers, plans, and launches actions as
  independent tasks, so a slow ``docker stop`` never delays a restart.
- health: HTTP probes for tasks with an ``http`` check.
- stats: node and task utilization, pushed into the gossip meta.
- ingress: a proxy for every published port, and the edge (services routed by
  host name on ports 80 and 443, TLS), fed the routing table (``PUT /v1/routes``),
  the edge's settings and certificates (``PUT /v1/edge``, ``edgestate.py``) and
  the ACME tokens (``PUT /v1/challenges``), so this node answers on every
  published port and host and keeps routing with the master gone. The proxies
  run in worker processes of their own, one per core by default
  (``swarmlet.shipped.lb.workers``), fed over socket pairs.

The master is never needed: with it gone the agent keeps the stored
assignment and keeps restarting crashed tasks (static stability). Stopping
the agent leaves containers running; the next agent adopts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Callable, Dict, List, Optional

import swarmlet
from swarmlet.shipped.exceptions import DockerError
from swarmlet.shipped.discovery import aliases_for, hosts_for
from swarmlet.shipped.models import (Assignment, ChallengesUpdate, EdgeUpdate, Health, RoutesUpdate,
                                    TaskSpec)
from swarmlet.shipped.tlsutil import Denylist

from . import membership
from . import reconcile as rc
from .certs import DenylistFile, Renewal, cert_times
from .config import AgentConfig, load_gossip_keys
from .executor import Executor
from .health import HealthTracker, from_docker, http_probe
from .ledger import TaskLedger
from .looplag import LagProbe
from .runtime import DockerRuntime
from .edgestate import Challenges, EdgeStore
from .routestate import RoutesStore
from .secretfiles import SecretFiles
from .state import AssignmentStore
from .stats import Sampler, from_docker_stats, read_task
from .status import StatusBook, down_health
from .watch import ChangeWatch

log = logging.getLogger("swarmlet.agent")


class Agent:
    def __init__(self, config: AgentConfig, runtime: Optional[DockerRuntime] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.runtime = runtime or DockerRuntime(config.name, config.docker_url)
        self.log_drivers: Optional[List[str]] = None   # Docker's logging drivers here (unknown: None)
        self.store = AssignmentStore(config.state_dir)
        self.routes = RoutesStore(config.state_dir)     # the routing table, on its own channel
        self.edge = EdgeStore(config.state_dir)         # edge settings and certificates
        self.challenges = Challenges()                  # ACME tokens, in memory
        self._edge_dirty = False                        # the ingress has not got self.edge yet
        self.report = ChangeWatch()       # long polls of GET /v1/tasks wait on it (watch.py)
        self.book = StatusBook(on_change=self.report.bump)
        self.policy = rc.BackoffPolicy(config.max_backoff, config.backoff_reset)
        self.lag = LagProbe(config.lag_probe_interval)
        self.sampler = Sampler()
        self.members: Any = membership.LocalOnly(config.name, config.address, config.gossip_port, {})
        self.api_port = config.api_port
        self.last_stats: Dict[str, Any] = {"node": {}, "tasks": {}}
        self.counters = {"reconcile_passes": 0, "actions": 0, "restarts": 0, "docker_errors": 0,
                         "events": 0}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.ledger = TaskLedger()        # everything remembered per task between passes
        # Secret and config values: on tmpfs only, never in the stored assignment.
        self.secret_files = SecretFiles(config.secrets_dir)
        self.runtime.secrets_dir = config.secrets_dir
        self.executor = Executor(self.runtime, self.book, self.ledger, clock, self._wake.set,
                                 self.counters, config.stop_timeout, config.drain_delay,
                                 self.secret_files)
        self._tasks: List["asyncio.Task[Any]"] = []
        self._assign_lock = asyncio.Lock()
        self._routes_lock = asyncio.Lock()
        self._api_runner: Any = None
        self.docker_ok = False
        self.ingress: Any = None
        self.discovery: Any = None
        self._routes_dirty = asyncio.Event()
        # Certificates (certs.py): the denylist checked in every TLS handshake of the API
        # (and offered to gossip: subscribe to it), the renewal in progress, the live context.
        self.denylist_file = DenylistFile(config.state_dir)
        self.denylist = Denylist()
        self.renewal = Renewal(config.name, config.cert, config.key, config.ca)
        self.tls: Any = None
        # Relayed routes (relayapi.py): the master certificates that may sign them, and the
        # client that forwards them to other agents with this node's certificate.
        self.relay_certs: Any = None
        self.forwarder: Any = None
        self.cert_not_after: Optional[float] = None
        self._cert_subs: List[Callable[[], Any]] = []

    # -- certificates -----------------------------------------------------

    def on_certificate(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` after the agent's cert and key files were replaced (renewal)."""
        self._cert_subs.append(callback)
        return lambda: self._cert_subs.remove(callback) if callback in self._cert_subs else None

    def certificate_changed(self) -> None:
        try:
            self.cert_not_after = cert_times(self.config.cert)[2]
        except (OSError, ValueError) as exc:
            log.warning("cannot read the renewed certificate: %s", exc)
        log.info("certificate renewed; valid until %s",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.cert_not_after or 0)))
        for cb in list(self._cert_subs):
            try:
                cb()
            except Exception:  # a subscriber's bug must not undo the renewal
                log.exception("certificate subscriber failed")

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        self.lag.start()
        await asyncio.to_thread(self.secret_files.start)
        await asyncio.to_thread(self.store.load)
        await asyncio.to_thread(self.routes.load)
        self._edge_dirty = await asyncio.to_thread(self.edge.load) is not None
        cur = self.store.current
        if cur is not None and (cur.routes or cur.draining) and not self.routes.current.routes:
            # upgraded from an agent that kept the routes inside the assignment
            await asyncio.to_thread(self.routes.replace, cur.routes, cur.draining, cur.term)
        loaded = await asyncio.to_thread(self.denylist_file.load)
        self.denylist.update(loaded.version, loaded.entries())
        self._start_relay()
        try:
            self.cert_not_after = (await asyncio.to_thread(cert_times, self.config.cert))[2]
        except (OSError, ValueError):
            self.cert_not_after = None   # the API's TLS setup says why
        self._set_hosts()
        try:
            self.log_drivers = await self.runtime.log_drivers()
        except DockerError as exc:   # Docker not up yet: reported as unknown
            log.warning("cannot list Docker's logging drivers: %s", exc)
        loop = asyncio.get_running_loop()
        self.runtime.watch_events(loop, self._on_event, self._wake.set)
        for coro, name in ((self._reconcile_loop(), "reconcile"), (self._health_loop(), "health"),
                           (self._stats_loop(), "stats")):
            self._tasks.append(loop.create_task(coro, name=name))
        if self.config.ingress:
            # the LBs run in a worker process: a flood on a published port never stalls this loop
            from swarmlet.shipped.lb.workers import ingress_for
            held = self.edge.current
            edge = {"handshake": {"handshake_timeout": self.config.edge_handshake_timeout,
                                  "max_handshakes": self.config.edge_max_handshakes,
                                  "max_handshakes_per_source":
                                      self.config.edge_max_handshakes_per_source}}
            if held is not None:       # bind the edge where the master said, from the first
                edge.update(http_port=held.http_port, https_port=held.https_port)
            self.ingress = ingress_for(self.config.ingress_bind, await self._sticky_key(),
                                       process=self.config.ingress_process,
                                       workers=self.config.ingress_workers,
                                       limits={"max_connections": self.config.ingress_max_connections},
                                       edge=edge)
        if self.config.discovery:
            from swarmlet.shipped.discovery import Discovery
            self.discovery = Discovery()
        if self.ingress is not None or self.discovery is not None:
            self._tasks.append(loop.create_task(self._ingress_loop(), name="ingress"))
            self._routes_dirty.set()
        from .api import start_api  # aiohttp is imported only with the API
        self._api_runner, self.api_port = await start_api(self)
        await self._start_gossip()  # after the API: the meta carries the bound port
        log.info("agent %s up: api port %s, assignment version %s", self.config.name,
                 self.api_port, self.version)

    def _start_relay(self) -> None:
        from swarmlet.shipped.relayenvelope import MasterCerts
        from swarmlet.shipped.relaytree import Forwarder
        try:
            self.relay_certs = MasterCerts.load(self.config.ca)
        except Exception as exc:  # the API's TLS setup says what is wrong with the CA
            log.warning("relayed routes disabled: %s", exc)
            return
        self.relay_certs.follow(self.denylist)
        c = self.config
        self.forwarder = Forwarder.with_identity(c.cert, c.key, c.ca, denylist=self.denylist)
        self.on_certificate(self.forwarder.reload)

    async def _sticky_key(self) -> bytes:
        """The LB's sticky-cookie key, derived from the cluster's gossip key (the
        master derives the same), so every node honours every node's cookies."""
        from swarmlet.shipped.lb.config import sticky_key_from
        try:
            keys = await asyncio.to_thread(load_gossip_keys, self.config.gossip_keys)
        except Exception:  # no keys: cookies still work, on this node only
            return b""
        return sticky_key_from(keys[0])

    async def _start_gossip(self) -> None:
        keys = None
        if self.config.gossip:
            try:
                keys = await asyncio.to_thread(load_gossip_keys, self.config.gossip_keys)
            except Exception as exc:  # no keys: run without the mesh, tasks matter more
                log.warning("gossip disabled: %s", exc)
        self.members = await membership.start(
            self.config.name, self.config.address, (self.config.gossip_bind, self.config.gossip_port),
            keys, self.meta(), self.config.seed_addrs(), enabled=self.config.gossip,
            cert=self.config.cert, key=self.config.key, ca=self.config.ca)
        self.members.follow(self.denylist, self.on_certificate, self.config.cert, self.config.key)

    async def stop(self) -> None:
        """Stop the agent, never the tasks: containers keep running for the next agent."""
        self._stopping.set()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        actions = self.executor.tasks()
        for t in self._tasks + list(actions):
            t.cancel()
        await asyncio.gather(*self._tasks, *actions, return_exceptions=True)
        if self.ingress is not None:
            await self.ingress.close()
        if self.discovery is not None:
            await self.discovery.close()   # VIPs stay on lo: the next agent takes them over
        await self.members.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        await self.lag.stop()
        await asyncio.to_thread(self.runtime.close)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    # -- assignment -------------------------------------------------------

    @property
    def version(self) -> int:
        cur = self.store.current
        return cur.version if cur is not None else 0

    async def set_assignment(self, assignment: Assignment) -> bool:
        """Persist a newer assignment and reconcile toward it; raises ``StaleAssignment``.
        Its secret values go to tmpfs (``secretfiles``); the stored assignment has none."""
        values, assignment = assignment.secrets, dataclasses.replace(assignment, secrets=())
        async with self._assign_lock:
            applied = await asyncio.to_thread(self.store.offer, assignment)
            # not stale (that raised): take its values, also when it is the same version again
            # (the master resends them when we report some missing)
            if values and await asyncio.to_thread(self.secret_files.absorb, values):
                self._wake.set()
        if applied:
            if assignment.routes or assignment.draining:
                # a master of an earlier version sends the routes inside the assignment
                await asyncio.to_thread(self.routes.replace, assignment.routes,
                                        assignment.draining, assignment.term)
                self._set_hosts()
                self._routes_dirty.set()
            now = self.clock()
            for t in assignment.tasks:
                self.book.ensure(t, now)
            # Failures and restart counts belong to one revision of one task.
            self.ledger.assigned({t.task_id: t.revision for t in assignment.tasks})
            self.report.bump()   # the version in the report moved
            self._wake.set()
        return applied

    async def set_routes(self, update: RoutesUpdate) -> bool:
        """Apply a routes update (whole or delta) and feed the proxies; raises ``StaleRoutes``."""
        async with self._routes_lock:      # its own: a routes write never delays an assignment
            applied = await asyncio.to_thread(self.routes.offer, update)
        if applied:
            self._set_hosts()
            self.report.bump()   # the routes version in the report moved
            self._routes_dirty.set()
        return applied

    async def set_edge(self, update: EdgeUpdate) -> bool:
        """Persist a newer edge update and feed the ingress; raises ``StaleEdge``."""
        async with self._routes_lock:
            applied = await asyncio.to_thread(self.edge.offer, update)
        if applied:
            self._edge_dirty = True
            self.report.bump()
            self._routes_dirty.set()
        return applied

    async def set_challenges(self, update: ChallengesUpdate) -> bool:
        """Take the ACME tokens; True once every ingress worker answers them (the master
        triggers a challenge only after every node said so). Raises ``StaleEdge``."""
        self.challenges.offer(update)
        if self.ingress is None:
            return False
        return bool(await self.ingress.set_challenges(self.challenges.tokens))

    def _set_hosts(self) -> None:
        """Containers created from now on resolve service names to their VIPs."""
        self.runtime.extra_hosts = hosts_for(self.routes.current.routes)
        self.runtime.aliases = aliases_for(self.routes.current.routes)

    async def _ingress_loop(self) -> None:
        """Keep the ingress proxies and discovery on the routing table (one change at a time)."""
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            cur = self.routes.current
            try:
                if self.ingress is not None and self._edge_dirty and self.edge.current is not None:
                    self._edge_dirty = False
                    await self.ingress.configure_edge(self.edge.current)
                if self.ingress is not None:
                    await self.ingress.apply(cur.routes, frozenset(cur.draining))
                if self.discovery is not None:
                    await self.discovery.apply(cur.routes)
            except Exception:  # a bug: keep the rest of the agent alive
                log.exception("ingress update failed")
                await asyncio.sleep(1.0)

    def desired(self) -> Optional[Dict[str, TaskSpec]]:
        cur = self.store.current
        return None if cur is None else {t.task_id: t for t in cur.tasks}

    # -- reconcile --------------------------------------------------------

    def _on_event(self, ev: Dict[str, Any]) -> None:
        self.counters["events"] += 1
        cid = ev.get("id") or (ev.get("Actor") or {}).get("ID")
        if cid:
            self.runtime.forget(cid)
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        wake_at: Optional[float] = None
        retry = 0.5
        while not self._stopping.is_set():
            timeout = self.config.resync_interval
            if wake_at is not None:
                timeout = max(0.0, min(timeout, wake_at - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                wake_at = await self.reconcile_once()
                retry = 0.5
            except DockerError as exc:
                self.docker_ok = False
                self.counters["docker_errors"] += 1
                log.warning("reconcile: %s (retrying in %.1fs)", exc, retry)
                await asyncio.sleep(retry)  # Docker down: back off, never spin
                retry = min(retry * 2, 10.0)
                self._wake.set()

    async def reconcile_once(self) -> Optional[float]:
        """One pass: list, plan, launch actions. Returns when to plan again at the latest."""
        led = self.ledger
        led.begin_pass()
        observed = await self.runtime.list()
        self.docker_ok = True
        self.counters["reconcile_passes"] += 1
        desired = self.desired()
        now = self.clock()
        p = rc.plan(self.config.name, None if desired is None else list(desired.values()), observed,
                    now, led.restarts(), led.failures(), led.busy(), self.policy)
        led.set_restarts(p.restarts, {tid: t.revision for tid, t in (desired or {}).items()})
        self._apply_verdicts(desired or {}, p.verdicts, now)
        for action in p.actions:
            self.executor.launch(action)
        if desired is not None:
            live = set(desired) | set(led.busy()) | {o.task_id for o in observed}
            self.book.retain([t for t in live if t in desired])
            led.retain(desired)
            await self._retain_secrets(live)
        return p.wake_at

    async def _retain_secrets(self, live: "set[str]") -> None:
        """Remove secret values and files no task here uses (under the assignment lock: a
        value that just arrived belongs to the assignment that came with it)."""
        async with self._assign_lock:
            desired = self.desired()
            if desired is not None:
                await asyncio.to_thread(self.secret_files.retain, desired,
                                        set(live) | set(self.ledger.busy()))

    def secrets_missing(self) -> int:
        """How many values assigned tasks mount that this node lacks (the master resends)."""
        desired = self.desired() or {}
        files = self.secret_files
        if files.prepared and files.why_not:
            return 0      # reported per task instead: resending would not help
        return len(files.missing(desired.values()))

    def _apply_verdicts(self, desired: Dict[str, TaskSpec], verdicts: Dict[str, rc.Verdict],
                        now: float) -> None:
        self.ledger.set_verdicts(verdicts)
        for tid, v in verdicts.items():
            task = desired.get(tid)
            if task is None:
                continue
            row = self.book.ensure(task, now)
            health = self._health_for(task, v, row)
            self.book.update(task, now, v.state, reason=v.reason, health=health,
                             container_id=v.container_id, host_ports=dict(v.host_ports))

    def _health_for(self, task: TaskSpec, v: rc.Verdict, row: Any) -> Health:
        e = self.ledger.entry(task.task_id)
        if v.down:
            e.tracker = None
            return down_health(row)
        if task.health.kind == "http":
            if e.tracker is None or e.tracker.started_at != v.started_at:  # a new run starts over
                e.tracker = HealthTracker(task.health, v.started_at)
                e.next_probe = 0.0
            return e.tracker.status
        return from_docker(v.health) or Health.NONE

    # -- health -----------------------------------------------------------

    async def _health_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(0.25)
            desired = self.desired() or {}
            now = self.clock()
            due = []
            for tid, e in self.ledger.items():
                task, v, tr = desired.get(tid), e.verdict, e.tracker
                if task is None or v is None or tr is None or v.down or now < e.next_probe:
                    continue
                e.next_probe = now + task.health.interval
                due.append((task, v, tr))
            if due:
                await asyncio.gather(*(self._probe(t, v, tr) for t, v, tr in due))

    async def _probe(self, task: TaskSpec, v: rc.Verdict, tr: HealthTracker) -> None:
        h = task.health
        port = h.port or (task.ports[0].target if task.ports else 80)
        host_port = v.host_ports.get(f"{port}/tcp")
        host, dst = ("127.0.0.1", host_port) if host_port else (v.ip, port)
        ok = bool(host) and await http_probe(host, dst, h.path, h.timeout)
        before = tr.status
        status = tr.observe(ok, self.clock())
        e = self.ledger.get(task.task_id)
        if status != before and e is not None and e.verdict is not None:
            self.book.update(task, self.clock(), health=status)

    # -- stats and gossip meta ---------------------------------------------

    async def _stats_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sample_stats()
                self.members.update_meta(self.meta())
            except Exception as exc:  # stats are advisory; never stop the loop for them
                log.warning("stats: %s", exc)
            await asyncio.sleep(self.config.stats_interval)

    async def sample_stats(self) -> Dict[str, Any]:
        running = {tid: v.container_id for tid, v in self.ledger.verdicts().items()
                   if not v.down and v.container_id}

        def sample() -> Dict[str, Any]:
            node = self.sampler.node(len(running))
            usage = {tid: read_task(cid) for tid, cid in running.items()}
            return {"node": node, "usage": usage}

        got = await asyncio.to_thread(sample)
        tasks: Dict[str, Any] = {}
        now = self.clock()
        for tid, usage in got["usage"].items():
            if usage is None:
                try:
                    usage = from_docker_stats(await self.runtime.stats(running[tid]))
                except DockerError:
                    continue
            tasks[tid] = self.sampler.task(tid, usage, now)
        self.sampler.forget_except(list(running))
        self.last_stats = {"node": got["node"], "tasks": tasks}
        return self.last_stats

    def meta(self) -> Dict[str, Any]:
        node = self.last_stats.get("node") or {}
        meta: Dict[str, Any] = {"address": self.config.address, "api_port": self.api_port,
                                "labels": dict(self.config.labels), "version": swarmlet.__version__}
        for k in ("cpu_percent", "mem_used", "mem_total", "load1", "cpus", "tasks"):
            if k in node:
                meta[k] = node[k]
        return meta

    def info(self) -> Dict[str, Any]:
        c = self.config
        return {"name": c.name, "address": c.address, "version": swarmlet.__version__,
                "cluster_id": c.cluster_id, "api_port": self.api_port, "gossip_port": c.gossip_port,
                "labels": dict(c.labels), "log_drivers": self.log_drivers}
