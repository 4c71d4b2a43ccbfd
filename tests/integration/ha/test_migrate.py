"""SQLite -> etcd -> SQLite with nothing lost: every revision, tasks, nodes, meta, events."""

from __future__ import annotations

import uuid

import pytest

from swarmlet.ha import etcd as E
from swarmlet.master.reconcile import Event
from swarmlet.master.state import NodeRecord, Task, next_revision
from swarmlet.master.store import Batch, SQLiteStore
from swarmlet.master.store.etcd import EtcdStore
from swarmlet.master.store.migrate import copy, verify
from swarmlet.shipped.exceptions import StoreError
from swarmlet.shipped.models import ServiceSpec, TaskState

pytestmark = pytest.mark.integration


def _fill(st: SQLiteStore) -> None:
    s = None
    for i, (replicas, image) in enumerate([(2, "a:1"), (3, "a:1"), (3, "a:2"), (5, "a:2")]):
        s = next_revision(s, ServiceSpec("web", image, replicas=replicas), 10.0 + i)
        st.commit(Batch.of(services=[s], events=[Event("service", "web", f"revision {i + 1}")],
                           now=10.0 + i))
    other = next_revision(None, ServiceSpec("db", "pg:16"), 20.0)
    tasks = [Task(f"web.{i}.t", "web", i, 4, node=f"n{i % 3}", state=TaskState.RUNNING,
                  created_at=1.0, updated_at=2.0) for i in range(1, 2500)]
    st.commit(Batch.of(services=[other], tasks=tasks,
                       nodes=[NodeRecord(f"n{i}", f"10.0.0.{i}", labels={"z": str(i)},
                                         assignment_version=7 + i) for i in range(3)],
                       meta={"cluster": {"id": "c1", "name": "prod"}, "auto_rebalance": False,
                             "dashboard_token": "tok-secret"},
                       events=[Event("node", "n0", "registered"), Event("task", "web.1.t", "placed")],
                       now=30.0))
    st.commit(Batch.of(delete_tasks=["web.7.t"], events=[Event("task", "web.7.t", "removed")],
                       now=31.0))


def test_sqlite_to_etcd_and_back_loses_nothing(tmp_path, etcd1):
    src = SQLiteStore(tmp_path / "a.db")
    _fill(src)
    mid = EtcdStore(E.Etcd(etcd1.endpoints, etcd1.client), f"/swarmlet/{uuid.uuid4().hex[:8]}")
    back = SQLiteStore(tmp_path / "b.db")
    try:
        c = copy(src, mid)
        assert (c.services, c.revisions, c.tasks, c.nodes, c.events) == (2, 5, 2498, 3, 7)
        assert [r for r, _, _ in mid.revisions("web")] == [1, 2, 3, 4]
        assert mid.load().meta["dashboard_token"] == "tok-secret"
        copy(mid, back)
        verify(src, back)
        assert [e["id"] for e in mid.events(limit=100)] == [e["id"] for e in src.events(limit=100)]
        with pytest.raises(StoreError, match="not empty"):
            copy(src, mid)        # a second migration into a live store changes nothing
        verify(src, mid)
    finally:
        src.close()
        mid.close()
        back.close()
