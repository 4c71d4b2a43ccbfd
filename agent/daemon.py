"""The agent daemon: wires config, state, Docker, reconcile, health, stats, gossip and API.

Owns the loops and the in-flight bookkeeping; every decision is delegated to
the pure ``reconcile.plan`` and every Docker call to ``runtime``. Loops:

- reconcile: wakes on a Docker event, an assignment, a finished action, an
  expiring backoff, or every ``resync_interval`` (events can be missed).
  Each pass lists this node's containers, plans, and launches actions as
  independent tasks, so a slow ``docker stop`` never delays a restart.
- health: HTTP probes for tasks with an ``http`` check.
- stats: node and task utilization, pushed into the gossip meta.
- ingress: a proxy for every published port, fed the routing table that
  comes with each assignment, so this node answers on every published port
  and keeps routing with the master gone.

The master is never needed: with it gone the agent keeps the stored
assignment and keeps restarting crashed tasks (static stability). Stopping
the agent leaves containers running; the next agent adopts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Set

import swarmlet
from swarmlet.shipped.exceptions import DockerError, DockerUnavailable
from swarmlet.shipped.models import Assignment, Health, TaskSpec, TaskState

from . import membership
from . import reconcile as rc
from .config import AgentConfig, load_gossip_keys
from .health import HealthTracker, from_docker, http_probe
from .looplag import LagProbe
from .runtime import DockerRuntime
from .state import AssignmentStore
from .stats import Sampler, from_docker_stats, read_task
from .status import StatusBook, down_health

log = logging.getLogger("swarmlet.agent")


class Agent:
    def __init__(self, config: AgentConfig, runtime: Optional[DockerRuntime] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.runtime = runtime or DockerRuntime(config.name, config.docker_url)
        self.store = AssignmentStore(config.state_dir)
        self.book = StatusBook()
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
        self._restarts: Dict[str, rc.RestartRecord] = {}
        self._failed: Dict[str, str] = {}
        self._failed_rev: Dict[str, int] = {}
        self._restarts_rev: Dict[str, int] = {}
        self._busy: Dict[str, int] = {}  # key -> actions in flight
        self._touched: Set[str] = set()
        self._trackers: Dict[str, HealthTracker] = {}
        self._next_probe: Dict[str, float] = {}
        self._observed: Dict[str, rc.Verdict] = {}
        self._tasks: List["asyncio.Task[Any]"] = []
        self._actions: Set["asyncio.Task[Any]"] = set()
        self._assign_lock = asyncio.Lock()
        self._api_runner: Any = None
        self.docker_ok = False
        self.ingress: Any = None
        self.discovery: Any = None
        self._routes_dirty = asyncio.Event()

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        self.lag.start()
        await asyncio.to_thread(self.store.load)
        self._set_hosts()
        loop = asyncio.get_running_loop()
        self.runtime.watch_events(loop, self._on_event, self._wake.set)
        for coro, name in ((self._reconcile_loop(), "reconcile"), (self._health_loop(), "health"),
                           (self._stats_loop(), "stats")):
            self._tasks.append(loop.create_task(coro, name=name))
        if self.config.ingress:
            from swarmlet.shipped.ingress import Ingress  # the LB is imported only when it runs
            self.ingress = Ingress(self.config.ingress_bind, sticky_key=await self._sticky_key())
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
            keys, self.meta(), self.config.seed_addrs(), enabled=self.config.gossip)

    async def stop(self) -> None:
        """Stop the agent, never the tasks: containers keep running for the next agent."""
        self._stopping.set()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        for t in self._tasks + list(self._actions):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._actions, return_exceptions=True)
        if self.ingress is not None:
            await self.ingress.close()
        if self.discovery is not None:
            await self.discovery.close()   # VIPs stay on lo: the next agent takes them over
        await self.members.close()
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
        """Persist a newer assignment and reconcile toward it; raises ``StaleAssignment``."""
        async with self._assign_lock:
            applied = await asyncio.to_thread(self.store.offer, assignment)
        if applied:
            self._set_hosts()
            now = self.clock()
            want = {t.task_id: t.revision for t in assignment.tasks}
            for t in assignment.tasks:
                self.book.ensure(t, now)
            # Failures and restart counts belong to one revision of one task.
            for tid in list(self._failed):
                if want.get(tid) != self._failed_rev.get(tid):
                    del self._failed[tid]
            for tid in list(self._restarts):
                if want.get(tid) != self._restarts_rev.get(tid):
                    del self._restarts[tid]
            self._wake.set()
            self._routes_dirty.set()
        return applied

    def _set_hosts(self) -> None:
        """Containers created from now on resolve service names to their VIPs."""
        from swarmlet.shipped.discovery import hosts_for
        cur = self.store.current
        self.runtime.extra_hosts = hosts_for(cur.routes) if cur is not None else {}

    async def _ingress_loop(self) -> None:
        """Keep the ingress proxies on the stored assignment's routes (one change at a time)."""
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            cur = self.store.current
            if cur is None:
                continue
            try:
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
        self._touched = set()
        observed = await self.runtime.list()
        self.docker_ok = True
        self.counters["reconcile_passes"] += 1
        desired = self.desired()
        now = self.clock()
        p = rc.plan(self.config.name, None if desired is None else list(desired.values()), observed,
                    now, self._restarts, self._failed, frozenset(set(self._busy) | self._touched),
                    self.policy)
        self._restarts = p.restarts
        for tid in p.restarts:
            if desired and tid in desired:
                self._restarts_rev[tid] = desired[tid].revision
        self._apply_verdicts(desired or {}, p.verdicts, now)
        for action in p.actions:
            self._launch(action)
        if desired is not None:
            live = set(desired) | set(self._busy) | {o.task_id for o in observed}
            self.book.retain([t for t in live if t in desired])
            for tid in list(self._restarts):
                if tid not in desired:
                    del self._restarts[tid]
        return p.wake_at

    def _apply_verdicts(self, desired: Dict[str, TaskSpec], verdicts: Dict[str, rc.Verdict],
                        now: float) -> None:
        self._observed = verdicts
        for tid, v in verdicts.items():
            task = desired.get(tid)
            if task is None:
                continue
            row = self.book.ensure(task, now)
            health = self._health_for(task, v, row)
            self.book.update(task, now, v.state, reason=v.reason, health=health,
                             container_id=v.container_id, host_ports=dict(v.host_ports))

    def _health_for(self, task: TaskSpec, v: rc.Verdict, row: Any) -> Health:
        if v.down:
            self._trackers.pop(task.task_id, None)
            return down_health(row)
        if task.health.kind == "http":
            tr = self._trackers.get(task.task_id)
            if tr is None or tr.started_at != v.started_at:  # a new run starts over
                tr = self._trackers[task.task_id] = HealthTracker(task.health, v.started_at)
                self._next_probe[task.task_id] = 0.0
            return tr.status
        return from_docker(v.health) or Health.NONE

    def _launch(self, action: rc.Action) -> None:
        key = action.key if isinstance(action, rc.Remove) else action.task.task_id
        self._busy[key] = self._busy.get(key, 0) + 1
        self.counters["actions"] += 1
        t = asyncio.get_running_loop().create_task(self._run_action(action, key))
        self._actions.add(t)
        t.add_done_callback(self._actions.discard)

    async def _run_action(self, action: rc.Action, key: str) -> None:
        try:
            if isinstance(action, rc.Create):
                await self._create(action.task)
            elif isinstance(action, rc.Start):
                if action.restart:
                    self.counters["restarts"] += 1
                    self.book.bump_restarts(action.task, self.clock())
                await self._guard(action.task, "start", self.runtime.start(action.container_id))
            elif isinstance(action, rc.Remove):
                if action.reason == "not assigned to this node" and self.config.drain_delay > 0:
                    # Load balancers stop routing to it as this assignment lands;
                    # give them and its in-flight requests a moment before SIGTERM.
                    await asyncio.sleep(self.config.drain_delay)
                log.info("removing %s (%s)", action.container_id[:12], action.reason)
                await self.runtime.remove(action.container_id, self.config.stop_timeout)
        except DockerError as exc:
            log.warning("%s failed: %s", type(action).__name__, exc)
        except Exception:  # a bug in one action must not kill the loop
            log.exception("action %r crashed", action)
        finally:
            left = self._busy.get(key, 1) - 1
            if left:
                self._busy[key] = left
            else:
                self._busy.pop(key, None)
            self._touched.add(key)
            self._wake.set()

    async def _create(self, task: TaskSpec) -> None:
        now = self.clock()
        self.book.update(task, now, TaskState.PREPARING, reason="")
        await self._guard(task, "image", self.runtime.ensure_image(task.image))
        await self._guard(task, "volumes", self.runtime.ensure_volumes(task))
        cid = await self._guard(task, "create", self.runtime.create(task))
        self.book.update(task, self.clock(), TaskState.STARTING, container_id=cid)
        await self._guard(task, "start", self.runtime.start(cid))

    async def _guard(self, task: TaskSpec, step: str, coro: Any) -> Any:
        """Run a Docker step; a definite failure makes the task failed, with its reason."""
        try:
            return await coro
        except DockerUnavailable:
            raise  # transient: the next pass tries again
        except DockerError as exc:
            reason = str(exc) if step == "image" else f"{step}: {exc}"
            self._failed[task.task_id] = reason
            self._failed_rev[task.task_id] = task.revision
            self.book.update(task, self.clock(), TaskState.FAILED, reason=reason)
            raise

    # -- health -----------------------------------------------------------

    async def _health_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(0.25)
            desired = self.desired() or {}
            now = time.monotonic()
            due = []
            for tid, tr in list(self._trackers.items()):
                task, v = desired.get(tid), self._observed.get(tid)
                if task is None or v is None or v.down or now < self._next_probe.get(tid, 0.0):
                    continue
                self._next_probe[tid] = now + task.health.interval
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
        if status != before and task.task_id in self._observed:
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
        running = {tid: v.container_id for tid, v in self._observed.items()
                   if not v.down and v.container_id}

        def sample() -> Dict[str, Any]:
            node = self.sampler.node(len(running))
            usage = {tid: read_task(cid) for tid, cid in running.items()}
            return {"node": node, "usage": usage}

        got = await asyncio.to_thread(sample)
        tasks: Dict[str, Any] = {}
        mono = time.monotonic()
        for tid, usage in got["usage"].items():
            if usage is None:
                try:
                    usage = from_docker_stats(await self.runtime.stats(running[tid]))
                except DockerError:
                    continue
            tasks[tid] = self.sampler.task(tid, usage, mono)
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
                "labels": dict(c.labels)}
