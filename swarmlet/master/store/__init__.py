"""The master's store: the interface (``base``) and its implementations (``sqlite``).

See ``base`` for the contract, docs/internal-apis.md ("Master store") for the
same in prose, and ``tests/contracts/store.py`` for the suite every
implementation passes.
"""

from __future__ import annotations

from typing import Any

from .base import Batch, Fence, Snapshot, Store, Watcher
from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = ["Batch", "Fence", "Snapshot", "Store", "Watcher", "SQLiteStore", "SCHEMA_VERSION",
           "open_store"]


def open_store(path: Any) -> Store:
    """The store for a master's state path (today: SQLite at that path)."""
    return SQLiteStore(path)
