"""The master's embedded store: SQLite in WAL mode, with a schema version (``base.Store``).

Holds cluster config (``meta``), services and every revision of their specs,
tasks (desired and observed), nodes, secret and config versions (sealed: the
values are ciphertext, the key is not in this file, see ``vault``), and a
bounded event log. Every change
goes through ``commit(batch, fence)``, one transaction: a crash (even SIGKILL mid-write)
leaves either all of it or none of it. ``synchronous=FULL`` so a committed
change also survives power loss.

The store is synchronous and thread-safe (one connection behind a lock); the
daemon keeps its working state in memory and calls ``commit`` through
``asyncio.to_thread`` so the event loop never waits on the disk. Records are
stored as JSON of their wire form (``models.to_wire``) next to a few indexed
columns, and decoded with the validating ``from_wire``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ...shipped.exceptions import ConfigError, FencedOut, StoreError
from ...shipped.models import ServiceSpec, from_wire, to_wire
from ..state import NodeRecord, SecretVersion, Service, Task
from .base import Batch, Fence, Snapshot, Watcher

log = logging.getLogger("swarmlet.master.store")

SCHEMA_VERSION = 3
MAX_EVENTS = 10_000
_REVISION = "store_revision"        # meta key: the revision of the last commit
_RESERVED = {_REVISION, "schema_version"}

_SCHEMA = [
    # version 1
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS services (
        name TEXT PRIMARY KEY, revision INTEGER NOT NULL, template_revision INTEGER NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS revisions (
        name TEXT NOT NULL, revision INTEGER NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (name, revision));
    CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY, service TEXT NOT NULL, node TEXT, desired TEXT NOT NULL,
        data TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS tasks_service ON tasks (service);
    CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, message TEXT NOT NULL);
    """,
    # version 2: keyed events (one stored event per key: a failing slot's retries)
    """
    ALTER TABLE events ADD COLUMN key TEXT NOT NULL DEFAULT '';
    CREATE INDEX IF NOT EXISTS events_key ON events (key) WHERE key != '';
    """,
    # version 3: secrets and configs, one row per version (the value sealed, see vault.py)
    """
    CREATE TABLE IF NOT EXISTS secrets (
        kind TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (kind, name, version));
    """,
]


class SQLiteStore:
    def __init__(self, path: "str | os.PathLike[str]", max_events: int = MAX_EVENTS) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._watchers: List[Watcher] = []
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private(self.path)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the master store {self.path}: {exc}") from exc

    # --- schema -----------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key='schema_version'").fetchone()
                have = int(json.loads(row[0])) if row else 0
                if have > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path} has schema version {have}, this master knows up to "
                        f"{SCHEMA_VERSION}", hint="upgrade swarmlet on the admin host")
                for version in range(have + 1, SCHEMA_VERSION + 1):
                    for stmt in _SCHEMA[version - 1].split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                 (json.dumps(SCHEMA_VERSION),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(json.loads(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ------------------------------------------------------------

    def revision(self) -> int:
        with self._lock:
            return self._revision()

    def _revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (_REVISION,)).fetchone()
        return int(json.loads(row[0])) if row else 0

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """``callback(revision, batch)`` after each durable commit, in order (in the committing
        thread, under the store's lock: keep it short and never call the store from it)."""
        with self._lock:
            self._watchers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)
        return unsubscribe

    def load(self) -> Snapshot:
        snap = Snapshot()
        with self._lock:
            db = self._db
            db.execute("BEGIN")       # one consistent read of every table
            try:
                self._load_into(snap)
            finally:
                db.execute("COMMIT")
        return snap

    def _load_into(self, snap: Snapshot) -> None:
        db = self._db
        for key, value in db.execute("SELECT key, value FROM meta"):
            if key == _REVISION:
                snap.revision = int(json.loads(value))
                continue
            snap.meta[key] = json.loads(value)
        for name, rev, spec in db.execute("SELECT name, revision, spec FROM revisions"):
            snap.specs[(name, rev)] = from_wire(ServiceSpec, json.loads(spec))
        for name, rev, tmpl, created, updated in db.execute(
                "SELECT name, revision, template_revision, created_at, updated_at FROM services"):
            snap.services[name] = Service(snap.specs[(name, rev)], rev, created, updated, tmpl)
        for (data,) in db.execute("SELECT data FROM tasks"):
            t = from_wire(Task, json.loads(data))
            snap.tasks[t.task_id] = t
        for (data,) in db.execute("SELECT data FROM nodes"):
            n = from_wire(NodeRecord, json.loads(data))
            snap.nodes[n.name] = n
        for (data,) in db.execute("SELECT data FROM secrets"):
            sv = from_wire(SecretVersion, json.loads(data))
            snap.secrets[sv.key] = sv

    def revisions(self, name: str) -> List[Tuple[int, ServiceSpec, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT revision, spec, created_at FROM revisions WHERE name=? ORDER BY revision",
                (name,)).fetchall()
        return [(r, from_wire(ServiceSpec, json.loads(s)), c) for r, s, c in rows]

    def events(self, limit: int = 100, since_id: int = 0) -> List[Dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, kind, subject, message FROM events WHERE id > ? "
                "ORDER BY id DESC LIMIT ?", (since_id, limit)).fetchall()
        return [dict(id=i, ts=ts, kind=k, subject=s, message=m) for i, ts, k, s, m in reversed(rows)]

    # --- the one write path -------------------------------------------------

    def commit(self, batch: Batch, fence: Optional[Fence] = None) -> int:
        """Apply ``batch`` in one transaction: all of it, or (on any error) none. With ``fence``,
        only while ``meta[fence.key] == fence.value`` (else ``FencedOut``). Returns the revision."""
        ts = time.time() if batch.now is None else batch.now
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                if fence is not None:
                    row = db.execute("SELECT value FROM meta WHERE key=?", (fence.key,)).fetchone()
                    if row is None or json.loads(row[0]) != fence.value:
                        raise FencedOut(f"store write refused: {fence.key} is no longer "
                                        f"{fence.value!r}")
                for s in batch.services:
                    db.execute("INSERT OR IGNORE INTO revisions VALUES (?, ?, ?, ?)",
                               (s.name, s.revision, json.dumps(to_wire(s.spec)), s.updated_at))
                    db.execute("INSERT OR REPLACE INTO services VALUES (?, ?, ?, ?, ?)",
                               (s.name, s.revision, s.current_from, s.created_at, s.updated_at))
                for name in batch.delete_services:
                    db.execute("DELETE FROM services WHERE name=?", (name,))
                    db.execute("DELETE FROM revisions WHERE name=?", (name,))
                for t in batch.tasks:
                    db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?)",
                               (t.task_id, t.service, t.node, t.desired, json.dumps(to_wire(t))))
                for tid in batch.delete_tasks:
                    db.execute("DELETE FROM tasks WHERE task_id=?", (tid,))
                for n in batch.nodes:
                    db.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?)",
                               (n.name, json.dumps(to_wire(n))))
                for name in batch.delete_nodes:
                    db.execute("DELETE FROM nodes WHERE name=?", (name,))
                for sv in batch.secrets:
                    db.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?, ?, ?)",
                               (sv.kind, sv.name, sv.version, json.dumps(to_wire(sv))))
                for kind, name, version in batch.delete_secrets:
                    db.execute("DELETE FROM secrets WHERE kind=? AND name=? AND version=?",
                               (kind, name, version))
                for key, value in batch.meta.items():
                    if key in _RESERVED:
                        raise StoreError(f"meta key {key!r} is the store's own")
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
                if batch.events:
                    for e in batch.events:
                        if e.key:     # the newest event of a key replaces the older one
                            db.execute("DELETE FROM events WHERE key=?", (e.key,))
                        db.execute("INSERT INTO events (ts, kind, subject, message, key) "
                                   "VALUES (?, ?, ?, ?, ?)", (ts, e.kind, e.subject, e.message, e.key))
                    db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                               (self.max_events,))
                rev = self._revision() + 1
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_REVISION, json.dumps(rev)))
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"master store write failed: {exc}") from exc
                raise
            for w in list(self._watchers):
                try:
                    w(rev, batch)
                except Exception:  # a watcher's bug must not undo or block a durable commit
                    log.exception("store watcher failed")
            return rev


def _private(path: Path) -> None:
    """The store holds specs (env included) and sealed secrets: 0600 from its first byte.

    SQLite gives its -wal and -shm files the database file's mode, so setting it on the
    database before the first connect covers all three.
    """
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if extra.exists():
            os.chmod(extra, 0o600)
