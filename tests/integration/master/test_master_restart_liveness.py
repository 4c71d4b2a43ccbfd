"""A restarted master does not call nodes down before it has polled them,
however long ago they registered (regression: every node went down at start,
and their return then triggered a needless rebalance)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from swarmlet.master.agents import AgentClient
from swarmlet.master.daemon import Master, _Live
from swarmlet.master.state import NodeRecord
from swarmlet.master.store import Batch, SQLiteStore as Store
from swarmlet.shipped.models import NodeStatus

pytestmark = pytest.mark.integration


async def test_unpolled_nodes_stay_suspect_after_a_restart(tmp_path):
    store = Store(tmp_path / "state.db")
    await asyncio.to_thread(store.commit, Batch.of(nodes=[NodeRecord("n1", "127.0.0.1", 9, registered_at=1000.0)]))
    now = [1000.0 + 86400]                      # the master restarts a day later
    master = Master(store, AgentClient(ssl.create_default_context()), clock=lambda: now[0])
    snap = await asyncio.to_thread(store.load)
    master.nodes = snap.nodes
    master.live["n1"] = _Live()
    master._update_status("n1")
    assert master.live["n1"].status == NodeStatus.SUSPECT
    now[0] += 1.0                               # still within the grace of a first poll
    master._update_status("n1")
    assert master.live["n1"].status == NodeStatus.SUSPECT
    now[0] += 60.0                              # never answered since the restart: down
    master._update_status("n1")
    assert master.live["n1"].status == NodeStatus.DOWN
    await asyncio.sleep(0.05)                   # let the event commit finish
    await master.client.close()
    store.close()
