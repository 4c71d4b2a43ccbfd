"""The master store contract (``swarmlet.master.store.base``): every implementation passes this.

Use it by subclassing ``StoreContract`` in a test module and giving it a
``make`` fixture: ``make()`` returns a store on fresh, empty state, and
``make(reopen=store)`` closes ``store`` and returns a new handle on the same
state (a restarted master). ``tests/integration/master/test_store_sqlite.py``
does it for SQLite; the etcd store does the same against a real etcd.
"""

from __future__ import annotations

import threading

import pytest

from swarmlet.master.reconcile import Event
from swarmlet.master.state import NodeRecord, SecretVersion, Task, next_revision
from swarmlet.master.store import Batch, Fence
from swarmlet.shipped.exceptions import FencedOut, StoreError
from swarmlet.shipped.models import Health, PortSpec, ServiceSpec, TaskState


def _svc(replicas=2, prev=None, image="img:1", now=1.0):
    return next_revision(prev, ServiceSpec("web", image, replicas=replicas,
                                           ports=(PortSpec(80, published=8080),)), now)


def _task(tid="web.1.a", **kw):
    base = dict(node="n1", state=TaskState.RUNNING, health=Health.HEALTHY,
                host_ports={"80/tcp": 32768}, created_at=1.0, updated_at=2.0)
    base.update(kw)
    return Task(tid, "web", 1, 1, **base)


class StoreContract:
    """Each test gets a fresh store from ``make``; nothing here knows the implementation."""

    def test_empty_store_loads_empty(self, make):
        st = make()
        snap = st.load()
        assert snap.services == {} and snap.tasks == {} and snap.nodes == {} and snap.specs == {}
        assert snap.revision == st.revision() >= 0
        assert st.events() == [] and st.revisions("web") == []

    def test_commit_round_trips_every_record_and_survives_reopen(self, make):
        st = make()
        s1 = _svc(2)
        s2 = _svc(3, prev=s1, now=2.0)
        t, n = _task(), NodeRecord("n1", "10.0.0.1", labels={"zone": "a"}, assignment_version=4)
        st.commit(Batch.of(services=[s1], tasks=[t], nodes=[n], meta={"cluster": {"id": "c1"}}))
        st.commit(Batch.of(services=[s2], events=[Event("service", "web", "scaled to 3")], now=5.0))
        rev = st.revision()
        st = make(reopen=st)
        snap = st.load()
        assert snap.services == {"web": s2} and snap.services["web"].current_from == 1
        assert snap.specs[("web", 1)].replicas == 2 and snap.specs[("web", 2)].replicas == 3
        assert snap.tasks == {t.task_id: t} and snap.nodes == {"n1": n}
        assert snap.meta["cluster"] == {"id": "c1"}
        assert snap.revision == rev == st.revision()
        assert [(r, s.replicas) for r, s, _ in st.revisions("web")] == [(1, 2), (2, 3)]
        events = st.events()
        assert [(e["kind"], e["subject"], e["message"], e["ts"]) for e in events] == [
            ("service", "web", "scaled to 3", 5.0)]

    def test_deletes_remove_records_and_every_revision(self, make):
        st = make()
        st.commit(Batch.of(services=[_svc()], tasks=[_task()], nodes=[NodeRecord("n1", "a")]))
        st.commit(Batch.of(delete_services=["web"], delete_tasks=["web.1.a"], delete_nodes=["n1"]))
        snap = st.load()
        assert not snap.services and not snap.tasks and not snap.nodes and not snap.specs
        assert st.revisions("web") == []

    def test_updates_replace_records(self, make):
        st = make()
        st.commit(Batch.of(tasks=[_task(state=TaskState.STARTING)], meta={"k": 1}))
        st.commit(Batch.of(tasks=[_task(state=TaskState.RUNNING, restarts=2)], meta={"k": 2}))
        snap = st.load()
        assert snap.tasks["web.1.a"].restarts == 2 and snap.meta["k"] == 2

    def test_every_commit_gets_a_higher_revision(self, make):
        st = make()
        revs = [st.commit(Batch.of(meta={"i": i})) for i in range(5)]
        assert revs == sorted(set(revs)) and revs[0] > st.load().revision - 5
        assert st.revision() == revs[-1] == st.load().revision

    def test_a_failed_commit_changes_nothing(self, make):
        st = make()
        st.commit(Batch.of(meta={"keep": True}))
        before = st.revision()
        bad = _task("b", host_ports={"80/tcp": object()})      # cannot be encoded
        with pytest.raises(Exception):
            st.commit(Batch.of(tasks=[_task("a"), bad], events=[Event("t", "a", "m")],
                               meta={"keep": False}))
        snap = st.load()
        assert snap.tasks == {} and st.events() == [] and snap.meta["keep"] is True
        assert st.revision() == before

    def test_fenced_commit_applies_only_while_the_fence_holds(self, make):
        st = make()
        st.commit(Batch.of(meta={"leader": "term-1"}))
        st.commit(Batch.of(tasks=[_task("a")]), Fence("leader", "term-1"))
        st.commit(Batch.of(meta={"leader": "term-2"}))      # another leader took over
        before = st.revision()
        with pytest.raises(FencedOut):
            st.commit(Batch.of(tasks=[_task("b")], events=[Event("t", "b", "m")]),
                      Fence("leader", "term-1"))
        with pytest.raises(FencedOut):
            st.commit(Batch.of(tasks=[_task("c")]), Fence("no-such-key", "x"))
        assert isinstance(FencedOut("x"), StoreError)
        assert set(st.load().tasks) == {"a"} and st.revision() == before and st.events() == []

    def test_watchers_see_every_commit_in_order(self, make):
        st = make()
        seen = []
        stop = st.watch(lambda rev, batch: seen.append((rev, dict(batch.meta))))
        r1 = st.commit(Batch.of(meta={"i": 1}))
        r2 = st.commit(Batch.of(meta={"i": 2}))
        stop()
        st.commit(Batch.of(meta={"i": 3}))
        assert seen == [(r1, {"i": 1}), (r2, {"i": 2})]

    def test_a_failed_commit_is_not_watched(self, make):
        st = make()
        seen = []
        st.watch(lambda rev, batch: seen.append(rev))
        with pytest.raises(FencedOut):
            st.commit(Batch.of(meta={"x": 1}), Fence("leader", "me"))
        assert seen == []

    def test_events_page_by_id(self, make):
        st = make()
        for i in range(6):
            st.commit(Batch.of(events=[Event("k", "s", f"e{i}")]))
        every = st.events(limit=100)
        assert [e["message"] for e in every] == [f"e{i}" for i in range(6)]
        assert [e["message"] for e in st.events(limit=2)] == ["e4", "e5"]       # the newest, in order
        assert [e["message"] for e in st.events(since_id=every[3]["id"])] == ["e4", "e5"]

    def test_a_keyed_event_replaces_the_one_with_its_key(self, make):
        """One failing slot is one event: the newest with a key replaces the older (issue 20)."""
        st = make()
        st.commit(Batch.of(events=[Event("task", "bad.1.a", "bad slot 1: failed", "failed:bad:1"),
                                   Event("node", "n1", "ready")]))
        for i in range(2, 6):
            st.commit(Batch.of(events=[Event("task", f"bad.1.{i}", f"bad slot 1: failed ({i} times)",
                                             "failed:bad:1")]))
        st.commit(Batch.of(events=[Event("k", "s", "x", "other"), Event("k", "s", "y", "other"),
                                   Event("k", "s", "plain"), Event("k", "s", "plain")]))
        rows = st.events(limit=100)
        assert [r["message"] for r in rows] == ["ready", "bad slot 1: failed (5 times)", "y",
                                                "plain", "plain"]
        assert rows[1]["subject"] == "bad.1.5"
        first = rows[0]["id"]
        st.commit(Batch.of(events=[Event("task", "bad.1.6", "bad slot 1: failed (6 times)",
                                         "failed:bad:1")]))
        newer = st.events(since_id=rows[-1]["id"])           # a follower sees the update again
        assert [r["message"] for r in newer] == ["bad slot 1: failed (6 times)"]
        st = make(reopen=st)
        assert [r["message"] for r in st.events(limit=100)] == [
            "ready", "y", "plain", "plain", "bad slot 1: failed (6 times)"]
        assert st.events(limit=100)[0]["id"] == first

    def test_concurrent_commits_all_land(self, make):
        st = make()
        revs = []
        lock = threading.Lock()

        def writer(k):
            for i in range(20):
                r = st.commit(Batch.of(tasks=[_task(f"t{k}.{i}")]))
                with lock:
                    revs.append(r)
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(st.load().tasks) == 80 and len(set(revs)) == 80

    def test_secret_versions_round_trip_watch_and_delete(self, make):
        """Versions of secrets and configs (sealed values): stored, watched, reloaded, deleted."""
        st = make()
        v1 = SecretVersion("secret", "db-password", 1, "v1.k.AAAA", 12, "fp1", 1.0, {"a": "b"})
        v2 = SecretVersion("secret", "db-password", 2, "v1.k.BBBB", 13, "fp2", 2.0)
        c1 = SecretVersion("config", "db-password", 1, "v1.k.CCCC", 3, "fp3", 3.0)
        seen = []
        stop = st.watch(lambda rev, batch: seen.append((batch.secrets, batch.delete_secrets)))
        st.commit(Batch.of(secrets=[v1, c1]))
        st.commit(Batch.of(secrets=[v2], delete_secrets=[("secret", "db-password", 1)]))
        stop()
        assert seen == [((v1, c1), ()), ((v2,), (("secret", "db-password", 1),))]
        st = make(reopen=st)
        snap = st.load()
        assert snap.secrets == {v2.key: v2, c1.key: c1}      # a kind is its own namespace
        st.commit(Batch.of(delete_secrets=[v2.key, c1.key]))
        assert make(reopen=st).load().secrets == {}
