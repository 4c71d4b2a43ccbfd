"""The master store on a real SQLite file: round trips, atomicity, crash safety, schema."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from swarmlet.shipped.exceptions import ConfigError, StoreError
from swarmlet.master.reconcile import Event
from swarmlet.master.state import NodeRecord, Service, Task, next_revision
from swarmlet.master.store import SCHEMA_VERSION, Store
from swarmlet.shipped.models import Health, PortSpec, ServiceSpec, TaskState

pytestmark = pytest.mark.integration


def test_round_trip_survives_reopen(tmp_path):
    st = Store(tmp_path / "state.db")
    s1 = next_revision(None, ServiceSpec("web", "img:1", replicas=2,
                                         ports=(PortSpec(80, published=8080),)), 1.0)
    s2 = next_revision(s1, ServiceSpec("web", "img:1", replicas=3,
                                       ports=(PortSpec(80, published=8080),)), 2.0)
    t = Task("web.1.a", "web", 1, 1, node="n1", state=TaskState.RUNNING, health=Health.HEALTHY,
             host_ports={"80/tcp": 32768}, created_at=1.0, updated_at=2.0)
    n = NodeRecord("n1", "10.0.0.1", labels={"zone": "a"}, assignment_version=4)
    st.commit(services=[s1], tasks=[t], nodes=[n], meta={"cluster": {"id": "c1"}})
    st.commit(services=[s2], events=[Event("service", "web", "scaled to 3")])
    st.close()
    st = Store(tmp_path / "state.db")
    snap = st.load()
    assert snap.services == {"web": s2}
    assert snap.services["web"].current_from == 1          # scaling kept the template
    assert snap.specs[("web", 1)].replicas == 2 and snap.specs[("web", 2)].replicas == 3
    assert snap.tasks == {"web.1.a": t}
    assert snap.nodes == {"n1": n}
    assert snap.meta["cluster"] == {"id": "c1"} and snap.meta["schema_version"] == SCHEMA_VERSION
    assert [r for r, _, _ in st.revisions("web")] == [1, 2]
    assert [e["message"] for e in st.events()] == ["scaled to 3"]
    assert st._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.commit(delete_services=["web"], delete_tasks=["web.1.a"], delete_nodes=["n1"])
    snap = st.load()
    assert not snap.services and not snap.tasks and not snap.nodes and not snap.specs


def test_failed_commit_changes_nothing(tmp_path):
    st = Store(tmp_path / "state.db")
    good = Task("a", "web", 1, 1)
    bad = Task("b", None, 2, 1)  # type: ignore[arg-type]  # violates NOT NULL mid-transaction
    with pytest.raises(StoreError, match="NOT NULL"):
        st.commit(tasks=[good, bad], events=[Event("t", "a", "m")])
    assert st.load().tasks == {} and st.events() == []


def test_events_are_bounded(tmp_path):
    st = Store(tmp_path / "state.db", max_events=5)
    for i in range(12):
        st.commit(events=[Event("k", "s", f"e{i}")])
    assert [e["message"] for e in st.events(limit=100)] == [f"e{i}" for i in range(7, 12)]
    assert [e["message"] for e in st.events(limit=2)] == ["e10", "e11"]


def test_newer_schema_is_refused(tmp_path):
    Store(tmp_path / "state.db").close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        Store(tmp_path / "state.db")


def test_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        Store(tmp_path / "dir.db")


def test_sigkill_mid_writes_leaves_whole_commits(tmp_path):
    """A writer killed at a random point leaves only complete commits behind."""
    db = tmp_path / "state.db"
    code = textwrap.dedent(f"""
        import sys
        from swarmlet.master.store import Store
        from swarmlet.master.state import Task
        st = Store({str(db)!r})
        print("ready", flush=True)
        i = 0
        while i < 100000:
            # each commit writes a pair; both or neither must survive
            st.commit(tasks=[Task(f"a{{i}}", "web", i, 1), Task(f"b{{i}}", "web", i, 1)])
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.4)  # let it write for a while (real process, real disk)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = Store(db)
    assert st._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = set(st.load().tasks)
    n = len(ids) // 2
    assert n > 0
    assert ids == {f"a{i}" for i in range(n)} | {f"b{i}" for i in range(n)}
