"""Real gossip endpoints on 127.0.0.x UDP, with the real default timings."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import List

import pytest

from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.gossip import EventKind, GossipConfig, MemberState, generate_key, start_gossip
from swarmlet.shipped.gossip.transport import GossipNode

from tests.unit.gossip.peers import identity, trust

pytestmark = pytest.mark.integration


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def _until(cond, timeout: float) -> float:
    """Wall seconds until ``cond()`` holds (fails the test on timeout)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def _state(node: GossipNode, name: str):
    for m in node.members():
        if m.name == name:
            return m.state
    return None


@pytest.fixture
async def cluster():
    key = generate_key()
    nodes: List[GossipNode] = []
    port = _free_port("127.0.0.1")

    async def make(n: int, keys=None, config=None):
        for i in range(len(nodes), len(nodes) + n):
            host = f"127.0.0.{i + 1}"
            seeds = [nodes[0].address] if nodes else []
            node = await start_gossip(f"node-{i}", (host, port), keys=keys or [key],
                                      meta={"address": host, "api_port": 7443, "cpu_percent": 0.0},
                                      seeds=seeds, config=config, identity=identity(f"node-{i}"),
                                      trust=trust())
            nodes.append(node)
        return nodes

    yield make
    for n in nodes:
        await n.close()


async def test_members_converge_share_meta_and_leave(cluster):
    nodes = await cluster(4)
    names = [n.name for n in nodes]
    await _until(lambda: all(_state(a, b) == MemberState.ALIVE for a in nodes for b in names), 5)
    # Metadata changes reach everyone quickly (gossip, not push-pull).
    events = []
    nodes[0].subscribe(events.append)
    nodes[3].update_meta({"address": "127.0.0.4", "api_port": 7443, "cpu_percent": 42.5})
    await _until(lambda: all(m.meta.get("cpu_percent") == 42.5 for n in nodes
                             for m in n.members() if m.name == "node-3"), 2)
    assert any(e.kind == EventKind.UPDATE and e.member.name == "node-3" for e in events)
    # A graceful leave is known everywhere well within the 1 s target.
    t0 = time.monotonic()
    await nodes[2].leave()
    await _until(
        lambda: all(_state(n, "node-2") == MemberState.LEFT for n in nodes if n is not nodes[2]), 2)
    assert time.monotonic() - t0 < 1.0
    for n in nodes:
        s = n.stats()
        assert s["internal_errors"] == 0 and s["dropped_auth"] == 0 and s["dropped_replay"] == 0


async def test_killed_member_is_declared_dead_with_default_timings(cluster):
    nodes = await cluster(4)
    assert nodes[0]._core.config == GossipConfig()  # the real LAN defaults
    names = [n.name for n in nodes]
    await _until(lambda: all(_state(a, b) == MemberState.ALIVE for a in nodes for b in names), 5)
    await nodes[1].close()   # a crash: no leave message
    survivors = [n for n in nodes if n is not nodes[1]]
    took = await _until(lambda: all(_state(n, "node-1") == MemberState.DEAD for n in survivors), 30)
    # Probe round (<= 3 s for 3 peers) + suspicion >= 4 s min, shrinking from 24 s.
    assert 4.0 <= took < 30


async def test_foreign_key_packets_are_counted_and_ignored(cluster):
    nodes = await cluster(2)
    intruder = await start_gossip("intruder", ("127.0.0.9", _free_port("127.0.0.9")),
                                  keys=[generate_key()], seeds=[nodes[0].address], join_timeout=0.5,
                                  identity=identity("intruder"), trust=trust())
    try:
        assert all(m.name != "intruder" for m in nodes[0].members())
        assert nodes[0].stats()["dropped_auth"] >= 1
        assert len(intruder.members()) == 1
    finally:
        await intruder.close()


async def test_key_rotation_without_downtime(cluster):
    nodes = await cluster(2)
    await _until(lambda: _state(nodes[1], "node-0") == MemberState.ALIVE, 3)
    new = generate_key()
    for n in nodes:                      # 1. everyone accepts the new key
        n.keyring.add(new)
    nodes[0].keyring.use(new)            # 2. one side seals with it already
    nodes[0].update_meta({"address": "127.0.0.1", "api_port": 7443, "cpu_percent": 7.0})
    await _until(lambda: any(m.meta.get("cpu_percent") == 7.0 for m in nodes[1].members()), 3)
    old = nodes[1].keyring.keys[0]
    nodes[1].keyring.use(new)            # 3. everyone seals with it, then drops the old key
    for n in nodes:
        n.keyring.remove(old)
    nodes[1].update_meta({"address": "127.0.0.2", "api_port": 7443, "cpu_percent": 8.0})
    await _until(lambda: any(m.meta.get("cpu_percent") == 8.0 for m in nodes[0].members()), 3)
    assert all(n.stats()["dropped_auth"] == 0 for n in nodes)


async def test_bad_setup_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        await start_gossip("x", ("127.0.0.1", 0), keys=None)          # no key, no plaintext opt-in
    with pytest.raises(ConfigError):
        await start_gossip("x", ("127.0.0.1", 0), keys=[b"short"])
    with pytest.raises(ConfigError):
        await start_gossip("x", ("127.0.0.1", 0), keys=[generate_key()])   # no certificate
    with pytest.raises(ConfigError):
        await start_gossip("x", ("127.0.0.1", 0), keys=[generate_key()], cert=str(tmp_path / "c"),
                           key=str(tmp_path / "k"), ca=str(tmp_path / "ca"))
    with pytest.raises(ConfigError):                                  # someone else's certificate
        await start_gossip("x", ("127.0.0.1", 0), keys=[generate_key()], identity=identity("y"),
                           trust=trust())
    port = _free_port("127.0.0.1")
    a = await start_gossip("a", ("127.0.0.1", port), keys=[generate_key()], identity=identity("a"),
                           trust=trust())
    try:
        with pytest.raises(ConfigError):
            await start_gossip("b", ("127.0.0.1", port), keys=[generate_key()],
                               identity=identity("b"), trust=trust())
    finally:
        await a.close()


async def test_a_refused_start_leaves_the_port_free():
    port = _free_port("127.0.0.1")
    with pytest.raises(ConfigError):
        await start_gossip("x", ("127.0.0.1", port), keys=[generate_key()], identity=identity("y"),
                           trust=trust())
    a = await start_gossip("y", ("127.0.0.1", port), keys=[generate_key()], identity=identity("y"),
                           trust=trust())
    await a.close()
