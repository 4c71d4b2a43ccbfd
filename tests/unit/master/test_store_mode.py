"""The master's SQLite store is private to its owner (0600), old files included."""

import os
import stat

from swarmlet.master.store.sqlite import SQLiteStore


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_store_files_are_0600(tmp_path):
    db = tmp_path / "master" / "state.db"
    SQLiteStore(db)
    assert _mode(db) == 0o600
    for extra in (db.with_name("state.db-wal"), db.with_name("state.db-shm")):
        if extra.exists():
            assert _mode(extra) == 0o600, extra
    assert _mode(db.parent) == 0o700


def test_an_existing_world_readable_store_is_tightened(tmp_path):
    db = tmp_path / "state.db"
    SQLiteStore(db)
    os.chmod(db, 0o644)
    SQLiteStore(db)
    assert _mode(db) == 0o600
