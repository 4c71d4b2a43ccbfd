"""Issue 13, finding 8 — "a key holder can forge any member" — in the simulator.

The three attacks of the review, by someone who holds the cluster gossip key (and, in
the second half, by a compromised node that also holds its own certificate and key):

1. one ``Dead`` with the largest incarnation makes a live member unrefutable;
2. one packet claiming sender B with the largest epoch/stamp makes everyone drop B's
   real packets as replays;
3. recorded ciphertext is accepted again once its sender has been silent long enough,
   which brings a dead, reaped member back.

The first three tests speak only the public wire API and adapt to its version, so they
run against the code before the fix too (where they fail: the attacks work there).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Tuple

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.crypto import Keyring, generate_key
from swarmlet.shipped.gossip.members import EventKind, MemberState
from swarmlet.shipped.gossip.sim import SimNetwork

pytestmark = pytest.mark.unit

MAX63 = (1 << 63) - 1
ATTACKER = ("10.66.0.1", 7946)


def config(**kw) -> GossipConfig:
    fields = {f.name for f in dataclasses.fields(GossipConfig)}
    return GossipConfig(**{k: v for k, v in kw.items() if k in fields})


def forge(ring: Keyring, sender: str, msgs: list, clock: int = MAX63) -> List[bytes]:
    """What a holder of the cluster key alone can send, claiming to be ``sender``: the
    packet sealed with the key, in every envelope the receiving code knows."""
    items = [wire.item(m) for m in msgs]
    if wire.WIRE_VERSION == 1:
        return [ring.seal(wire.pack_items(wire.Header(sender, clock), 1, items))]
    from swarmlet.shipped.gossip import crypto
    plain = wire.pack_items(wire.Header(sender), clock, items)
    out = [ring.seal(plain)]                      # the cluster-key envelope
    # and a pair envelope whose key is the cluster key itself (the best guess it has)
    for sid in range(4):
        out.append(crypto.seal_pair(AESGCM(ring.primary), bytes(4), bytes(4), plain))
    return out


def inject_everywhere(net: SimNetwork, packets: List[bytes], src=ATTACKER) -> None:
    for node in list(net.nodes.values()):
        if node.up:
            for p in packets:
                net.inject(node.name, p, src)


def dead_msg(name: str, inc: int, frm: str):
    return wire.Dead(inc=inc, name=name, frm=frm)


def healthy(net: SimNetwork) -> None:
    for n in net.nodes.values():
        assert n.core.stats["internal_errors"] == 0


@pytest.mark.parametrize("inc", [MAX63, (1 << 53) - 2, 1000])
def test_attack_1_max_incarnation_dead_cannot_keep_a_live_member_dead(inc):
    ring = Keyring([generate_key()])
    net = SimNetwork(seed=1, keyring=ring, config=config(dead_reap_time=3600.0))
    net.add_converged(6)
    net.run_for(3)
    base = net.nodes["n1"].core.inc          # a run starts at its wall clock's seconds
    inc = inc if inc > base else base + inc  # 1000: just above what n1 signed
    inject_everywhere(net, forge(ring, "intruder", [dead_msg("n1", inc, "n2")],
                                 clock=_now_clock(net)))
    net.run_for(30)
    # n1 is alive and well everywhere (on the old code: dead until the one-hour reap).
    assert net.all_see("n1", MemberState.ALIVE)
    assert net.nodes["n1"].core.inc < base + 1000
    healthy(net)


def test_attack_2_a_spoofed_sender_cannot_silence_the_real_one():
    ring = Keyring([generate_key()])
    net = SimNetwork(seed=2, keyring=ring)
    net.add_converged(6)
    net.run_for(3)
    inject_everywhere(net, forge(ring, "n3", [wire.Ack(seq=1)], clock=MAX63))
    net.update_meta("n3", {"marker": 42})
    net.run_for(30)
    # Everyone still hears n3 itself: its news arrived and nobody suspects it.
    for node in net.live():
        if node.name != "n3":
            m = next(x for x in node.core.members() if x.name == "n3")
            assert m.state == MemberState.ALIVE and m.meta.get("marker") == 42, node.name
    healthy(net)


def test_attack_3_recorded_ciphertext_cannot_bring_back_a_reaped_member():
    ring = Keyring([generate_key()])
    net = SimNetwork(seed=3, keyring=ring, config=config(dead_reap_time=20.0))
    net.add_converged(5)
    victim = net.nodes["n4"]
    recorded: List[Tuple[str, bytes]] = []
    for node in net.nodes.values():       # the attacker's tap on the wire
        _record_from(node, victim.addr, recorded)
    net.run_for(10)
    net.update_meta("n4", {"v": 1})       # n4 says things about itself, on the record
    net.run_for(10)
    assert recorded
    net.kill("n4")
    assert net.run_until_true(lambda: net.all_see("n4", MemberState.DEAD), 60) is not None
    net.run_for(30)                        # reaped: n4 is forgotten everywhere
    assert all(n.core.state_of("n4") is None for n in net.live())
    net.run_for(150)                       # silent for longer than any replay window
    log: List[str] = []
    net.observers.append(lambda t, obs, ev: ev.member.name == "n4" and log.append(ev.kind))
    for to, data in list(recorded):
        if to in net.nodes and net.nodes[to].up:
            net.inject(to, data, victim.addr)
    net.run_for(5)
    assert EventKind.JOIN not in log
    assert all(n.core.state_of("n4") in (None, MemberState.DEAD) for n in net.live())
    healthy(net)


def _record_from(node, src_addr, out: List[Tuple[str, bytes]]) -> None:
    real = node.core.receive

    def tapped(data, addr, now, _real=real, _name=node.name):
        if addr == src_addr:
            out.append((_name, data))
        return _real(data, addr, now)
    node.core.receive = tapped


def _now_clock(net: SimNetwork) -> int:
    # v2: a fresh stamp for the attacker's clock; v1: any epoch works.
    if wire.WIRE_VERSION == 1:
        return 1
    return wire.Stamper().next(net.wall0 + net.now)


# --- a compromised node: the cluster key plus its own certificate and key ------------

def _cluster(n: int = 6, **cfg):
    ring = Keyring([generate_key()])
    net = SimNetwork(seed=7, keyring=ring, config=config(**cfg))
    net.add_converged(n)
    net.run_for(3)
    return net


def _as(net: SimNetwork, sender: str, to: str, msgs: list, stamp=None, inner: str = None) -> bytes:
    """A packet sealed by ``sender`` (with its real certificate) for ``to``."""
    core = net.nodes[sender].core
    target = net.nodes[to].core
    stamp = stamp if stamp is not None else core._stamper.next(net.wall0 + net.now)
    plain = wire.pack_items(wire.Header(inner or sender), stamp, [wire.item(m) for m in msgs])
    return core.sessions.seal(target.identity.cert, plain)


def _from_everywhere(net, sender, msgs, **kw):
    for node in list(net.live()):
        if node.name != sender:
            net.inject(node.name, _as(net, sender, node.name, msgs, **kw),
                       net.nodes[sender].addr)


def test_a_compromised_node_cannot_kill_others_beyond_what_they_signed():
    net = _cluster()
    base = net.nodes["n1"].core.inc
    _from_everywhere(net, "n5", [wire.Dead("n1", (1 << 53) - 2, "n5"),
                                 wire.Dead("n2", net.nodes["n2"].core.inc + 10 ** 9, "n5")])
    net.run_for(30)
    assert net.all_see("n1", MemberState.ALIVE) and net.all_see("n2", MemberState.ALIVE)
    assert sum(n.core.stats["refused_claims"] for n in net.live()) >= 8
    # At what they did sign, an accusation is just a suspicion they refute at once.
    _from_everywhere(net, "n5", [wire.Dead("n1", net.nodes["n1"].core.inc, "n5")])
    t = net.run_until_true(lambda: net.all_see("n1", MemberState.ALIVE), 10)
    assert t is not None and net.nodes["n1"].core.inc <= base + 3
    healthy(net)


def test_a_compromised_node_cannot_speak_for_another():
    net = _cluster()
    n1 = net.nodes["n1"].core
    # Claiming to be n2 inside its own envelope: refused as unauthenticated.
    _from_everywhere(net, "n5", [wire.Ack(1)], inner="n2", stamp=MAX63 >> 1)
    assert all(n.core.stats["dropped_auth"] >= 1 for n in net.live() if n.name not in ("n5",))
    # Signing n2's record or liveness with its own key: bad signatures, nothing changes.
    fake = n1.record._replace(name="n2", host="10.66.6.6")
    _from_everywhere(net, "n5", [fake, wire.Alive("n2", 99, n1.record.sig),
                                 wire.Leave("n2", 5, n1.record.sig)])
    net.run_for(10)
    assert net.all_see("n2", MemberState.ALIVE)
    assert all(next(m for m in n.core.members() if m.name == "n2").host != "10.66.6.6"
               for n in net.live())
    # Its own stamp pushed to the end of time is stale, not a poisoned window.
    _from_everywhere(net, "n5", [wire.Ack(1)], stamp=MAX63)
    assert all(n.core.stats["dropped_stale"] >= 1 for n in net.live() if n.name != "n5")
    net.run_for(20)
    assert net.converged()
    healthy(net)


def test_replays_fail_within_the_skew_window_too():
    net = _cluster(5)
    recorded: List[Tuple[str, bytes]] = []
    for node in net.nodes.values():
        _record_from(node, net.nodes["n4"].addr, recorded)
    net.run_for(5)
    net.leave("n4")
    net.run_for(5)
    assert net.all_see("n4", MemberState.LEFT)
    before = sum(n.core.stats["dropped_replay"] for n in net.live())
    replays = [(to, data) for to, data in recorded if to != "n4"]
    assert replays
    for to, data in replays:
        net.inject(to, data, net.nodes["n4"].addr)
    net.run_for(2)
    assert net.all_see("n4", MemberState.LEFT)
    got = sum(n.core.stats["dropped_replay"] for n in net.live())
    assert got - before == len(replays)


def test_a_revoked_node_is_dead_everywhere_and_cannot_come_back():
    net = _cluster(6)
    log: List[Tuple[str, EventKind]] = []
    net.observers.append(lambda t, obs, ev: log.append((ev.member.name, ev.kind)))
    serial = net.identities["n5"].cert.serial
    net.set_revoked([serial], among=[n for n in net.nodes if n != "n5"])
    assert net.all_see("n5", MemberState.DEAD, among=[n for n in net.nodes if n != "n5"])
    assert ("n5", EventKind.DEAD) in log
    net.run_for(40)                        # it keeps talking, pinging, refuting, joining
    net.restart("n5", seeds=["n0"])
    net.run_for(20)
    others = [n for n in net.live() if n.name != "n5"]
    assert all(n.core.state_of("n5") == MemberState.DEAD for n in others)
    assert sum(n.core.stats["dropped_revoked"] for n in others) > 0
    assert net.converged(among=[n.name for n in others])
    # A new certificate for the same name (a fresh `swarmlet join`) is welcome again.
    net.identities.pop("n5")
    net.restart("n5", seeds=["n0"])
    assert net.run_until_true(net.converged, 30) is not None
    healthy(net)


def test_clock_skew_is_tolerated_up_to_the_bound_and_refused_beyond():
    net = SimNetwork(seed=9, keyring=Keyring([generate_key()]))
    net.set_skew("n1", 45.0)               # within the 60 s default
    net.set_skew("n2", -90.0)              # beyond it
    net.add_converged(6)
    net.run_for(40)
    sane = [n for n in net.nodes if n != "n2"]
    assert net.all_see("n1", MemberState.ALIVE, among=sane)
    assert net.converged(among=sane)
    assert all(n.core.state_of("n2") in (MemberState.SUSPECT, MemberState.DEAD)
               for n in net.live() if n.name != "n2")
    assert net.nodes["n3"].core.stats["dropped_stale"] > 0
    assert net.nodes["n3"].core.clock_offset[1] == pytest.approx(-90.0, abs=1.0)


def test_an_old_version_peer_is_counted_and_named_once():
    net = _cluster(3)
    v1 = bytes((1,)) + bytes(40)            # what a v1 node sends: version byte 1
    for _ in range(3):
        net.inject("n0", v1, ("10.9.9.9", 7946))
    c = net.nodes["n0"].core
    assert c.stats["dropped_version"] == 3
    assert c.version_mismatch == (("10.9.9.9", 7946), 1)


def test_buffers_stay_bounded_under_a_flood_of_strangers():
    net = _cluster(3)
    c = net.nodes["n0"].core
    from swarmlet.shipped.gossip import crypto
    import os
    for i in range(5000):
        net.inject("n0", bytes((crypto.PAIR_BYTE,)) + os.urandom(4) + c.identity.cert.id
                   + os.urandom(40), ("10.9.0.1", 7946))
    assert len(c._held) <= 64 and c.stats["held_unknown"] == 5000
    assert c.stats["dropped_unknown_sender"] >= 5000 - 64
    healthy(net)


def test_a_renewed_certificate_takes_over_without_a_hiccup():
    net = _cluster(6)
    log: List[Tuple[str, EventKind]] = []
    net.observers.append(lambda t, obs, ev: log.append((ev.member.name, ev.kind)))
    old = net.identities["n2"].cert
    new = net.renew("n2")
    net.update_meta("n2", {"renewed": True})
    net.run_for(20)
    assert net.converged()
    assert not [k for _, k in log if k in (EventKind.SUSPECT, EventKind.DEAD)]
    for n in net.live():
        if n.name != "n2":
            assert n.core.trust.newest("n2") == new.cert       # sealing to the new one
            assert next(m for m in n.core.members() if m.name == "n2").meta == {"renewed": True}
    # Once the old certificate is revoked (or expires), nothing depends on it.
    net.set_revoked([old.serial])
    net.run_for(20)
    assert net.converged()
    healthy(net)
