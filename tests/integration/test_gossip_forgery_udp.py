"""Issue 13, finding 8, on real UDP (127.0.0.x): the three forgeries of a gossip-key
holder against running gossip nodes — a max-incarnation ``Dead``, a max-epoch sender
spoof, and recorded ciphertext replayed after silence — and a revoked node shut out.

Like tests/unit/gossip/test_forgery.py, the first three speak only the public API and
adapt to the wire version, so they run against the code before the fix (and fail).
Timings are shortened through GossipConfig so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import socket
import time
from typing import List, Tuple

import pytest

from swarmlet.shipped.gossip import GossipConfig, MemberState, generate_key, start_gossip, wire
from swarmlet.shipped.gossip.crypto import Keyring
from swarmlet.shipped.gossip.transport import GossipNode

from tests.unit.gossip.test_forgery import MAX63, forge

pytestmark = pytest.mark.integration

FAST = dict(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05, suspicion_mult=2,
            push_pull_interval=2.0, reconnect_interval=2.0, meta_min_interval=0.1)


def config(**kw) -> GossipConfig:
    fields = {f.name for f in dataclasses.fields(GossipConfig)}
    return GossipConfig(**{k: v for k, v in {**FAST, **kw}.items() if k in fields})


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def _until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def _state(node: GossipNode, name: str):
    return next((m.state for m in node.members() if m.name == name), None)


def _meta(node: GossipNode, name: str):
    return next((m.meta for m in node.members() if m.name == name), None)


async def _cluster(n: int, key: bytes, cfg: GossipConfig) -> List[GossipNode]:
    secure = "identity" in inspect.signature(start_gossip).parameters
    nodes: List[GossipNode] = []
    port = _free_port("127.0.0.1")
    for i in range(n):
        host = f"127.0.0.{i + 1}"
        extra = {}
        if secure:
            from tests.unit.gossip.peers import identity, trust
            extra = dict(identity=identity(f"node-{i}"), trust=trust())
        nodes.append(await start_gossip(f"node-{i}", (host, port), keys=[key],
                                        meta={"address": host}, config=cfg,
                                        seeds=[nodes[0].address] if nodes else [], **extra))
    names = [x.name for x in nodes]
    assert await _until(lambda: all(_state(a, b) == MemberState.ALIVE
                                    for a in nodes for b in names), 15)
    return nodes


def _send_all(nodes: List[GossipNode], packets: List[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.66", 0))
        for node in nodes:
            for p in packets:
                s.sendto(p, node.address)


def _clock() -> int:
    return 1 if wire.WIRE_VERSION == 1 else wire.Stamper().next(time.time())


async def _close(nodes: List[GossipNode]) -> None:
    for n in nodes:
        await n.close()


async def test_udp_attack_1_max_incarnation_dead():
    key = generate_key()
    nodes = await _cluster(4, key, config())
    try:
        dead = wire.Dead(inc=MAX63, name="node-1", frm="node-2")
        _send_all(nodes, forge(Keyring([key]), "intruder", [dead], clock=_clock()))
        await asyncio.sleep(3.0)
        assert all(_state(n, "node-1") == MemberState.ALIVE for n in nodes if n.name != "node-1")
        assert all(n.stats()["internal_errors"] == 0 for n in nodes)
    finally:
        await _close(nodes)


async def test_udp_attack_2_spoofed_sender_with_the_largest_epoch():
    key = generate_key()
    nodes = await _cluster(4, key, config())
    try:
        _send_all(nodes, forge(Keyring([key]), "node-2", [wire.Ack(seq=1)], clock=MAX63))
        nodes[2].update_meta({"address": "127.0.0.3", "marker": 42})
        ok = await _until(lambda: all((_meta(n, "node-2") or {}).get("marker") == 42 and
                                      _state(n, "node-2") == MemberState.ALIVE
                                      for n in nodes if n is not nodes[2]), 5)
        assert ok, [(n.name, _state(n, "node-2"), _meta(n, "node-2")) for n in nodes]
    finally:
        await _close(nodes)


async def test_udp_attack_3_replayed_ciphertext_after_silence():
    key = generate_key()
    # The old code forgets a silent sender's replay window after replay_idle_ttl; the new
    # one refuses stamps older than max_clock_skew. Both shortened here.
    cfg = config(dead_reap_time=1.0, replay_idle_ttl=1.0, max_clock_skew=1.0)
    nodes = await _cluster(4, key, cfg)
    victim = nodes[3]
    recorded: List[Tuple[Tuple[str, int], bytes]] = []
    for n in nodes[:3]:
        real = n._on_datagram

        def tap(data, addr, _real=real, _to=n.address):
            if addr[0] == victim.address[0]:
                recorded.append((_to, data))
            _real(data, addr)
        n._on_datagram = tap
    try:
        victim.update_meta({"address": "127.0.0.4", "v": 1})
        await asyncio.sleep(1.0)
        assert recorded
        await victim.close()
        others = nodes[:3]
        assert await _until(lambda: all(_state(n, "node-3") is None for n in others), 30)
        await asyncio.sleep(3.0)            # silent longer than either window
        joins: List[str] = []
        for n in others:
            n.subscribe(lambda ev: ev.member.name == "node-3" and joins.append(ev.kind.value))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.66", 0))
            for to, data in list(recorded):
                s.sendto(data, to)
        await asyncio.sleep(1.0)
        assert "join" not in joins, joins    # (a zombie would be re-declared dead quickly)
        assert all(_state(n, "node-3") in (None, MemberState.DEAD) for n in others), \
            [(n.name, _state(n, "node-3")) for n in others]
    finally:
        await _close(nodes)


async def test_udp_a_revoked_node_is_shut_out():
    key = generate_key()
    nodes = await _cluster(4, key, config())
    from tests.unit.gossip.peers import identity
    try:
        serial = identity("node-3").cert.serial
        for n in nodes[:3]:
            n.set_revoked([serial])
        others = nodes[:3]
        assert all(_state(n, "node-3") == MemberState.DEAD for n in others)
        nodes[3].update_meta({"address": "127.0.0.4", "still": "here"})
        await asyncio.sleep(2.0)
        assert all(_state(n, "node-3") == MemberState.DEAD for n in others)
        assert all((_meta(n, "node-3") or {}).get("still") is None for n in others)
        assert sum(n.stats()["dropped_revoked"] for n in others) > 0
    finally:
        await _close(nodes)
