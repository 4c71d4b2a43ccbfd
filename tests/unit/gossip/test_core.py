"""The sans-I/O core driven by hand: incarnation rules, refutation, buddy system,
Lifeguard's suspicion timeout and local-health multiplier. Fake time throughout."""

from __future__ import annotations

import random
from typing import List

import pytest

from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.core import GossipCore
from swarmlet.shipped.gossip.crypto import Keyring, generate_key
from swarmlet.shipped.gossip.members import EventKind, MemberState, suspicion_timeout

pytestmark = pytest.mark.unit

RING = Keyring([generate_key()])
ADDR = {f"n{i}": (f"10.0.0.{i}", 7946) for i in range(1, 10)}


class Peer:
    """Crafts authentic packets from a named member."""

    def __init__(self, name: str) -> None:
        self.header = wire.Header(name, 1)
        self.seq = 0

    def packet(self, *msgs) -> bytes:
        self.seq += 1
        return RING.seal(wire.pack_items(self.header, self.seq, [wire.item(m) for m in msgs]))


def make(peers: int = 5, **cfg) -> GossipCore:
    core = GossipCore("n1", ADDR["n1"], keyring=RING, config=GossipConfig(**cfg), epoch=1,
                      rng=random.Random(4))
    core.seed_members([(f"n{i}", ADDR[f"n{i}"], 0, {}) for i in range(2, peers + 2)])
    return core


def decoded(sends) -> List[List[object]]:
    return [wire.decode_packet(RING.open(d)).messages for d, _ in sends]


def test_incarnation_rules():
    core, p = make(), Peer("n3")
    core.receive(p.packet(wire.Suspect(0, "n2", "n3")), ADDR["n3"], 0.0)
    assert core.state_of("n2") == MemberState.SUSPECT
    core.receive(p.packet(wire.Alive(0, "n2", *ADDR["n2"], {})), ADDR["n3"], 0.1)
    assert core.state_of("n2") == MemberState.SUSPECT      # alive needs a higher incarnation
    out = core.receive(p.packet(wire.Alive(1, "n2", *ADDR["n2"], {"x": 1})), ADDR["n3"], 0.2)
    assert core.state_of("n2") == MemberState.ALIVE
    assert [e.kind for e in out.events] == [EventKind.ALIVE, EventKind.UPDATE]
    core.receive(p.packet(wire.Dead(0, "n2", "n3")), ADDR["n3"], 0.3)
    assert core.state_of("n2") == MemberState.ALIVE        # stale death
    out = core.receive(p.packet(wire.Dead(1, "n2", "n2")), ADDR["n3"], 0.4)
    assert core.state_of("n2") == MemberState.LEFT and out.events[0].kind == EventKind.LEAVE
    out = core.receive(p.packet(wire.Alive(2, "n2", *ADDR["n2"], {})), ADDR["n3"], 0.5)
    assert core.state_of("n2") == MemberState.ALIVE and out.events[0].kind == EventKind.JOIN


def test_suspicion_about_self_is_refuted_with_a_higher_incarnation():
    core, p = make(), Peer("n3")
    core.update_meta({"cpu_percent": 1.0}, 0.0)              # incarnation 1
    core.receive(p.packet(wire.Suspect(1, "n1", "n3")), ADDR["n3"], 0.1)
    assert core.inc == 2 and core.stats["refutes"] == 1 and core.awareness == 1
    core.receive(p.packet(wire.Dead(5, "n1", "n3")), ADDR["n3"], 0.2)
    assert core.inc == 6
    core.receive(p.packet(wire.Suspect(3, "n1", "n3")), ADDR["n3"], 0.3)
    assert core.inc == 6                                      # older accusation: ignored
    # The refutation rides on the next packet out.
    sent = core.tick(10.0).sends
    alive = [m for msgs in decoded(sent) for m in msgs if isinstance(m, wire.Alive)]
    assert alive and alive[0].inc == 6 and alive[0].meta == {"cpu_percent": 1.0}


def test_buddy_system_ping_to_a_suspect_carries_the_suspicion():
    core = make(peers=1)                                      # only n2: every probe goes to it
    p3 = Peer("n3")
    core.receive(p3.packet(wire.Alive(0, "n3", *ADDR["n3"], {})), ADDR["n3"], 0.0)
    core.receive(p3.packet(wire.Suspect(0, "n2", "n3")), ADDR["n3"], 0.0)
    seen = False
    t = 0.0
    while t < 4 and not seen:
        t = core.next_deadline()
        for d, addr in core.tick(t).sends:
            msgs = wire.decode_packet(RING.open(d)).messages
            if addr == ADDR["n2"] and any(isinstance(m, wire.Ping) for m in msgs):
                assert wire.Suspect(0, "n2", "n3") in msgs or wire.Suspect(0, "n2", "n1") in msgs
                seen = True
    assert seen


def test_lifeguard_suspicion_timeout_shrinks_with_confirmations():
    lo, hi = 4.0, 24.0
    times = [suspicion_timeout(c, 2, lo, hi) for c in range(4)]
    assert times[0] == hi and times[2] == lo and times[3] == lo
    assert hi > times[1] > lo
    core = make(peers=6)                                     # n = 7: k = 2, min 4 s, max 24 s
    core.receive(Peer("n3").packet(wire.Suspect(0, "n2", "n3")), ADDR["n3"], 0.0)
    core.tick(23.0)
    assert core._nodes["n2"].suspicion.deadline == pytest.approx(24.0)
    core.receive(Peer("n4").packet(wire.Suspect(0, "n2", "n4")), ADDR["n4"], 1.0)
    core.receive(Peer("n4").packet(wire.Suspect(0, "n2", "n4")), ADDR["n4"], 1.1)  # same member twice
    assert core._nodes["n2"].suspicion.deadline == pytest.approx(times[1])
    core.receive(Peer("n5").packet(wire.Suspect(0, "n2", "n5")), ADDR["n5"], 2.0)
    out = core.tick(4.0)
    assert core.state_of("n2") == MemberState.DEAD
    assert [e.kind for e in out.events] == [EventKind.DEAD]


def test_failed_probes_raise_local_health_and_stretch_the_probe_interval():
    core = make(peers=1)                                     # n2 never answers
    probes: List[float] = []
    seqs = set()
    t = 0.0
    while t < 60:
        t = core.next_deadline()
        for d, addr in core.tick(t).sends:
            for m in wire.decode_packet(RING.open(d)).messages:
                if isinstance(m, wire.Ping) and m.seq not in seqs:   # not the re-ping
                    seqs.add(m.seq)
                    probes.append(t)
        if core.state_of("n2") == MemberState.DEAD:
            break
    gaps = [round(b - a, 6) for a, b in zip(probes, probes[1:])]
    assert gaps[:2] == [1.0, 2.0]          # 1 s, then x2 after one failed probe
    assert core.awareness >= 2


def test_a_successful_probe_lowers_local_health():
    core = make(peers=1)
    core.awareness = 3
    p2 = Peer("n2")
    t = 0.0
    while t < 30:
        t = core.next_deadline()
        for d, addr in core.tick(t).sends:
            for m in wire.decode_packet(RING.open(d)).messages:
                if isinstance(m, wire.Ping):
                    core.receive(p2.packet(wire.Ack(m.seq)), addr, t + 0.001)
    assert core.awareness == 0


def test_indirect_probe_is_relayed_and_nacked():
    core = make(peers=3)
    p = Peer("n3")
    out = core.receive(p.packet(wire.IndirectPing(77, "n2", *ADDR["n2"], True)), ADDR["n3"], 0.0)
    ping = [m for m in decoded(out.sends)[0] if isinstance(m, wire.Ping)][0]
    assert out.sends[0][1] == ADDR["n2"] and ping.target == "n2"
    relayed = core.receive(Peer("n2").packet(wire.Ack(ping.seq)), ADDR["n2"], 0.1)
    assert relayed.sends[0][1] == ADDR["n3"] and wire.Ack(77) in decoded(relayed.sends)[0]
    core.receive(p.packet(wire.IndirectPing(78, "n4", *ADDR["n4"], True)), ADDR["n3"], 1.0)
    nacks = [m for msgs in decoded(core.tick(1.5).sends) for m in msgs if isinstance(m, wire.Nack)]
    assert nacks == [wire.Nack(78)]


def test_misdirected_ping_is_not_acked():
    core = make()
    out = core.receive(Peer("n3").packet(wire.Ping(1, "someone-else")), ADDR["n3"], 0.0)
    assert not out.sends and core.stats["misdirected_pings"] == 1


def test_plaintext_needs_an_explicit_opt_in_and_meta_is_validated():
    with pytest.raises(ConfigError):
        GossipCore("a", ("h", 1), keyring=None)
    core = make()
    with pytest.raises(ConfigError):
        core.update_meta({"labels": {"k": "v" * 200}, "x": "y" * 250, "z": "w" * 250}, 0.0)
    with pytest.raises(ConfigError):
        core.update_meta({"nested": {"deep": {"no": 1}}}, 0.0)


def test_metadata_updates_are_coalesced_to_one_per_interval():
    core = make()                                             # meta_min_interval = 2 s
    assert [e.kind for e in core.update_meta({"cpu": 1}, 10.0).events] == [EventKind.UPDATE]
    assert core.inc == 1
    assert not core.update_meta({"cpu": 2}, 10.5).events      # held
    assert not core.update_meta({"cpu": 3}, 11.0).events      # replaces the held one
    assert core.inc == 1 and core.meta == {"cpu": 1}
    out = core.tick(12.0)
    assert [e.member.meta for e in out.events if e.kind == EventKind.UPDATE] == [{"cpu": 3}]
    assert core.inc == 2
    assert not core.update_meta({"cpu": 3}, 20.0).events      # unchanged: nothing to publish
