"""The store interface: everything the master persists goes through one of these.

(``base``: the types; ``swarmlet.master.store`` re-exports them with ``open_store``.)

The master keeps its working state in memory and never knows which store it
has (k3s keeps SQLite for one server and etcd for HA behind one interface; so
do we). The contract, in full in docs/internal-apis.md ("Master store"):

- ``load() -> Snapshot``: every service with every revision of its spec,
  tasks, nodes and meta, plus the store's ``revision`` at that moment;
- ``commit(batch, fence=None) -> int``: apply one ``Batch`` of changes
  atomically (all of it, or on any error nothing) and durably, and return the
  new revision (strictly greater than every earlier one). With a ``Fence``,
  the batch applies only if ``meta[fence.key] == fence.value`` at commit time,
  checked in the same transaction; otherwise ``FencedOut`` and nothing changes
  (a deposed leader's write fails instead of landing);
- ``watch(callback) -> unsubscribe``: ``callback(revision, batch)`` after every
  commit, in revision order, once the commit is durable;
- ``revision()``, ``revisions(service)``, ``events(limit, since_id)`` (the event
  log is bounded), ``close()``;
- ``Batch.secrets`` stores versions of secrets and configs (``SecretVersion``:
  the value sealed by ``master/vault.py``, never in clear); ``delete_secrets``
  removes versions by (kind, name, version); ``Snapshot.secrets`` has them all;
- an ``Event`` with a ``key`` replaces the stored event with the same key (it
  gets a new id, so a follower of ``since_id`` sees it again): a slot that
  keeps failing is one event, not one per attempt.

Implementations: ``sqlite.SQLiteStore`` (one master, embedded). An etcd one
(issue 15) must pass the same contract suite, ``tests/contracts/store.py``.
Stores are synchronous and thread-safe; the master calls them through
``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from ...shipped.models import ServiceSpec
from ..reconcile import Event
from ..state import NodeRecord, SecretKey, SecretVersion, Service, Task


@dataclass(frozen=True)
class Batch:
    """One atomic change. ``services`` stores each ``Service`` and its current revision's spec
    (earlier revisions stay); ``delete_services`` removes a service with every revision."""

    services: Tuple[Service, ...] = ()
    delete_services: Tuple[str, ...] = ()
    tasks: Tuple[Task, ...] = ()
    delete_tasks: Tuple[str, ...] = ()
    nodes: Tuple[NodeRecord, ...] = ()
    delete_nodes: Tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    events: Tuple[Event, ...] = ()
    now: Optional[float] = None      # the events' timestamp (default: the store's clock)
    secrets: Tuple[SecretVersion, ...] = ()      # versions of secrets/configs (sealed values)
    delete_secrets: Tuple[SecretKey, ...] = ()   # (kind, name, version)

    @classmethod
    def of(cls, *, services: Sequence[Service] = (), delete_services: Sequence[str] = (),
           tasks: Sequence[Task] = (), delete_tasks: Sequence[str] = (),
           nodes: Sequence[NodeRecord] = (), delete_nodes: Sequence[str] = (),
           meta: Optional[Mapping[str, Any]] = None, events: Sequence[Event] = (),
           now: Optional[float] = None, secrets: Sequence[SecretVersion] = (),
           delete_secrets: Sequence[SecretKey] = ()) -> "Batch":
        """A batch from any sequences (lists are frozen into tuples)."""
        return cls(tuple(services), tuple(delete_services), tuple(tasks), tuple(delete_tasks),
                   tuple(nodes), tuple(delete_nodes), dict(meta or {}), tuple(events), now,
                   tuple(secrets), tuple((str(k), str(n), int(v)) for k, n, v in delete_secrets))

    @property
    def empty(self) -> bool:
        return not (self.services or self.delete_services or self.tasks or self.delete_tasks
                    or self.nodes or self.delete_nodes or self.meta or self.events
                    or self.secrets or self.delete_secrets)


@dataclass(frozen=True)
class Fence:
    """Commit only while ``meta[key] == value`` (e.g. the leader's term)."""

    key: str
    value: Any


@dataclass
class Snapshot:
    services: Dict[str, Service] = field(default_factory=dict)
    specs: Dict[Tuple[str, int], ServiceSpec] = field(default_factory=dict)
    tasks: Dict[str, Task] = field(default_factory=dict)
    nodes: Dict[str, NodeRecord] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    revision: int = 0
    secrets: Dict[SecretKey, SecretVersion] = field(default_factory=dict)


Watcher = Callable[[int, Batch], None]


class Store(Protocol):
    def load(self) -> Snapshot: ...

    def commit(self, batch: Batch, fence: Optional[Fence] = None) -> int: ...

    def watch(self, callback: Watcher) -> Callable[[], None]: ...

    def revision(self) -> int: ...

    def revisions(self, name: str) -> List[Tuple[int, ServiceSpec, float]]: ...

    def events(self, limit: int = 100, since_id: int = 0) -> List[Dict[str, Any]]: ...

    def close(self) -> None: ...

