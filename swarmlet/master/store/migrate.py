"""Copy one master store into another, with nothing lost, and prove it (``master ha`` and back).

What moves: every service with every revision of its spec, tasks, nodes, secret
and config versions (still sealed: the data key travels wrapped in meta ``vault``), meta
(the cluster, ``auto_rebalance``, the dashboard token, the leader term) and the
event log with each event's id-order and timestamp. The source must be quiet
(its master stopped) and the destination empty; ``copy`` refuses a destination
that holds any record.

Records go in batches of ``CHUNK``. Events keep their timestamps: a store with
``restore_events(rows)`` (the etcd store: keys written with their original ids)
takes them in bulk; any other gets one commit per run of events that share a
timestamp (``Batch.now`` is per commit). ``verify`` reloads both sides and
compares everything, so a migration that lost anything fails loudly before the
caller switches stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from ...shipped.exceptions import StoreError
from ..reconcile import Event
from .base import Batch, Snapshot, Store

CHUNK = 1000
_OWN = {"schema_version", "store_revision"}
MAX_EVENTS = 1_000_000


@dataclass(frozen=True)
class Copied:
    services: int
    revisions: int
    tasks: int
    nodes: int
    meta: int
    events: int
    secrets: int = 0


def _chunks(items: List[Any], n: int = CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _is_empty(snap: Snapshot) -> bool:
    return not (snap.services or snap.specs or snap.tasks or snap.nodes or snap.secrets
                or set(snap.meta) - _OWN)


def copy(src: Store, dst: Store) -> Copied:
    snap = src.load()
    if not _is_empty(dst.load()) or dst.events(limit=1):
        raise StoreError("the destination store is not empty: refusing to mix two clusters' state",
                         hint="a second 'master ha' on a running HA cluster changes nothing")
    events = src.events(limit=MAX_EVENTS)
    # Every revision of each spec first (an older revision is stored as that revision's
    # Service row, then the current one overwrites the row).
    from ..state import Service
    # Each revision is written with its own created_at (a store keeps the first write of a
    # revision), then the service rows as they are.
    older: List[Service] = []
    for name, cur in sorted(snap.services.items()):
        for rev, spec, created in src.revisions(name):
            older.append(Service(spec, rev, cur.created_at, created, cur.template_revision))
    for part in _chunks(older):
        dst.commit(Batch.of(services=part))
    for part in _chunks(list(snap.services.values())):
        dst.commit(Batch.of(services=part))
    for part in _chunks(list(snap.tasks.values())):
        dst.commit(Batch.of(tasks=part))
    for part in _chunks(list(snap.nodes.values())):
        dst.commit(Batch.of(nodes=part))
    for part in _chunks(list(snap.secrets.values()), 50):   # up to 500 KiB each
        dst.commit(Batch.of(secrets=part))
    meta = {k: v for k, v in snap.meta.items() if k not in _OWN}
    if meta:
        dst.commit(Batch.of(meta=meta))
    restore = getattr(dst, "restore_events", None)
    if restore is not None:
        restore(events)
    else:
        run: List[Dict[str, Any]] = []
        for e in events + [None]:
            if run and (e is None or e["ts"] != run[0]["ts"] or len(run) >= CHUNK):
                dst.commit(Batch.of(events=[Event(r["kind"], r["subject"], r["message"])
                                            for r in run], now=run[0]["ts"]))
                run = []
            if e is not None:
                run.append(e)
    verify(src, dst)
    return Copied(len(snap.services), len(snap.specs), len(snap.tasks), len(snap.nodes),
                  len(meta), len(events), len(snap.secrets))


def _comparable(snap: Snapshot) -> Tuple[Any, ...]:
    return (snap.services, snap.specs, snap.tasks, snap.nodes, snap.secrets,
            {k: v for k, v in snap.meta.items() if k not in _OWN})


def verify(src: Store, dst: Store) -> None:
    """Both stores hold the same state and the same events (kind, subject, message, ts)."""
    a, b = src.load(), dst.load()
    if _comparable(a) != _comparable(b):
        raise StoreError("migration check failed: the stores differ after the copy; "
                         "nothing was switched")
    for name in a.services:
        if src.revisions(name) != dst.revisions(name):
            raise StoreError(f"migration check failed: revisions of {name} differ")
    ea = [(e["kind"], e["subject"], e["message"], e["ts"]) for e in src.events(limit=MAX_EVENTS)]
    eb = [(e["kind"], e["subject"], e["message"], e["ts"]) for e in dst.events(limit=MAX_EVENTS)]
    if ea != eb:
        raise StoreError(f"migration check failed: {len(ea)} events in the source, "
                         f"{len(eb)} in the destination")
