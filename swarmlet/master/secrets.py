"""The master's secrets and configs: versions, their users, rotation, and values for nodes.

Owns ``SecretBook``: every stored ``SecretVersion`` (in memory as the store has
them: sealed), the ``Vault`` that seals and opens them, and the commands of
``/v1/secrets`` and ``/v1/configs``:

- ``create`` stores version 1 (409 if the name exists);
- ``rotate`` stores the next version and, in the same transaction, a new
  revision of every service whose current spec mounts the name, with the new
  version pinned: the reconciler rolls them like any update (start-first,
  health-gated, automatic rollback to the previous revision, which pins the
  previous version);
- ``remove`` deletes every version, refused (409) while a service uses it, naming them.

A spec pins versions: ``resolve`` turns a reference's version 0 ("the newest")
into the newest stored version when a spec is stored, and refuses a name that
does not exist. ``stage`` makes a new version of a stack file's value only when
its fingerprint differs from the newest (a re-deploy of the same file changes
nothing). Old versions are pruned beyond ``KEEP`` per name, never one that a
service's current or previous revision mounts (a rollback needs it).

``values_for(tasks)`` opens the values an assignment's tasks mount (and only
those): the pusher sends them to that node alone. Nothing here logs or returns a
value; views are names, versions, sizes and dates.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..shipped import secretrefs
from ..shipped.exceptions import APIError, ConfigError, SwarmletError, UsageError
from ..shipped.models import SecretRef, SecretValue, ServiceSpec, TaskSpec
from .reconcile import Event
from .state import SecretKey, SecretVersion
from .store import Batch
from .vault import META_KEY, Vault, check_size

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master.secrets")
KEEP = 5            # versions kept per name (beyond those a current or previous revision mounts)
KINDS = secretrefs.KINDS


def decode_data(kind: str, name: str, data: Any) -> bytes:
    """A value sent as base64 text; its size judged by ``vault.check_size``."""
    if not isinstance(data, str):
        raise UsageError(f"expected the {kind} {name!r} value as base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"the {kind} {name!r} value is not valid base64") from exc
    check_size(kind, name, len(raw))
    return raw


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not secretrefs.NAME.fullmatch(name):
        raise UsageError(f"expected a {kind} name as {secretrefs.NAME_WHAT}, got {name!r}")


class SecretBook:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self.versions: Dict[SecretKey, SecretVersion] = {}
        self.vault: Optional[Vault] = None
        self.missing_key = ""          # why values cannot be opened here (no vault key)

    # --- start ---------------------------------------------------------------------------

    async def start(self, versions: Mapping[SecretKey, SecretVersion], kek: Optional[bytes],
                    cluster_id: str) -> None:
        """Unlock the data key with ``kek`` (making and storing one on first use)."""
        self.versions = dict(versions)
        if kek is None:
            self.missing_key = ("this master has no vault key (vault.key in its home): secrets and "
                                "configs cannot be stored or opened here")
            if self.versions:
                log.warning("%s", self.missing_key)
            return
        vault, meta = Vault.unlock(kek, self.m.meta.get(META_KEY), cluster_id)
        if meta is not None:
            await self.m.write(Batch.of(meta={META_KEY: meta}))
        self.vault = vault

    def _vault(self) -> Vault:
        if self.vault is None:
            raise ConfigError(self.missing_key or "secrets are not available on this master")
        return self.vault

    # --- reads -----------------------------------------------------------------------------

    def history(self, kind: str, name: str) -> List[SecretVersion]:
        return sorted((v for (k, n, _), v in self.versions.items() if k == kind and n == name),
                      key=lambda v: v.version)

    def newest(self, kind: str, name: str) -> Optional[SecretVersion]:
        h = self.history(kind, name)
        return h[-1] if h else None

    def names(self, kind: str) -> List[str]:
        return sorted({n for (k, n, _) in self.versions if k == kind})

    def users(self, kind: str, name: str) -> List[str]:
        """Services whose current spec mounts ``name``."""
        return sorted(svc.name for svc in self.m.services.values()
                      if any(k == kind and r.source == name for k, r in secretrefs.refs(svc.spec)))

    def row(self, kind: str, name: str) -> Dict[str, Any]:
        h = self.history(kind, name)
        if not h:
            raise APIError(f"no {kind} {name!r}", status=404)
        cur = h[-1]
        return {"name": name, "kind": kind, "version": cur.version, "size": cur.size,
                "created_at": h[0].created_at, "updated_at": cur.created_at,
                "labels": dict(cur.labels), "services": self.users(kind, name),
                "versions": [{"version": v.version, "size": v.size, "created_at": v.created_at}
                             for v in h]}

    def rows(self, kind: str) -> List[Dict[str, Any]]:
        return [self.row(kind, n) for n in self.names(kind)]

    # --- pinning versions in specs -------------------------------------------------------------

    def resolve(self, spec: ServiceSpec,
                staged: Optional[Mapping[Tuple[str, str], SecretVersion]] = None) -> ServiceSpec:
        """``spec`` with every version-0 reference pinned to the newest version (``staged``
        ones first); a missing name or version is a ``UsageError`` naming it."""
        staged = staged or {}
        fields: Dict[str, Tuple[SecretRef, ...]] = {}
        for kind in KINDS:
            out = []
            for ref in getattr(spec, kind + "s"):
                newest = staged.get((kind, ref.source)) or self.newest(kind, ref.source)
                if newest is None:
                    raise UsageError(
                        f"service {spec.name!r}: {kind} {ref.source!r} does not exist (create it "
                        f"with `swarmlet {kind} create {ref.source} FILE`, or define it in the "
                        "stack file)")
                if ref.version == 0:
                    ref = dataclasses.replace(ref, version=newest.version)
                elif (kind, ref.source, ref.version) not in self.versions and \
                        staged.get((kind, ref.source), newest).version != ref.version:
                    raise UsageError(f"service {spec.name!r}: {kind} {ref.source!r} has no "
                                     f"version {ref.version} (it was pruned or never made)")
                out.append(ref)
            fields[kind + "s"] = tuple(out)
        return dataclasses.replace(spec, **fields)

    def stage(self, kind: str, name: str, data: bytes, now: float,
              labels: Optional[Mapping[str, str]] = None) -> Optional[SecretVersion]:
        """The next version of ``name`` holding ``data``, or None if the newest holds it already."""
        check_name(kind, name)
        check_size(kind, name, len(data))
        vault = self._vault()
        fp = vault.fingerprint(kind, name, data)
        cur = self.newest(kind, name)
        if cur is not None and cur.fingerprint == fp:
            return None
        version = (cur.version if cur is not None else 0) + 1
        return SecretVersion(kind, name, version, vault.seal(kind, name, version, data), len(data),
                             fp, now, dict(labels if labels is not None else
                                           (cur.labels if cur is not None else {})))

    def prunable(self, kind: str, name: str, adding: int = 0) -> List[SecretKey]:
        """Versions past the newest ``KEEP`` (counting ``adding`` new ones) that no service's
        current or previous revision mounts."""
        h = self.history(kind, name)
        keep_from = len(h) + adding - KEEP
        if keep_from <= 0:
            return []
        used = set()
        for svc in self.m.services.values():
            for rev in (svc.revision, svc.revision - 1):
                spec = self.m.specs.get((svc.name, rev))
                if spec is not None:
                    used |= {(k, r.source, r.version) for k, r in secretrefs.refs(spec)}
        return [v.key for v in h[:keep_from] if v.key not in used]

    def applied(self, batch_secrets: Sequence[SecretVersion], deleted: Iterable[SecretKey]) -> None:
        """In memory, after the store has it."""
        for sv in batch_secrets:
            self.versions[sv.key] = sv
        for key in deleted:
            self.versions.pop(key, None)

    # --- commands ------------------------------------------------------------------------------

    async def create(self, kind: str, name: str, data: bytes,
                     labels: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        m = self.m
        check_name(kind, name)
        async with m.lock:
            if self.newest(kind, name) is not None:
                raise APIError(f"{kind} {name!r} exists; change it with `swarmlet {kind} rotate "
                               f"{name} FILE`", status=409)
            sv = self.stage(kind, name, data, m.clock(), labels or {})
            assert sv is not None
            await m.write(Batch.of(secrets=[sv], events=[Event(kind, name, "created (version 1)")],
                                   now=m.clock()))
            self.applied([sv], ())
        return {"name": name, "kind": kind, "version": sv.version}

    async def rotate(self, kind: str, name: str, data: bytes) -> Dict[str, Any]:
        """A new version, and a rolling update of every service that mounts ``name``."""
        m = self.m
        check_name(kind, name)
        async with m.lock:
            cur = self.newest(kind, name)
            if cur is None:
                raise APIError(f"no {kind} {name!r}", status=404)
            now = m.clock()
            sv = self.stage(kind, name, data, now)
            if sv is None:
                return {"name": name, "kind": kind, "version": cur.version, "changed": False,
                        "services": []}
            staged = []
            for svc_name in self.users(kind, name):
                spec = m.services[svc_name].spec
                refs = tuple(dataclasses.replace(r, version=sv.version) if r.source == name else r
                             for r in getattr(spec, kind + "s"))
                st = m.commands._stage_put(dataclasses.replace(spec, **{kind + "s": refs}), now)
                if st is not None:
                    staged.append(st)
            drop = self.prunable(kind, name, adding=1)
            events = [Event(kind, name, f"version {sv.version} created (rotated"
                            + (f"; rolling {', '.join(st.svc.name for st in staged)})"
                               if staged else ")"))]
            for st in staged:
                events += st.events
            await m.write(Batch.of(secrets=[sv], delete_secrets=drop, events=events, now=now,
                                   services=[st.svc for st in staged]))
            self.applied([sv], drop)
            for st in staged:
                m.commands._applied_put(st)
        if staged:
            m.kick()
        return {"name": name, "kind": kind, "version": sv.version, "changed": True,
                "services": [st.svc.name for st in staged]}

    async def remove(self, kind: str, name: str) -> Dict[str, Any]:
        m = self.m
        async with m.lock:
            h = self.history(kind, name)
            if not h:
                raise APIError(f"no {kind} {name!r}", status=404)
            users = self.users(kind, name)
            if users:
                raise APIError(f"{kind} {name!r} is in use by service{'s' if len(users) > 1 else ''} "
                               f"{', '.join(users)}: remove it from them first", status=409)
            keys = [v.key for v in h]
            await m.write(Batch.of(delete_secrets=keys, events=[Event(kind, name, "removed")],
                                   now=m.clock()))
            self.applied((), keys)
        return {"name": name, "kind": kind, "removed": len(keys)}

    # --- values for a node -------------------------------------------------------------------

    def values_for(self, tasks: Iterable[TaskSpec]) -> Tuple[SecretValue, ...]:
        """The values ``tasks`` mount, each once, opened for one node's assignment."""
        want = sorted({(k, r.source, r.version) for t in tasks for k, r in secretrefs.refs(t)})
        out = []
        for kind, name, version in want:
            sv = self.versions.get((kind, name, version))
            if sv is None or self.vault is None:
                continue          # the agent fails the task, naming what is missing
            try:
                data = self.vault.open(kind, name, version, sv.sealed)
            except SwarmletError as exc:
                log.warning("cannot open %s %s version %d: %s", kind, name, version, exc)
                continue
            out.append(SecretValue(kind, name, version, base64.b64encode(data).decode()))
        return tuple(out)
