"""Rows of `swarmlet nodes` from the master's answer and from gossip members (pure)."""

from __future__ import annotations

import pytest

from swarmlet.cluster import NodeRecord
from swarmlet.provision.nodes_view import rows_from_gossip, rows_from_master

pytestmark = pytest.mark.unit

KEYS = {"name", "address", "status", "cpu_percent", "mem_percent", "tasks", "version", "labels"}


def test_gossip_rows_map_states_and_load():
    members = [
        {"name": "b", "address": "10.0.0.2", "port": 7946, "state": "alive",
         "meta": {"address": "10.0.0.2", "cpu_percent": 12.34, "mem_used": 1, "mem_total": 4,
                  "tasks": 3, "version": "0.1.0", "labels": {"zone": "a"}}},
        {"name": "a", "address": "10.0.0.1", "port": 7946, "state": "suspect", "meta": {}},
        {"name": "c", "address": "10.0.0.3", "port": 7946, "state": "left", "meta": {}},
        {"name": "d", "address": "10.0.0.4", "port": 7946, "state": "dead", "meta": {}},
    ]
    registry = [NodeRecord(name="e", address="10.0.0.5", ssh_host="10.0.0.5", labels={"k": "v"})]
    rows = rows_from_gossip(members, registry)
    assert [r["name"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert all(set(r) == KEYS for r in rows)
    by = {r["name"]: r for r in rows}
    assert by["b"]["status"] == "ready" and by["b"]["cpu_percent"] == 12.3
    assert by["b"]["mem_percent"] == 25.0 and by["b"]["tasks"] == 3 and by["b"]["labels"] == {"zone": "a"}
    assert by["a"]["status"] == "suspect" and by["a"]["mem_percent"] is None
    assert by["c"]["status"] == "left" and by["d"]["status"] == "down"
    # Registered but unknown to gossip: down, with its labels from the registry.
    assert by["e"]["status"] == "down" and by["e"]["labels"] == {"k": "v"}


def test_master_rows_accept_list_or_wrapped():
    node = {"name": "n1", "address": "10.0.0.1", "status": "draining", "cpu_percent": 50,
            "mem_used": 0, "mem_total": 0, "tasks": 2, "version": "0.1.0", "labels": {}}
    for data in ([node], {"nodes": [node]}):
        (row,) = rows_from_master(data)
        assert set(row) == KEYS
        assert row["status"] == "draining" and row["mem_percent"] is None and row["tasks"] == 2
