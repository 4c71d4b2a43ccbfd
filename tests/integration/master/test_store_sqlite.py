"""The SQLite store on a real file: the store contract, plus atomicity, crash safety, schema."""

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
from swarmlet.master.state import Task
from swarmlet.master.store import SCHEMA_VERSION, Batch, SQLiteStore
from tests.contracts.store import StoreContract

pytestmark = pytest.mark.integration


class TestSQLiteContract(StoreContract):
    @pytest.fixture
    def make(self, tmp_path):
        opened = []

        def make(reopen=None):
            if reopen is not None:
                reopen.close()
            st = SQLiteStore(tmp_path / "state.db")
            opened.append(st)
            return st
        yield make
        for st in opened:
            st.close()


def test_sqlite_specifics(tmp_path):
    st = SQLiteStore(tmp_path / "state.db")
    st.commit(Batch.of(meta={"cluster": {"id": "c1"}}))
    assert st.load().meta["schema_version"] == SCHEMA_VERSION
    assert st._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="store's own"):
        st.commit(Batch.of(meta={"store_revision": 0}))


def test_failed_commit_changes_nothing(tmp_path):
    st = SQLiteStore(tmp_path / "state.db")
    good = Task("a", "web", 1, 1)
    bad = Task("b", None, 2, 1)  # type: ignore[arg-type]  # violates NOT NULL mid-transaction
    with pytest.raises(StoreError, match="NOT NULL"):
        st.commit(Batch.of(tasks=[good, bad], events=[Event("t", "a", "m")]))
    assert st.load().tasks == {} and st.events() == []


def test_events_are_bounded(tmp_path):
    st = SQLiteStore(tmp_path / "state.db", max_events=5)
    for i in range(12):
        st.commit(Batch.of(events=[Event("k", "s", f"e{i}")]))
    assert [e["message"] for e in st.events(limit=100)] == [f"e{i}" for i in range(7, 12)]
    assert [e["message"] for e in st.events(limit=2)] == ["e10", "e11"]


def test_newer_schema_is_refused(tmp_path):
    SQLiteStore(tmp_path / "state.db").close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        SQLiteStore(tmp_path / "state.db")


def test_a_version_1_store_is_migrated_with_its_events(tmp_path):
    """Schema 2 adds the events' key column (keyed events, issue 20); old rows keep their ids."""
    from swarmlet.master.store.sqlite import _SCHEMA
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(_SCHEMA[0])
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO events (ts, kind, subject, message) VALUES (1.0, 'node', 'n1', 'ready')")
    db.commit()
    db.close()
    st = SQLiteStore(tmp_path / "state.db")
    assert st.schema_version == SCHEMA_VERSION == 3
    for i in (1, 2):
        st.commit(Batch.of(events=[Event("task", "bad.1", f"failed ({i})", "failed:bad:1")]))
    assert [(e["id"], e["message"]) for e in st.events()] == [(1, "ready"), (3, "failed (2)")]


def test_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "dir.db")


def test_sigkill_mid_writes_leaves_whole_commits(tmp_path):
    """A writer killed at a random point leaves only complete commits behind."""
    db = tmp_path / "state.db"
    code = textwrap.dedent(f"""
        import sys
        from swarmlet.master.store import Batch, SQLiteStore
        from swarmlet.master.state import Task
        st = SQLiteStore({str(db)!r})
        print("ready", flush=True)
        i = 0
        while i < 100000:
            # each commit writes a pair; both or neither must survive
            st.commit(Batch.of(tasks=[Task(f"a{{i}}", "web", i, 1), Task(f"b{{i}}", "web", i, 1)]))
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.4)  # let it write for a while (real process, real disk)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = SQLiteStore(db)
    assert st._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = set(st.load().tasks)
    n = len(ids) // 2
    assert n > 0
    assert ids == {f"a{i}" for i in range(n)} | {f"b{i}" for i in range(n)}
