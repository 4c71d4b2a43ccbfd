"""The master daemon: in-memory state, the store journal, and the loops.

Owns the working state (services, specs by revision, tasks, node records,
each node's liveness) and keeps the store in step: every change is committed
(through ``asyncio.to_thread``) before it is applied in memory or pushed.
Decisions are delegated to the pure ``reconcile``, ``scheduler`` and
``liveness``; the agent API is reached through ``agents.AgentClient``.

Loops:
- one poll loop per node: ``GET /v1/tasks`` every ``poll_interval`` (folded
  in with ``state.merge_observed``), ``GET /v1/stats`` every ``stats_interval``;
- a tick: liveness from reachability plus the gossip view (``/v1/members``
  of two reachable agents, merged), status changes become events;
- reconcile: on every event (API change, node status change, a task that
  started, failed or turned healthy) and at least every ``reconcile_interval``.
  After each pass every node whose desired task set changed gets its full
  assignment with a higher version. An agent that reports an older version
  (it was down, or a push was lost) gets it again.

After a restart the master reloads the store and bumps and re-pushes every
node's assignment with the same tasks, so agents keep (adopt) the containers
they run: nothing is duplicated or lost. Until a node is polled it counts as
suspect: its tasks are kept and nothing new lands on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from ..shipped.exceptions import APIError, ProtocolError, StaleAssignment, SwarmletError, UsageError
from ..shipped.validate import check_ports, port_clashes, problems as validate_problems, validate_spec
from ..stack.compose import Stack
from ..stack.plan import plan_deploy
from ..stack.render import render_plan
from ..stack.service import STACK_LABEL
from ..shipped.models import Assignment, NodeInfo, NodeStatus, ServiceSpec, TaskSpec, TaskState, from_wire, to_wire
from . import views
from .agents import AgentClient, base_url
from .autoscale import AutoscalePolicy, Autoscaler
from .events import task_events
from .metrics import MasterObs, lb_watch
from .liveness import LivenessConfig, gossip_views, liveness
from .reconcile import Changes, Event, reconcile
from .state import (ACTIVE, DRAIN, RUNNING, SHUTDOWN, NodeRecord, Service, Task, assignment_tasks,
                    merge_observed, next_revision, node_status, replace, same_template)
from .store import Batch, Fence, Store
from . import rollout as ro
from ..shipped.discovery import assign_vips
from ..shipped.routes import ReplicaView, Route, build_routes

log = logging.getLogger("swarmlet.master")
_LOST = (NodeStatus.DOWN, NodeStatus.LEFT)


@dataclass(frozen=True)
class MasterConfig:
    poll_interval: float = 0.5
    stats_interval: float = 5.0
    tick_interval: float = 0.5
    reconcile_interval: float = 5.0
    gc_after: float = 60.0
    rebalance_window: float = 60.0
    request_timeout: float = 1.5
    liveness: LivenessConfig = LivenessConfig()
    ingress: bool = True            # run a load balancer for every published port
    ingress_bind: str = "0.0.0.0"
    autoscale: AutoscalePolicy = AutoscalePolicy()


@dataclass(frozen=True)
class _Staged:
    """A service write prepared in memory, committed with others in one batch."""

    svc: Service
    old: Optional[Service]
    events: List[Event]
    rollout: Optional[ro.Rollout]


@dataclass
class _Live:
    """What the master currently knows about one node (not persisted)."""

    status: NodeStatus = NodeStatus.SUSPECT
    reachable: bool = False
    failing_since: Optional[float] = None
    last_ok: Optional[float] = None
    ever_ready: bool = False
    lost: bool = False      # down or left since last ready: its return rebalances, even via suspect
    stats: Dict[str, Any] = field(default_factory=dict)
    stats_at: float = 0.0
    info: Dict[str, Any] = field(default_factory=dict)
    agent_version: int = -1
    content: Optional[Tuple[TaskSpec, ...]] = None
    routing: Tuple[Tuple[Route, ...], Tuple[str, ...]] = ((), ())   # shipped routes, draining
    pushing: bool = False
    repush: bool = False


class Master:
    def __init__(self, store: Store, client: AgentClient, cluster: Optional[Mapping[str, Any]] = None,
                 config: MasterConfig = MasterConfig(), clock: Callable[[], float] = time.time,
                 seed_nodes: Optional[List[Mapping[str, Any]]] = None,
                 ingress: Optional[Any] = None) -> None:
        self.store = store
        self.fence: Optional[Fence] = None     # set by an HA leader: its writes are fenced by term
        self.term = 0                           # the HA leader's term, sent in every assignment
        self.meta: Dict[str, Any] = {}          # the store's meta, as of the last load or write
        self.ingress = ingress          # swarmlet.shipped.ingress.Ingress, fed from routes()
        self._routes_dirty = asyncio.Event()
        self.client = client
        self.cluster = dict(cluster or {})
        self.cfg = config
        self.clock = clock
        self.services: Dict[str, Service] = {}
        self.specs: Dict[Tuple[str, int], ServiceSpec] = {}
        self.tasks: Dict[str, Task] = {}
        self.nodes: Dict[str, NodeRecord] = {}
        self.live: Dict[str, _Live] = {}
        self.gossip: Dict[str, str] = {}
        self.auto_rebalance = True
        self.started_at = clock()
        self._seed_nodes = list(seed_nodes or [])
        self._by_node: Dict[Optional[str], Set[str]] = {}
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._rebalance_until = 0.0
        self._loops: List["asyncio.Task[Any]"] = []
        self._node_loops: Dict[str, "asyncio.Task[Any]"] = {}
        self._bg: Set["asyncio.Task[Any]"] = set()
        self._members_rr = 0
        self.rollouts: Dict[str, ro.Rollout] = {}
        self._vips: Dict[str, str] = {}     # service -> virtual IP (stable while running)
        self.counters = {"reconcile_passes": 0, "pushes": 0, "push_failures": 0, "polls": 0,
                         "poll_failures": 0}
        self.obs = MasterObs()                  # metrics, live-view wakeups (metrics.py)
        self.autoscaler = Autoscaler(self)      # autoscale.py

    # --- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        snap = await asyncio.to_thread(self.store.load)
        self.services, self.specs, self.nodes, self.meta = (snap.services, snap.specs, snap.nodes,
                                                            dict(snap.meta))
        for t in snap.tasks.values():
            self._index(t)
        self.auto_rebalance = bool(snap.meta.get("auto_rebalance", True))
        if self.cluster:
            await self.write(Batch.of(meta={"cluster": self.cluster}))
        for name in self.nodes:
            self.live[name] = _Live()
        self._recover_rollouts()
        for n in self._seed_nodes:   # nodes joined while the master was not running
            if n.get("name") and n["name"] not in self.nodes:
                await self.register_node(n["name"], n["address"], int(n.get("api_port", 7443)),
                                         dict(n.get("labels") or {}))
        for name in list(self.nodes):
            self._start_node_loop(name)
        self._loops = [asyncio.create_task(self._tick_loop(), name="master-tick"),
                       asyncio.create_task(self._reconcile_loop(), name="master-reconcile")]
        if self.ingress is not None:
            self._loops.append(asyncio.create_task(self._ingress_loop(), name="master-ingress"))
        self._loops += [asyncio.create_task(lb_watch(self), name="master-lb-watch"),
                        asyncio.create_task(self.autoscaler.run(), name="master-autoscale")]
        self.kick()

    def _recover_rollouts(self) -> None:
        """After a restart: a service with tasks older than its template is mid-update."""
        now = self.clock()
        for name, svc in self.services.items():
            old = [t.revision for t in self.tasks.values()
                   if t.service == name and t.desired == RUNNING and t.revision < svc.current_from]
            if old:
                self.rollouts[name] = ro.Rollout(name, svc.revision, max(old), now)

    async def close(self) -> None:
        loops = self._loops + list(self._node_loops.values()) + list(self._bg)
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self.ingress is not None:
            await self.ingress.close()
        await self.client.close()

    def kick(self) -> None:
        self._kick.set()

    async def write(self, batch: Batch) -> int:
        """Persist one batch atomically (in a thread; fenced when this master is an HA leader)."""
        rev = await asyncio.to_thread(self.store.commit, batch, self.fence)
        self.meta.update(batch.meta)
        return rev

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # --- in-memory task index ---------------------------------------------------

    def _index(self, t: Task) -> None:
        old = self.tasks.get(t.task_id)
        if old is not None:
            self._by_node.get(old.node, set()).discard(t.task_id)
        self.tasks[t.task_id] = t
        self._by_node.setdefault(t.node, set()).add(t.task_id)

    def _unindex(self, task_id: str) -> None:
        old = self.tasks.pop(task_id, None)
        if old is not None:
            self._by_node.get(old.node, set()).discard(task_id)

    def tasks_on(self, node: str) -> List[Task]:
        return [self.tasks[i] for i in self._by_node.get(node, ())]

    async def _commit(self, changes: Changes, **more: Any) -> None:
        events = changes.events + task_events(self.tasks, changes.create + changes.update)
        await self.write(Batch.of(tasks=changes.create + changes.update,
                                  delete_tasks=changes.delete, events=events, **more))
        for t in changes.create + changes.update:
            self._index(t)
        for tid in changes.delete:
            self._unindex(tid)
        for e in events:
            log.info("%s %s: %s", e.kind, e.subject, e.message)
        self.obs.touch()

    # --- views ------------------------------------------------------------------

    def node_infos(self) -> List[NodeInfo]:
        out = []
        for name, rec in sorted(self.nodes.items()):
            live = self.live.get(name) or _Live()
            s = live.stats.get("node", {}) if isinstance(live.stats, dict) else {}
            out.append(NodeInfo(
                name=name, address=rec.address, api_port=rec.api_port,
                status=node_status(rec, live.status), labels=dict(rec.labels),
                version=str(live.info.get("version", "")),
                cpus=_num(s.get("cpus"), 1.0), cpu_percent=_num(s.get("cpu_percent"), 0.0),
                mem_used=int(_num(s.get("mem_used"), 0)), mem_total=int(_num(s.get("mem_total"), 0)),
                load1=_num(s.get("load1"), 0.0),
                tasks=sum(1 for t in self.tasks_on(name) if t.desired == RUNNING)))
        return out

    def nodes_view(self) -> List[Dict[str, Any]]:
        out = []
        for info in self.node_infos():
            live = self.live.get(info.name) or _Live()
            out.append(views.node_row(self.nodes[info.name], info, info.tasks, live.last_ok))
        return out

    def services_view(self) -> List[Dict[str, Any]]:
        tasks = list(self.tasks.values())
        return [{**views.service_row(self.services[n], tasks), "update": self.rollout_view(n)}
                for n in sorted(self.services)]

    def service_view(self, name: str) -> Dict[str, Any]:
        row = views.service_row(self._service(name), self.tasks.values())
        row["update"] = self.rollout_view(name)
        return row

    def tasks_view(self, service: Optional[str] = None, all_tasks: bool = False) -> List[Dict[str, Any]]:
        if service is not None and service not in self.services and not any(
                t.service == service for t in self.tasks.values()):
            raise APIError(f"no service {service!r}", status=404)
        rows = [t for t in self.tasks.values()
                if (service is None or t.service == service)
                and (all_tasks or t.desired == RUNNING or not t.state.terminal)]
        rows.sort(key=lambda t: (t.service, t.slot, t.desired != RUNNING, -t.created_at))
        return [views.task_row(t) for t in rows]

    def status_view(self) -> Dict[str, Any]:
        return views.status_summary(self.cluster, self.node_infos(), self.services,
                                    self.tasks.values(),
                                    {"auto_rebalance": self.auto_rebalance,
                                     "uptime": round(self.clock() - self.started_at, 1),
                                     "counters": dict(self.counters)})

    async def events_view(self, limit: int = 100, since: int = 0) -> List[Dict[str, Any]]:
        return await asyncio.to_thread(self.store.events, limit, since)

    # --- API mutations --------------------------------------------------------

    def _service(self, name: str) -> Service:
        svc = self.services.get(name)
        if svc is None:
            raise APIError(f"no service {name!r}", status=404)
        return svc

    def _node(self, name: str) -> NodeRecord:
        rec = self.nodes.get(name)
        if rec is None:
            raise APIError(f"no node {name!r}", status=404)
        return rec

    async def register_node(self, name: str, address: str, api_port: int = 7443,
                            labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        if not name or not address:
            raise UsageError("a node needs a name and an address")
        async with self._lock:
            old = self.nodes.get(name)
            if old is None:
                rec = NodeRecord(name, address, api_port, dict(labels or {}),
                                 registered_at=self.clock())
                msg = f"registered at {address}:{api_port}"
            else:
                rec = replace(old, address=address, api_port=api_port,
                              labels=dict(labels if labels is not None else old.labels))
                msg = f"updated: {address}:{api_port}"
            await self.write(Batch.of(nodes=[rec],
                                      events=[Event("node", name, msg)], now=self.clock()))
            self.nodes[name] = rec
            self.live.setdefault(name, _Live())
        if self._loops:
            self._start_node_loop(name)
        self.kick()
        return {"name": name, "address": address, "api_port": api_port, "registered": old is None}

    async def remove_node(self, name: str) -> None:
        async with self._lock:
            self._node(name)
            await self.write(Batch.of(delete_nodes=[name],
                                      events=[Event("node", name, "removed")], now=self.clock()))
            del self.nodes[name]
            self.live.pop(name, None)
            loop = self._node_loops.pop(name, None)
            if loop is not None:
                loop.cancel()
        self.kick()

    async def set_availability(self, name: str, availability: str) -> Dict[str, Any]:
        if availability not in (ACTIVE, DRAIN):
            raise UsageError(f"availability must be {ACTIVE} or {DRAIN}")
        async with self._lock:
            rec = self._node(name)
            if rec.availability != availability:
                rec = replace(rec, availability=availability)
                word = "draining" if availability == DRAIN else "active again"
                await self.write(Batch.of(nodes=[rec],
                                          events=[Event("node", name, word)], now=self.clock()))
                self.nodes[name] = rec
                if availability == ACTIVE and self.auto_rebalance:
                    self._rebalance_until = self.clock() + self.cfg.rebalance_window
        self.kick()
        return {"name": name, "availability": availability,
                "tasks": sum(1 for t in self.tasks_on(name) if t.desired == RUNNING)}

    def _stage_put(self, spec: ServiceSpec, now: float, rollback_of: Optional[int] = None,
                   scale_reason: Optional[str] = None) -> Optional["_Staged"]:
        """The new revision of ``spec`` and its events, not yet stored (None: unchanged)."""
        old = self.services.get(spec.name)
        if old is not None and old.spec == spec:
            return None
        svc = next_revision(old, spec, now)
        what = "created" if old is None else f"revision {svc.revision}"
        rollout = None
        if old is not None and svc.template_revision == svc.revision:
            what += (f": rolling back to revision {svc.revision} (the spec of an earlier one)"
                     if rollback_of is not None else ": rolling update started")
            rollout = ro.Rollout(spec.name, svc.revision, old.revision, now,
                                 status=ro.ROLLING_BACK if rollback_of is not None else ro.UPDATING,
                                 rollback_of=rollback_of)
        events = [Event("service", spec.name, what)]
        if old is not None and old.spec.replicas != spec.replicas:
            events.append(Event("scale", spec.name, scale_reason or
                                f"replicas {old.spec.replicas} -> {spec.replicas}"))
        return _Staged(svc, old, events, rollout)

    def _applied_put(self, st: "_Staged") -> None:
        """In memory, after the store has it."""
        self.services[st.svc.name] = st.svc
        self.specs[(st.svc.name, st.svc.revision)] = st.svc.spec
        if st.rollout is not None:
            self.rollouts[st.svc.name] = st.rollout

    def _stage_delete(self, name: str, now: float) -> List[Task]:
        return [replace(t, desired=SHUTDOWN, reason="service removed", updated_at=now)
                for t in self.tasks.values() if t.service == name and t.desired == RUNNING]

    def _applied_delete(self, name: str) -> None:
        del self.services[name]
        for key in [k for k in self.specs if k[0] == name]:
            del self.specs[key]

    async def put_service(self, spec: ServiceSpec, create_only: bool = False,
                          rollback_of: Optional[int] = None,
                          scale_reason: Optional[str] = None) -> Dict[str, Any]:
        validate_spec(spec)
        async with self._lock:
            old = self.services.get(spec.name)
            if old is not None and create_only:
                raise APIError(f"service {spec.name!r} exists", status=409)
            now = self.clock()
            st = self._stage_put(spec, now, rollback_of, scale_reason)
            if st is None:
                assert old is not None
                return {"name": spec.name, "revision": old.revision, "changed": False}
            check_ports([spec], {n: s.spec for n, s in self.services.items()})   # 409: one line
            await self.write(Batch.of(services=[st.svc], events=st.events, now=now))
            self._applied_put(st)
        self.kick()
        return {"name": spec.name, "revision": st.svc.revision, "changed": True,
                "created": old is None}

    async def apply_stack(self, stack: str, specs: List[ServiceSpec], prune: bool = False,
                          dry_run: bool = False, file: str = "",
                          warnings: Tuple[Any, ...] = ()) -> Dict[str, Any]:
        """A whole stack in one step: every spec judged, the plan made, and all of it stored in
        one transaction, or (any problem) nothing. ``dry_run``: the plan alone."""
        problems = [f"service {s.name!r}: {p}" for s in specs for p in validate_problems(s)]
        names = [s.name for s in specs]
        problems += [f"service {n!r} is in the stack twice" for n in sorted(set(names))
                     if names.count(n) > 1]
        problems += [f"service {s.name!r}: expected the label {STACK_LABEL}={stack}"
                     for s in specs if s.labels.get(STACK_LABEL) != stack]
        if problems:
            raise UsageError(f"stack {stack!r} not applied, nothing changed: " + "; ".join(problems))
        async with self._lock:
            current = {n: svc.spec for n, svc in self.services.items()}
            plan = plan_deploy(current, Stack(stack, tuple(specs), warnings=warnings, file=file),
                               prune)
            clashes = port_clashes(specs, current, [c.name for c in plan.remove])
            out = views.plan_view(plan, render_plan(plan))
            out["problems"] = [c.message for c in clashes]
            if dry_run:
                return {**out, "applied": []}
            if clashes:      # 409 as for one service, naming the stack that was not applied
                raise APIError(f"stack {stack!r} not applied, nothing changed: "
                               f"{clashes[0].message}", status=409)
            if not plan.has_changes:
                return {**out, "applied": []}
            now = self.clock()
            staged = [st for st in (self._stage_put(ch.new, now) for ch in plan.create + plan.update)
                      if st is not None]
            stopped: List[Task] = []
            events: List[Event] = []
            for st in staged:
                events += st.events
            for ch in plan.remove:
                stopped += self._stage_delete(ch.name, now)
                events.append(Event("service", ch.name, f"removed (stack {stack} pruned)"))
            await self._commit(Changes(update=stopped, events=events), now=now,
                               services=[st.svc for st in staged],
                               delete_services=[ch.name for ch in plan.remove])
            for st in staged:
                self._applied_put(st)
            for ch in plan.remove:
                self._applied_delete(ch.name)
        self.kick()
        applied = [{"name": st.svc.name, "action": "create" if st.old is None else "update",
                    "revision": st.svc.revision} for st in staged]
        applied += [{"name": ch.name, "action": "remove", "revision": None} for ch in plan.remove]
        return {**out, "applied": applied}

    async def patch_service(self, name: str, changes: Mapping[str, Any]) -> Dict[str, Any]:
        if "name" in changes and changes["name"] != name:
            raise UsageError("a service cannot be renamed")
        data = to_wire(self._service(name).spec)
        data.update(changes)
        try:
            spec = from_wire(ServiceSpec, data)
        except ProtocolError as exc:
            raise UsageError(f"bad service change: {exc}") from exc
        return await self.put_service(spec)

    async def delete_service(self, name: str) -> Dict[str, Any]:
        async with self._lock:
            self._service(name)
            now = self.clock()
            stopped = self._stage_delete(name, now)
            await self._commit(Changes(update=stopped, events=[Event("service", name, "removed")]),
                               delete_services=[name], now=now)
            self._applied_delete(name)
        self.kick()
        return {"name": name, "stopping": len(stopped)}

    async def rollback(self, name: str, to: Optional[int] = None) -> Dict[str, Any]:
        """Store an earlier revision's spec as the newest revision (``to``: which one;
        default the one before the current update, else the previous distinct spec)."""
        svc = self._service(name)
        if to is None:
            r = self.rollouts.get(name)
            if r is not None and r.revision == svc.revision and r.rollback_of is None:
                to = r.previous
            else:
                earlier = sorted((rev for (n, rev) in self.specs if n == name and rev < svc.current_from),
                                 reverse=True)
                to = next((rev for rev in earlier
                           if not same_template(self.specs[(name, rev)], svc.spec)), None)
            if to is None:
                raise UsageError(f"service {name!r} has no earlier revision to roll back to")
        spec = self.specs.get((name, to))
        if spec is None:
            raise APIError(f"service {name!r} has no revision {to}", status=404)
        out = await self.put_service(spec, rollback_of=svc.revision)
        return {**out, "to": to}

    def rollout_view(self, name: str) -> Optional[Dict[str, Any]]:
        r = self.rollouts.get(name)
        return r.view() if r is not None else None

    async def _check_rollouts(self) -> None:
        """Judge every rollout in progress; roll back a failed one (see ``rollout``)."""
        now = self.clock()
        for name, r in list(self.rollouts.items()):
            svc = self.services.get(name)
            if svc is None or svc.revision != r.revision:
                if svc is None:
                    del self.rollouts[name]
                continue
            new = ro.assess(r, svc, [t for t in self.tasks.values() if t.service == name], now)
            self.rollouts[name] = new
            if new.status == r.status:
                continue
            msg = {ro.COMPLETED: f"update to revision {r.revision} completed",
                   ro.ROLLED_BACK: f"rolled back: revision {r.revision} serves on every replica",
                   ro.PAUSED: f"update to revision {r.revision} paused: {new.reason}",
                   ro.FAILED: f"update to revision {r.revision} failed: {new.reason}; "
                              f"rolling back to revision {r.previous}"}.get(new.status, new.status)
            log.info("service %s: %s", name, msg)
            await self.write(Batch.of(events=[Event("service", name, msg)],
                                      now=now))
            if new.status == ro.FAILED:
                spec = self.specs.get((name, r.previous))
                if spec is not None:
                    await self.put_service(spec, rollback_of=r.revision)
                    if name in self.rollouts:   # the rollback carries why it happened
                        self.rollouts[name] = dataclasses.replace(
                            self.rollouts[name],
                            reason=f"update to revision {r.revision} failed: {new.reason}")

    async def rebalance(self) -> Dict[str, Any]:
        self._rebalance_until = self.clock() + self.cfg.rebalance_window
        moves = await self.reconcile_once(rebalance=True)
        return {"moving": moves}

    async def set_config(self, auto_rebalance: Optional[bool] = None) -> Dict[str, Any]:
        if auto_rebalance is not None:
            await self.write(Batch.of(meta={"auto_rebalance": bool(auto_rebalance)}))
            self.auto_rebalance = bool(auto_rebalance)
        return {"auto_rebalance": self.auto_rebalance}

    # --- reconcile ------------------------------------------------------------

    def _new_id(self, service: str, slot: int) -> str:
        return f"{service}.{slot}.{secrets.token_hex(3)}"

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.cfg.reconcile_interval)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.reconcile_once()
                await self._check_rollouts()
            except SwarmletError as exc:
                log.error("reconcile failed: %s", exc)
            except Exception:  # a bug: log it, keep the control loop alive
                log.exception("reconcile crashed")
                await asyncio.sleep(1.0)

    async def reconcile_once(self, rebalance: bool = False) -> int:
        """One pass; returns the number of rebalance moves started."""
        async with self._lock:
            now, t0 = self.clock(), time.perf_counter()
            rebalance = rebalance or now < self._rebalance_until
            ch = reconcile(self.services, list(self.tasks.values()), self.node_infos(), now,
                           self._new_id, rebalance=rebalance, gc_after=self.cfg.gc_after)
            self.counters["reconcile_passes"] += 1
            if not ch.empty or ch.events:
                await self._commit(ch, now=now)
            self._routes_dirty.set()   # before the push: the LB stops routing to stopped tasks first
            await self._sync_assignments()
            self.obs.reconciled(time.perf_counter() - t0)
            return sum(1 for e in ch.events if "rebalancing" in e.message)

    async def _sync_assignments(self) -> None:
        """Bump and push every node whose desired task set changed (lock held)."""
        bumped: List[NodeRecord] = []
        routing = (self.routes(), tuple(sorted(self._graceful())))
        for name, rec in self.nodes.items():
            live = self.live[name]
            content = assignment_tasks(name, self.tasks_on(name), self.specs)
            if content != live.content or routing != live.routing:
                live.content, live.routing = content, routing
                bumped.append(replace(rec, assignment_version=rec.assignment_version + 1))
        if not bumped:
            return
        await self.write(Batch.of(nodes=bumped))
        for rec in bumped:
            self.nodes[rec.name] = rec
            if self.live[rec.name].status not in _LOST:
                self._push(rec.name)

    def _push(self, name: str) -> None:
        live = self.live.get(name)
        if live is None:
            return
        if live.pushing:
            live.repush = True
            return
        live.pushing = True
        self._spawn(self._push_task(name))

    async def _push_task(self, name: str) -> None:
        try:
            for _ in range(3):
                rec, live = self.nodes.get(name), self.live.get(name)
                if rec is None or live is None or live.content is None:
                    return
                live.repush = False
                a = Assignment(name, rec.assignment_version, live.content, *live.routing,
                               term=self.term)
                try:
                    await self.client.put_assignment(base_url(rec.address, rec.api_port), a)
                    self.counters["pushes"] += 1
                    live.agent_version = max(live.agent_version, a.version)
                except StaleAssignment as exc:
                    if exc.term > self.term:
                        # A newer leader talks to this node: we are deposed; never leapfrog it.
                        log.warning("push to %s refused: %s", name, exc)
                        return
                    # The agent holds a newer version (e.g. a store restored from backup): leapfrog.
                    async with self._lock:
                        rec = replace(self.nodes[name], assignment_version=exc.current + 1)
                        await self.write(Batch.of(nodes=[rec]))
                        self.nodes[name] = rec
                    live.repush = True
                except SwarmletError as exc:
                    self.counters["push_failures"] += 1
                    log.debug("push to %s failed: %s", name, exc)
                    return   # the poll loop re-pushes once the agent answers again
                if not live.repush:
                    return
        finally:
            live = self.live.get(name)
            if live is not None:
                live.pushing = False

    # --- routing ----------------------------------------------------------------

    def routes(self) -> Tuple[Route, ...]:
        """The routing table: healthy replicas behind every published port."""
        addr = {n: rec.address for n, rec in self.nodes.items()
                if (self.live.get(n) or _Live()).status not in _LOST}
        reps = [ReplicaView(t.task_id, t.service, t.node, t.state, t.health, t.host_ports,
                            t.desired == RUNNING) for t in self.tasks.values()]
        order = [svc.name for svc in sorted(self.services.values(), key=lambda v: (v.created_at, v.name))]
        self._vips = assign_vips(order, self._vips)
        return build_routes([svc.spec for svc in self.services.values()], reps, addr, self._vips)

    def _graceful(self) -> Set[str]:
        """Tasks leaving the routes on purpose while still running: let them drain."""
        return {t.task_id for t in self.tasks.values()
                if t.desired == SHUTDOWN and t.state == TaskState.RUNNING
                and (self.live.get(t.node or "") or _Live()).status not in _LOST}

    async def _ingress_loop(self) -> None:
        """Apply the latest routes to the master's load balancers, one change at a time."""
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            try:
                await self.ingress.apply(self.routes(), self._graceful())
            except Exception:  # never let the front door's loop die
                log.exception("ingress update failed")
                await asyncio.sleep(1.0)

    # --- polling and liveness ---------------------------------------------------

    def _start_node_loop(self, name: str) -> None:
        if name not in self._node_loops or self._node_loops[name].done():
            self._node_loops[name] = asyncio.create_task(self._node_loop(name), name=f"poll-{name}")

    async def _node_loop(self, name: str) -> None:
        while name in self.nodes:
            rec, live = self.nodes[name], self.live[name]
            base = base_url(rec.address, rec.api_port)
            now = self.clock()
            self.counters["polls"] += 1
            try:
                version, reported = await self.client.tasks(base)
                if not live.info:
                    live.info = await self.client.info(base)
                if now - live.stats_at >= self.cfg.stats_interval:
                    live.stats = await self.client.stats(base)
                    live.stats_at = now
            except SwarmletError as exc:
                self.counters["poll_failures"] += 1
                if live.reachable or live.failing_since is None:
                    log.info("node %s unreachable: %s", name, exc)
                live.reachable = False
                if live.failing_since is None:
                    live.failing_since = now
            else:
                live.reachable, live.failing_since, live.last_ok = True, None, now
                live.agent_version = version
                await self._observe(name, reported)
                if live.content is not None and version < rec.assignment_version:
                    self._push(name)
            self._update_status(name)
            await asyncio.sleep(self.cfg.poll_interval)

    async def _observe(self, name: str, reported: List[Any]) -> None:
        async with self._lock:
            changed = merge_observed(name, self.tasks_on(name), reported, self.clock())
            if not changed:
                return
            await self._commit(Changes(update=changed))
        self._routes_dirty.set()
        self.kick()   # a task started, stopped, failed or changed health: reconcile reacts

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self._poll_members()
            except Exception:  # never let the liveness loop die
                log.exception("members poll crashed")
            for name in list(self.nodes):
                self._update_status(name)
            await asyncio.sleep(self.cfg.tick_interval)

    async def _poll_members(self) -> None:
        up = [n for n, l in self.live.items() if l.reachable and n in self.nodes]
        if not up:
            self.gossip = {}
            return
        self._members_rr += 1
        picks = [up[(self._members_rr + i) % len(up)] for i in range(min(2, len(up)))]
        results = await asyncio.gather(
            *(self.client.members(base_url(self.nodes[n].address, self.nodes[n].api_port))
              for n in picks if n in self.nodes), return_exceptions=True)
        lists = [r for r in results if isinstance(r, list)]
        if lists:
            self.gossip = gossip_views(lists)
            await self._learn_members(lists)

    async def _learn_members(self, lists: List[List[Dict[str, Any]]]) -> None:
        """Register alive gossip members the master does not know (joined while it was down)."""
        for members in lists:
            for m in members:
                name, meta = m.get("name"), m.get("meta") or {}
                if (name and name not in self.nodes and str(m.get("state")) == "alive"
                        and meta.get("address") and meta.get("api_port")):
                    await self.register_node(str(name), str(meta["address"]), int(meta["api_port"]),
                                             dict(meta.get("labels") or {}))

    def _update_status(self, name: str) -> None:
        rec, live = self.nodes.get(name), self.live.get(name)
        if rec is None or live is None:
            return
        # A node not polled yet since this master started is judged from the start,
        # not from its registration: a restarted master must not call every node down.
        new = liveness(self.clock(), live.reachable, live.failing_since, self.gossip.get(name),
                       max(rec.registered_at, self.started_at), self.cfg.liveness)
        if new == live.status:
            return
        old, live.status = live.status, new
        # A returning node often passes through suspect (gossip alive before its API
        # answers): down -> suspect -> ready is a recovery too.
        recovered = new == NodeStatus.READY and (old in _LOST or live.lost)
        if new in _LOST:
            live.lost = True
        joined = (new == NodeStatus.READY and not live.ever_ready
                  and rec.registered_at >= self.started_at)   # not the first poll after a restart
        if new == NodeStatus.READY:
            live.ever_ready = True
            live.lost = False
        if (recovered or joined) and self.auto_rebalance:
            self._rebalance_until = self.clock() + self.cfg.rebalance_window
        msg = f"{old.value} -> {new.value}"
        log.info("node %s: %s", name, msg)
        self._spawn(self.write(Batch.of(events=[Event("node", name, msg)])))
        self.obs.touch()   # the live views (top, dashboard) show it now
        if new == NodeStatus.READY and live.content is not None:
            self._push(name)
        self._routes_dirty.set()
        self.kick()


def _num(v: Any, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
