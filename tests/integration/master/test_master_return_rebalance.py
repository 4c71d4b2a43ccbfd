"""A node that returns through ``suspect`` opens the auto-rebalance window like
one that goes straight from ``down`` to ``ready`` (regression, found by
bench/soak: a killed node came back down -> suspect -> ready, because its
gossip was alive before its API answered, and no replica ever moved back
onto it)."""

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


@pytest.fixture
async def master(tmp_path):
    store = Store(tmp_path / "state.db")
    await asyncio.to_thread(store.commit, Batch.of(nodes=[NodeRecord("n1", "127.0.0.1", 9, registered_at=0.0)]))
    now = [100.0]
    m = Master(store, AgentClient(ssl.create_default_context()), clock=lambda: now[0])
    m.nodes = (await asyncio.to_thread(store.load)).nodes
    m.live["n1"] = _Live(status=NodeStatus.READY, reachable=True, ever_ready=True)
    m.now = now
    yield m
    await asyncio.sleep(0.05)                   # let the event commits finish
    await m.client.close()
    store.close()


def _step(m: Master, *, reachable: bool, gossip: str, dt: float = 1.0) -> NodeStatus:
    m.now[0] += dt
    live = m.live["n1"]
    live.reachable = reachable
    if not reachable and live.failing_since is None:
        live.failing_since = m.now[0]
    if reachable:
        live.failing_since = None
    m.gossip = {"n1": gossip}
    m._update_status("n1")
    return live.status


@pytest.mark.parametrize("via_suspect", [False, True])
async def test_a_returning_node_opens_the_rebalance_window(master, via_suspect):
    assert _step(master, reachable=False, gossip="dead") == NodeStatus.DOWN
    master._rebalance_until = 0.0
    if via_suspect:      # rebooted: gossip sees it alive before its API answers
        assert _step(master, reachable=False, gossip="alive") == NodeStatus.SUSPECT
        assert master._rebalance_until == 0.0
    assert _step(master, reachable=True, gossip="alive") == NodeStatus.READY
    assert master._rebalance_until > master.now[0]


async def test_a_suspect_blip_of_a_ready_node_does_not_rebalance(master):
    assert _step(master, reachable=False, gossip="alive") == NodeStatus.SUSPECT
    master._rebalance_until = 0.0
    assert _step(master, reachable=True, gossip="alive") == NodeStatus.READY
    assert master._rebalance_until == 0.0
    # and once back, a later blip is again only a blip
    assert _step(master, reachable=False, gossip="dead") == NodeStatus.DOWN
    assert _step(master, reachable=True, gossip="alive") == NodeStatus.READY
    master._rebalance_until = 0.0
    assert _step(master, reachable=False, gossip="alive") == NodeStatus.SUSPECT
    assert _step(master, reachable=True, gossip="alive") == NodeStatus.READY
    assert master._rebalance_until == 0.0
