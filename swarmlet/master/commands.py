"""Commands: every change the API asks of the master (nodes, services, stacks, config).

Owns the write side of the API: each command checks its input (the one
validator, ``shipped/validate.py``), prepares the change in memory, stores it
in one batch (``Master.write``/``commit_changes``) and only then applies it to
the working state, then kicks the reconciler. A whole stack is judged, planned
(``stack.plan.plan_deploy``) and stored in one transaction, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple

from ..shipped.exceptions import APIError, ProtocolError, SwarmletError, UsageError
from ..shipped.models import ServiceSpec, from_wire, to_wire
from ..shipped.validate import (check_ports, check_routes, port_clashes, problems as validate_problems,
                                route_clashes, validate_spec)
from ..stack.compose import Stack
from ..stack.plan import plan_deploy
from ..stack.render import render_plan
from ..stack.service import STACK_LABEL
from . import rollout as ro
from . import views
from .poller import NodeLive
from .reconcile import Changes, Event
from .state import (ACTIVE, DRAIN, RUNNING, SHUTDOWN, NodeRecord, Service, Task, next_revision,
                    replace, same_template)
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master")


@dataclass(frozen=True)
class _Staged:
    """A service write prepared in memory, committed with others in one batch."""

    svc: Service
    old: Optional[Service]
    events: List[Event]
    rollout: Optional[ro.Rollout]


class Commands:
    def __init__(self, m: "Master") -> None:
        self.m = m

    def _service(self, name: str) -> Service:
        m = self.m
        svc = m.services.get(name)
        if svc is None:
            raise APIError(f"no service {name!r}", status=404)
        return svc

    def _node(self, name: str) -> NodeRecord:
        m = self.m
        rec = m.nodes.get(name)
        if rec is None:
            raise APIError(f"no node {name!r}", status=404)
        return rec

    async def register_seeds(self, only: Optional[Set[str]] = None) -> None:
        """Register (or re-address) the nodes of the admin host's nodes.json: the admin's record,
        never what gossip says about a node."""
        m = self.m
        try:
            seeds = await asyncio.to_thread(m.seed_source)
        except SwarmletError as exc:
            log.warning("cannot read the joined nodes: %s", exc)
            return
        for n in seeds:
            name = n.get("name")
            if not name or not n.get("address") or (only is not None and name not in only):
                continue
            old, port = m.nodes.get(name), int(n.get("api_port", 7443))
            if old is None or (old.address, old.api_port) != (n["address"], port):
                await self.register_node(name, n["address"], port,
                                         dict(n.get("labels") or {}) if old is None else None,
                                         change_address=True)

    async def register_node(self, name: str, address: str, api_port: int = 7443,
                            labels: Optional[Dict[str, str]] = None,
                            change_address: bool = False) -> Dict[str, Any]:
        m = self.m
        if not name or not address:
            raise UsageError("a node needs a name and an address")
        async with m.lock:
            old = m.nodes.get(name)
            if old is not None and (old.address, old.api_port) != (address, api_port) \
                    and not change_address:
                raise APIError(f"node {name!r} is registered at {old.address}:{old.api_port}; "
                               f"moving it to {address}:{api_port} needs change_address", status=409)
            if old is None:
                rec = NodeRecord(name, address, api_port, dict(labels or {}),
                                 registered_at=m.clock())
                msg = f"registered at {address}:{api_port}"
            else:
                rec = replace(old, address=address, api_port=api_port,
                              labels=dict(labels if labels is not None else old.labels))
                msg = f"updated: {address}:{api_port}"
            await m.write(Batch.of(nodes=[rec],
                                   events=[Event("node", name, msg)], now=m.clock()))
            m.nodes[name] = rec
            m.live.setdefault(name, NodeLive())
        if m.running:
            m.poller.start_node(name)
        m.kick()
        return {"name": name, "address": address, "api_port": api_port, "registered": old is None}

    async def remove_node(self, name: str) -> None:
        m = self.m
        async with m.lock:
            self._node(name)
            await m.write(Batch.of(delete_nodes=[name],
                                   events=[Event("node", name, "removed")], now=m.clock()))
            del m.nodes[name]
            m.live.pop(name, None)
            m.poller.stop_node(name)
            m.pusher.forget(name)
            m.edge.forget(name)
            m.certs.forget(name)
        await m.certs.revoke(name)   # refused by this master and every agent from now on
        m.kick()

    async def set_availability(self, name: str, availability: str) -> Dict[str, Any]:
        m = self.m
        if availability not in (ACTIVE, DRAIN):
            raise UsageError(f"availability must be {ACTIVE} or {DRAIN}")
        async with m.lock:
            rec = self._node(name)
            if rec.availability != availability:
                rec = replace(rec, availability=availability)
                word = "draining" if availability == DRAIN else "active again"
                await m.write(Batch.of(nodes=[rec],
                                       events=[Event("node", name, word)], now=m.clock()))
                m.nodes[name] = rec
                if availability == ACTIVE and m.auto_rebalance:
                    m.rebalance_until = m.clock() + m.cfg.rebalance_window
        m.kick()
        return {"name": name, "availability": availability,
                "tasks": sum(1 for t in m.tasks.on(name) if t.desired == RUNNING)}

    def _stage_certs(self, stack: str, specs: List[ServiceSpec],
                     certs: Tuple[Tuple[str, str, str], ...], now: float) -> Dict[str, Any]:
        """The stack's certificates judged and sealed (only those that changed), and every
        ``tls: manual`` spec checked against them or the stored ones; ``UsageError`` if not."""
        book = self.m.certbook
        staged: Dict[str, Any] = {}
        problems: List[str] = []
        for name, cert, key in certs:
            hosts = tuple(sorted({h for s in specs if s.edge.tls == "manual" and s.edge.cert == name
                                  for h in s.edge.hosts}))
            try:
                c, _ = book.stage("manual", name, cert, key, hosts, now)
            except UsageError as exc:
                problems.append(str(exc))
                continue
            old = book.get("manual", name)
            if old is None or old.fingerprint != c.fingerprint:
                staged[name] = c
        for s in specs:
            try:
                book.check_refs(s, staged)
            except UsageError as exc:
                problems.append(str(exc))
        if problems:
            raise UsageError(f"stack {stack!r} not applied, nothing changed: " + "; ".join(problems))
        return staged

    def _stage_put(self, spec: ServiceSpec, now: float, rollback_of: Optional[int] = None,
                   scale_reason: Optional[str] = None,
                   rollback_to: Optional[int] = None) -> Optional["_Staged"]:
        """The new revision of ``spec`` and its events, not yet stored (None: unchanged)."""
        m = self.m
        old = m.services.get(spec.name)
        if old is not None and old.spec == spec:
            return None
        svc = next_revision(old, spec, now)
        what = "created" if old is None else f"revision {svc.revision}"
        rollout = None
        if old is not None and svc.template_revision == svc.revision:
            what += ((f": rolling back to revision {rollback_to}" if rollback_to is not None
                      else ": rolling back") if rollback_of is not None else ": rolling update started")
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
        m = self.m
        m.services[st.svc.name] = st.svc
        m.specs[(st.svc.name, st.svc.revision)] = st.svc.spec
        if st.rollout is not None:
            m.rollouts[st.svc.name] = st.rollout
        if (st.old is not None and st.svc.spec.replicas < st.old.spec.replicas
                and m.auto_rebalance):
            # A scale-down stops the highest slots wherever they run, which can leave a
            # node with none while another keeps two: spread this service out again.
            m.rebalance_services[st.svc.name] = m.clock() + m.cfg.rebalance_window

    def _stage_delete(self, name: str, now: float) -> List[Task]:
        m = self.m
        return [replace(t, desired=SHUTDOWN, reason="service removed", updated_at=now)
                for t in m.tasks.values() if t.service == name and t.desired == RUNNING]

    def _applied_delete(self, name: str) -> None:
        m = self.m
        del m.services[name]
        for key in [k for k in m.specs if k[0] == name]:
            del m.specs[key]

    async def put_service(self, spec: ServiceSpec, create_only: bool = False,
                          rollback_of: Optional[int] = None,
                          scale_reason: Optional[str] = None,
                          rollback_to: Optional[int] = None) -> Dict[str, Any]:
        """``rollback_of``: the revision this write rolls back; ``rollback_to``: the revision
        whose spec it restores (named in the event)."""
        validate_spec(spec)
        async with self.m.lock:
            out = await self._put_locked(spec, create_only, rollback_of, scale_reason, rollback_to)
        if out["changed"]:
            self.m.kick()
        return out

    async def _put_locked(self, spec: ServiceSpec, create_only: bool = False,
                          rollback_of: Optional[int] = None,
                          scale_reason: Optional[str] = None,
                          rollback_to: Optional[int] = None) -> Dict[str, Any]:
        m = self.m
        old = m.services.get(spec.name)
        if old is not None and create_only:
            raise APIError(f"service {spec.name!r} exists", status=409)
        now = m.clock()
        spec = m.secretbook.resolve(spec)      # secret/config versions pinned (400 if missing)
        st = self._stage_put(spec, now, rollback_of, scale_reason, rollback_to)
        if st is None:
            assert old is not None
            return {"name": spec.name, "revision": old.revision, "changed": False}
        current = {n: s.spec for n, s in m.services.items()}
        m.certbook.check_refs(spec)     # a tls: manual certificate must be stored (400)
        check_ports([spec], current)    # 409: one line
        check_routes([spec], current)   # one host + path prefix per service, 409 likewise
        await m.write(Batch.of(services=[st.svc], events=st.events, now=now))
        self._applied_put(st)
        return {"name": spec.name, "revision": st.svc.revision, "changed": True,
                "created": old is None}

    async def apply_stack(self, stack: str, specs: List[ServiceSpec], prune: bool = False,
                          dry_run: bool = False, file: str = "",
                          warnings: Tuple[Any, ...] = (),
                          values: Tuple[Any, ...] = (),
                          certs: Tuple[Tuple[str, str, str], ...] = (),
                          skipped: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()) -> Dict[str, Any]:
        """A whole stack in one step: every spec judged, the plan made, and all of it stored in
        one transaction, or (any problem) nothing. ``dry_run``: the plan alone. ``values``:
        the stack file's secrets and configs, ``(kind, name, bytes)``: a changed one becomes a
        new version (in the same transaction) and the specs that mount it pin that version.
        ``certs``: the stack file's ``tls: {cert, key}`` pairs, ``(name, cert PEM, key PEM)``:
        judged (a mismatched pair is a 400, nothing applied) and stored with the stack, the key
        sealed (``certbook.py``). ``warnings`` and ``skipped`` (services whose profiles are
        off) are the loader's, shown in the plan."""
        m = self.m
        problems = [f"service {s.name!r}: {p}" for s in specs for p in validate_problems(s)]
        names = [s.name for s in specs]
        problems += [f"service {n!r} is in the stack twice" for n in sorted(set(names))
                     if names.count(n) > 1]
        problems += [f"service {s.name!r}: expected the label {STACK_LABEL}={stack}"
                     for s in specs if s.labels.get(STACK_LABEL) != stack]
        defined = [(k, n) for k, n, _ in values]
        problems += [f"{k} {n!r} is defined twice" for k, n in sorted(set(defined))
                     if defined.count((k, n)) > 1]
        if problems:
            raise UsageError(f"stack {stack!r} not applied, nothing changed: " + "; ".join(problems))
        async with m.lock:
            now = m.clock()
            book = m.secretbook
            new_values = [sv for sv in (book.stage(k, n, data, now) for k, n, data in values)
                          if sv is not None]
            staged_values = {(sv.kind, sv.name): sv for sv in new_values}
            resolved, unresolved = [], []
            for s in specs:
                try:
                    resolved.append(book.resolve(s, staged_values))
                except UsageError as exc:
                    unresolved.append(str(exc))
            if unresolved:
                raise UsageError(f"stack {stack!r} not applied, nothing changed: "
                                 + "; ".join(unresolved))
            specs = resolved
            staged_certs = self._stage_certs(stack, specs, certs, now)
            current = {n: svc.spec for n, svc in m.services.items()}
            plan = plan_deploy(current, Stack(stack, tuple(specs), warnings=warnings, file=file,
                                              skipped=tuple(skipped)), prune)
            removing = [c.name for c in plan.remove]
            clashes = port_clashes(specs, current, removing) + route_clashes(specs, current,
                                                                             removing)
            out = views.plan_view(plan, render_plan(plan))
            out["problems"] = [c.message for c in clashes]
            out["secrets"] = [{"kind": sv.kind, "name": sv.name, "version": sv.version}
                              for sv in new_values]        # names and versions, never values
            if new_values:
                out["text"] = (out.get("text") or "").rstrip("\n") + "\n" + "".join(
                    f"{sv.kind} {sv.name}: new version {sv.version}\n" for sv in new_values)
                out["has_changes"] = True
            if staged_certs:
                out["text"] = (out.get("text") or "").rstrip("\n") + "\n" + "".join(
                    f"certificate {c.name}: {', '.join(c.hosts)}, version {c.version}\n"
                    for c in staged_certs.values())
                out["has_changes"] = True
            if dry_run:
                return {**out, "applied": []}
            if clashes:      # 409 as for one service, naming the stack that was not applied
                raise APIError(f"stack {stack!r} not applied, nothing changed: "
                               f"{clashes[0].message}", status=409)
            if not plan.has_changes and not new_values and not staged_certs:
                return {**out, "applied": []}
            staged = [st for st in (self._stage_put(ch.new, now) for ch in plan.create + plan.update)
                      if st is not None]
            stopped: List[Task] = []
            events: List[Event] = []
            for st in staged:
                events += st.events
            for ch in plan.remove:
                stopped += self._stage_delete(ch.name, now)
                events.append(Event("service", ch.name, f"removed (stack {stack} pruned)"))
            events += [Event(sv.kind, sv.name, f"version {sv.version} created (stack {stack})")
                       for sv in new_values]
            events += [Event("cert", c.name, f"certificate {c.name} stored (stack {stack}): "
                                             f"{', '.join(c.hosts)}") for c in staged_certs.values()]
            drop = [k for sv in new_values for k in book.prunable(sv.kind, sv.name, adding=1)]
            await m.commit_changes(Changes(update=stopped, events=events), now=now,
                               services=[st.svc for st in staged],
                               delete_services=[ch.name for ch in plan.remove],
                               secrets=new_values, delete_secrets=drop,
                               meta={c.meta_key: to_wire(c) for c in staged_certs.values()})
            book.applied(new_values, drop)
            for c in staged_certs.values():
                m.certbook.applied(c)
            for st in staged:
                self._applied_put(st)
            for ch in plan.remove:
                self._applied_delete(ch.name)
        m.kick()
        applied = [{"name": st.svc.name, "action": "create" if st.old is None else "update",
                    "revision": st.svc.revision} for st in staged]
        applied += [{"name": ch.name, "action": "remove", "revision": None} for ch in plan.remove]
        return {**out, "applied": applied}

    async def patch_service(self, name: str, changes: Mapping[str, Any]) -> Dict[str, Any]:
        if "name" in changes and changes["name"] != name:
            raise UsageError("a service cannot be renamed")
        # Read, change and store under one hold of the lock: two concurrent PATCHes (a scale and
        # an env update) must not both start from the same spec, or the second one silently
        # undoes the first (found by the HA history check, tests/tools/history.py).
        async with self.m.lock:
            data = to_wire(self._service(name).spec)
            data.update(changes)
            try:
                spec = from_wire(ServiceSpec, data)
            except ProtocolError as exc:
                raise UsageError(f"bad service change: {exc}") from exc
            validate_spec(spec)
            out = await self._put_locked(spec)
        if out["changed"]:
            self.m.kick()
        return out

    async def delete_service(self, name: str) -> Dict[str, Any]:
        m = self.m
        async with m.lock:
            self._service(name)
            now = m.clock()
            stopped = self._stage_delete(name, now)
            await m.commit_changes(Changes(update=stopped, events=[Event("service", name, "removed")]),
                               delete_services=[name], now=now)
            self._applied_delete(name)
        m.kick()
        return {"name": name, "stopping": len(stopped)}

    async def rollback(self, name: str, to: Optional[int] = None) -> Dict[str, Any]:
        """Store an earlier revision's spec as the newest revision (``to``: which one;
        default the one before the current update, else the previous distinct spec)."""
        m = self.m
        svc = self._service(name)
        if to is None:
            r = m.rollouts.get(name)
            if r is not None and r.revision == svc.revision and r.rollback_of is None:
                to = r.previous
            else:
                earlier = sorted((rev for (n, rev) in m.specs if n == name and rev < svc.current_from),
                                 reverse=True)
                to = next((rev for rev in earlier
                           if not same_template(m.specs[(name, rev)], svc.spec)), None)
            if to is None:
                raise UsageError(f"service {name!r} has no earlier revision to roll back to")
        spec = m.specs.get((name, to))
        if spec is None:
            raise APIError(f"service {name!r} has no revision {to}", status=404)
        out = await self.put_service(spec, rollback_of=svc.revision, rollback_to=to)
        return {**out, "to": to}

    async def rebalance(self) -> Dict[str, Any]:
        m = self.m
        m.rebalance_until = m.clock() + m.cfg.rebalance_window
        moves = await m.reconcile_once(rebalance=True)
        return {"moving": moves}

    async def set_config(self, auto_rebalance: Optional[bool] = None) -> Dict[str, Any]:
        m = self.m
        if auto_rebalance is not None:
            await m.write(Batch.of(meta={"auto_rebalance": bool(auto_rebalance)}))
            m.auto_rebalance = bool(auto_rebalance)
        return {"auto_rebalance": m.auto_rebalance}
