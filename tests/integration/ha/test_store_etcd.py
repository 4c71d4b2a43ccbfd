"""The etcd store on a real etcd (loopback, TLS): the shared store contract, plus what etcd adds:
the leader fence, watches across masters (the hot copy), paging, transaction limits."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from swarmlet.ha import etcd as E
from swarmlet.ha.election import Elector
from swarmlet.master.reconcile import Event
from swarmlet.master.state import NodeRecord, Task
from swarmlet.master.store import Batch, Fence
from swarmlet.master.store.etcd import LEADER_FENCE, EtcdStore
from swarmlet.shipped.exceptions import FencedOut
from swarmlet.shipped.models import TaskState
from tests.contracts.store import StoreContract, _svc, _task

pytestmark = pytest.mark.integration


class TestEtcdContract(StoreContract):
    @pytest.fixture
    def make(self, etcd1):
        prefix = f"/swarmlet/{uuid.uuid4().hex[:8]}"
        opened = []

        def make(reopen=None):
            if reopen is not None:
                reopen.close()
            st = EtcdStore(E.Etcd(etcd1.endpoints, etcd1.client), prefix)
            opened.append(st)
            return st
        yield make
        for st in opened:
            st.close()


def _store(etcd, prefix="/swarmlet/t"):
    return EtcdStore(E.Etcd(etcd.endpoints, etcd.client), prefix)


def test_the_leader_fence_follows_the_election_key(etcd1):
    st = _store(etcd1, "/swarmlet/fence")
    el = Elector(E.Etcd(etcd1.endpoints, etcd1.client), "/swarmlet/fence", {"name": "a"})
    th = threading.Thread(target=el.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        while not el.is_leader() and time.monotonic() < deadline:
            time.sleep(0.05)
        term = el.state.term
        st.commit(Batch.of(tasks=[_task("a")]), Fence(LEADER_FENCE, term))
        el.resign(hold=30)
        while el.state.leader:
            time.sleep(0.05)
        before = st.revision()
        with pytest.raises(FencedOut):
            st.commit(Batch.of(tasks=[_task("b")]), Fence(LEADER_FENCE, term))
        assert set(st.load().tasks) == {"a"} and st.revision() == before
    finally:
        el.stop()
        th.join(10)
        st.close()


def test_a_follower_sees_the_leaders_commits_and_keeps_a_hot_copy(etcd3):
    leader = EtcdStore(E.Etcd(etcd3.endpoints[:1], etcd3.client), "/swarmlet/h")
    follower = EtcdStore(E.Etcd(etcd3.endpoints[2:], etcd3.client), "/swarmlet/h")
    seen = []
    follower.watch(lambda rev, b: seen.append((rev, b)))
    try:
        s1 = _svc(2)
        r1 = leader.commit(Batch.of(services=[s1], tasks=[_task("a")], nodes=[NodeRecord("n1", "x")],
                                    events=[Event("service", "web", "created")], now=3.0))
        r2 = leader.commit(Batch.of(services=[_svc(3, prev=s1)], delete_tasks=["a"],
                                    meta={"auto_rebalance": False}))
        r3 = leader.commit(Batch.of(delete_services=["web"], delete_nodes=["n1"]))
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r for r, _ in seen] == [r1, r2, r3]
        b1, b2, b3 = (b for _, b in seen)
        assert b1.services[0] == s1 and [t.task_id for t in b1.tasks] == ["a"]
        assert b1.nodes[0].name == "n1" and b1.events == (Event("service", "web", "created"),)
        assert b1.now == 3.0
        assert b2.delete_tasks == ("a",) and b2.meta == {"auto_rebalance": False}
        assert b2.services[0].revision == 2 and b2.services[0].current_from == 1
        assert b3.delete_services == ("web",) and b3.delete_nodes == ("n1",)
        hot = follower.load()     # from the copy, caught up with etcd
        cold = leader.load()
        assert hot == cold and hot.revision == r3
    finally:
        leader.close()
        follower.close()


def test_a_large_state_pages_and_a_large_commit_is_one_transaction(etcd1):
    st = _store(etcd1, "/swarmlet/big")
    try:
        tasks = [Task(f"web.{i}.x", "web", i, 1, node="n1", state=TaskState.RUNNING,
                      created_at=1.0, updated_at=2.0) for i in range(5000)]
        st.commit(Batch.of(services=[_svc(5000)], tasks=tasks))
        snap = st.load()
        assert len(snap.tasks) == 5000 and snap.tasks["web.4999.x"].slot == 4999
    finally:
        st.close()


def test_the_event_log_is_bounded(etcd1):
    st = EtcdStore(E.Etcd(etcd1.endpoints, etcd1.client), "/swarmlet/ev", max_events=5)
    try:
        for i in range(8):
            st.commit(Batch.of(events=[Event("k", "s", f"e{i}")]))
        assert [e["message"] for e in st.events(limit=100)] == [f"e{i}" for i in range(3, 8)]
    finally:
        st.close()


def test_a_full_etcd_member_refuses_in_one_line_and_loses_nothing(tmp_path):
    """etcd's space quota (a full disk looks the same to etcd: its NOSPACE alarm) refuses
    writes; the store says so in one line and everything committed before is still there."""
    from tests.tools.etcd import EtcdCluster
    from swarmlet.shipped.exceptions import StoreError
    c = EtcdCluster(tmp_path / "full", 1, quota_bytes=2 * 1024 * 1024)
    c.start()
    st = EtcdStore(E.Etcd(c.endpoints, c.client), "/swarmlet/full")
    try:
        st.commit(Batch.of(services=[_svc()], meta={"keep": "me"}))
        big = "x" * 200_000
        with pytest.raises(StoreError) as exc:
            for i in range(200):
                st.commit(Batch.of(meta={f"blob{i % 3}": big}))
        msg = str(exc.value)
        assert "out of space" in msg and "\n" not in msg, msg
        snap = st.load()
        assert snap.meta["keep"] == "me" and "web" in snap.services
    finally:
        st.close()
        c.stop()


def test_a_reconcile_pass_of_10000_tasks_is_stored_in_chunks_etcd_takes(etcd1):
    """A scale to 10,000 replicas: one batch of every task and its event is more than etcd
    takes in one transaction (the master refused it at every pass, so nothing ever ran);
    the master's chunks (``in_chunks`` at ``COMMIT_CHUNK``) are each stored."""
    from swarmlet.master.daemon import COMMIT_CHUNK
    from swarmlet.master.reconcile import Changes, in_chunks
    from swarmlet.shipped.exceptions import StoreError
    st = _store(etcd1, f"/swarmlet/{uuid.uuid4().hex[:8]}")
    tasks = [_task(f"big.{i}.x", node=f"n{i % 100}") for i in range(10_000)]
    events = [Event("task", t.task_id, f"big slot {i}: placed on {t.node}") for i, t in enumerate(tasks)]
    with pytest.raises(StoreError, match="too many operations"):
        st.commit(Batch.of(tasks=tasks, events=events))
    assert st.load().tasks == {}                       # all or nothing: nothing
    parts = in_chunks(Changes(create=tasks), COMMIT_CHUNK)
    assert len(parts) == 5
    by_id = {e.subject: e for e in events}
    for part in parts:
        st.commit(Batch.of(tasks=part.create, events=[by_id[t.task_id] for t in part.create]))
    assert len(st.load().tasks) == 10_000
    st.close()
