"""The sans-I/O core driven by hand: incarnation rules, refutation, buddy system,
Lifeguard's suspicion timeout and local-health multiplier, metadata versioned apart
from liveness. Fake time throughout (the wall clock only stamps packets)."""

from __future__ import annotations

import time
from typing import List

import pytest

from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.core import GossipCore
from swarmlet.shipped.gossip.members import EventKind, MemberState, suspicion_timeout

from swarmlet import pki
from swarmlet.shipped.gossip.identity import Identity
from tests.unit.gossip.peers import ADDR, CA, RING, Peer, make_core, opened, trust

pytestmark = pytest.mark.unit


def test_incarnation_rules():
    core, p3, p2 = make_core(), Peer("n3"), Peer("n2")
    p3.send(core, wire.Suspect("n2", 0, "n3"), now=0.0)
    assert core.state_of("n2") == MemberState.SUSPECT
    p3.send(core, p2.alive(0), now=0.1)
    assert core.state_of("n2") == MemberState.SUSPECT      # alive needs a higher incarnation
    out = p3.send(core, p2.record(1, 2, {"x": 1}), now=0.2)
    assert core.state_of("n2") == MemberState.ALIVE
    assert [e.kind for e in out.events] == [EventKind.ALIVE, EventKind.UPDATE]
    p3.send(core, wire.Dead("n2", 0, "n3"), now=0.3)
    assert core.state_of("n2") == MemberState.ALIVE        # stale death
    out = p3.send(core, p2.leave(1), now=0.4)
    assert core.state_of("n2") == MemberState.LEFT and out.events[0].kind == EventKind.LEAVE
    out = p3.send(core, p2.alive(2), now=0.5)
    assert core.state_of("n2") == MemberState.ALIVE and out.events[0].kind == EventKind.JOIN


def test_claims_above_what_the_subject_signed_are_refused():
    core, p3 = make_core(), Peer("n3")
    p3.send(core, wire.Dead("n2", 5, "n3"), now=0.0)        # n2 only ever signed incarnation 0
    p3.send(core, wire.Suspect("n2", 1, "n3"), now=0.1)
    assert core.state_of("n2") == MemberState.ALIVE
    assert core.stats["refused_claims"] == 2
    p3.send(core, Peer("n2").alive(7), now=0.2)
    p3.send(core, wire.Dead("n2", 7, "n3"), now=0.3)        # now it has: a valid accusation
    assert core.state_of("n2") == MemberState.DEAD


def test_suspicion_about_self_is_refuted_with_the_next_incarnation():
    core, p = make_core(), Peer("n3")
    i0 = core.inc                                           # the wall clock's seconds
    p.send(core, wire.Suspect("n1", i0, "n3"), now=0.1)
    assert core.inc == i0 + 1 and core.stats["refutes"] == 1 and core.awareness == 1
    p.send(core, wire.Suspect("n1", i0, "n3"), now=0.2)    # older accusation: ignored
    assert core.inc == i0 + 1
    # Higher than we signed in this run: not believed, but our own signed word is asked for.
    out = p.send(core, wire.Dead("n1", i0 + 9, "n3"), now=0.3)
    assert core.inc == i0 + 1
    assert any(isinstance(m, wire.Pull) and m.names == ["n1"]
               for msgs in opened(core, out.sends) for m in msgs)
    # The refutation rides on the next packet out, and carries no metadata.
    sent = core.tick(10.0).sends
    alive = [m for msgs in opened(core, sent) for m in msgs if isinstance(m, wire.Alive)]
    assert alive and alive[0] == wire.Alive("n1", i0 + 1, alive[0].sig) and len(alive[0].sig) == 64


def test_a_restarted_member_gets_ahead_of_its_earlier_run():
    core = make_core()
    # Its earlier run had signed incarnation 6 (same key: the certificate survives restarts).
    old_run, p = make_core(), Peer("n3")
    i0 = old_run.inc
    for _ in range(6):
        p.send(old_run, wire.Suspect("n1", old_run.inc, "n3"))
    assert old_run.inc == i0 + 6 >= core.inc
    p.send(core, wire.Alive("n1", i0 + 6, old_run._own_live.sig), now=1.0)
    assert core.inc == i0 + 7
    # A forged "you are 1000 ahead" is not signed by us, so it changes nothing.
    p.send(core, wire.Alive("n1", i0 + 1000, b"\x01" * 64), now=1.1)
    assert core.inc == i0 + 7 and core.stats["bad_signatures"] == 1


def test_a_member_that_left_and_joined_again_with_a_new_certificate_is_alive():
    # `leave` revokes the node's certificate; `join` issues a new one. The new run cannot
    # verify (so cannot refute) its earlier run's Leave: it must simply be newer.
    core, old = make_core(), Peer("n3")
    old.send(core, old.leave(old.record().inc + 5), now=0.1)
    assert core.state_of("n3") == MemberState.LEFT
    kp = pki.issue(CA, "n3", "agent")
    ident = Identity.from_pem(kp.cert_pem, kp.key_pem)
    again = GossipCore("n3", ADDR["n3"], keyring=RING, identity=ident, trust=trust())
    core.trust.add_verified(ident.cert)
    new = Peer("n3", ident=ident)
    # the same sender name: its stamps must follow the earlier run's (the same millisecond
    # would be a replay; a real restart is later by far)
    core.receive(new.packet(core, again.record, stamp=old.stamper.next(time.time())), new.addr, 0.2)
    assert core.state_of("n3") == MemberState.ALIVE


def test_buddy_system_ping_to_a_suspect_carries_the_suspicion():
    core = make_core(peers=2)
    p3 = Peer("n3")
    p3.send(core, wire.Suspect("n2", 0, "n3"), now=0.0)
    seen = False
    t = 0.0
    while t < 6 and not seen:
        t = core.next_deadline()
        sends = core.tick(t).sends
        for (d, addr), msgs in zip(sends, opened(core, sends)):
            if addr == ADDR["n2"] and any(isinstance(m, wire.Ping) for m in msgs):
                assert wire.Suspect("n2", 0, "n3") in msgs or wire.Suspect("n2", 0, "n1") in msgs
                seen = True
    assert seen


def test_lifeguard_suspicion_timeout_shrinks_with_confirmations():
    lo, hi = 4.0, 24.0
    times = [suspicion_timeout(c, 2, lo, hi) for c in range(4)]
    assert times[0] == hi and times[2] == lo and times[3] == lo
    assert hi > times[1] > lo
    core = make_core(peers=6)                                # n = 7: k = 2, min 4 s, max 24 s
    Peer("n3").send(core, wire.Suspect("n2", 0, "n3"), now=0.0)
    core.tick(23.0)
    assert core._nodes["n2"].suspicion.deadline == pytest.approx(24.0)
    p4 = Peer("n4")
    p4.send(core, wire.Suspect("n2", 0, "n4"), now=1.0)
    p4.send(core, wire.Suspect("n2", 0, "n4"), now=1.1)     # same member twice
    assert core._nodes["n2"].suspicion.deadline == pytest.approx(times[1])
    Peer("n5").send(core, wire.Suspect("n2", 0, "n5"), now=2.0)
    out = core.tick(4.0)
    assert core.state_of("n2") == MemberState.DEAD
    assert [e.kind for e in out.events] == [EventKind.DEAD]


def test_failed_probes_raise_local_health_and_stretch_the_probe_interval():
    core = make_core(peers=1)                                # n2 never answers
    probes: List[float] = []
    seqs = set()
    t = 0.0
    while t < 60:
        t = core.next_deadline()
        sends = core.tick(t).sends
        for msgs in opened(core, sends):
            for m in msgs:
                if isinstance(m, wire.Ping) and m.seq not in seqs:   # not the re-ping
                    seqs.add(m.seq)
                    probes.append(t)
        if core.state_of("n2") == MemberState.DEAD:
            break
    gaps = [round(b - a, 6) for a, b in zip(probes, probes[1:])]
    assert gaps[:2] == [1.0, 2.0]          # 1 s, then x2 after one failed probe
    assert core.awareness >= 2


def test_a_successful_probe_lowers_local_health():
    core = make_core(peers=1)
    core.awareness = 3
    p2 = Peer("n2")
    t = 0.0
    while t < 30:
        t = core.next_deadline()
        sends = core.tick(t).sends
        for (d, addr), msgs in zip(sends, opened(core, sends)):
            for m in msgs:
                if isinstance(m, wire.Ping):
                    p2.send(core, wire.Ack(m.seq), now=t + 0.001)
    assert core.awareness == 0


def test_indirect_probe_is_relayed_and_nacked():
    core = make_core(peers=3)
    p = Peer("n3")
    out = p.send(core, wire.IndirectPing(77, "n2", True), now=0.0)
    ping = [m for m in opened(core, out.sends)[0] if isinstance(m, wire.Ping)][0]
    assert out.sends[0][1] == ADDR["n2"] and ping.target == "n2"
    relayed = Peer("n2").send(core, wire.Ack(ping.seq), now=0.1)
    assert relayed.sends[0][1] == ADDR["n3"] and wire.Ack(77) in opened(core, relayed.sends)[0]
    p.send(core, wire.IndirectPing(78, "n4", True), now=1.0)
    nacks = [m for msgs in opened(core, core.tick(1.5).sends) for m in msgs
             if isinstance(m, wire.Nack)]
    assert nacks == [wire.Nack(78)]
    # A target we do not know: nacked at once, nothing is sent to an address we were given.
    out = p.send(core, wire.IndirectPing(79, "stranger", True), now=2.0)
    assert [a for _, a in out.sends] == [ADDR["n3"]]
    assert wire.Nack(79) in opened(core, out.sends)[0]


def test_misdirected_ping_is_not_acked():
    core = make_core()
    out = Peer("n3").send(core, wire.Ping(1, "someone-else"))
    assert not out.sends and core.stats["misdirected_pings"] == 1


def test_plaintext_needs_an_explicit_opt_in_and_meta_is_validated():
    with pytest.raises(ConfigError):
        GossipCore("a", ("h", 1), keyring=None)
    core = make_core()
    with pytest.raises(ConfigError):
        core.update_meta({"labels": {"k": "v" * 200}, "x": "y" * 250, "z": "w" * 250}, 0.0)
    with pytest.raises(ConfigError):
        core.update_meta({"nested": {"deep": {"no": 1}}}, 0.0)


def test_a_keyring_needs_the_nodes_certificate():
    from tests.unit.gossip.peers import RING, identity, trust
    with pytest.raises(ConfigError):
        GossipCore("n1", ADDR["n1"], keyring=RING)
    with pytest.raises(ConfigError):
        GossipCore("n1", ADDR["n1"], keyring=RING, identity=identity("n2"), trust=trust())


def test_metadata_has_its_own_version_and_updates_are_coalesced():
    core = make_core(meta_budget=1e9)                         # meta_min_interval = 2 s
    v0, i0 = core.mver, core.inc
    assert [e.kind for e in core.update_meta({"cpu": 1}, 10.0).events] == [EventKind.UPDATE]
    assert core.inc == i0 and core.mver > v0                  # liveness untouched
    assert not core.update_meta({"cpu": 2}, 10.5).events      # held
    assert not core.update_meta({"cpu": 3}, 11.0).events      # replaces the held one
    assert core.meta == {"cpu": 1}
    v1 = core.mver
    out = core.tick(12.0)
    assert [e.member.meta for e in out.events if e.kind == EventKind.UPDATE] == [{"cpu": 3}]
    assert core.mver > v1 and core.inc == i0
    assert not core.update_meta({"cpu": 3}, 20.0).events      # unchanged: nothing to publish


def test_a_stranger_is_admitted_only_with_its_certificate_and_signed_record():
    core, p3 = make_core(), Peer("n3")
    newcomer = Peer("n7")
    # Its record arrives before its certificate: parked, and the certificate is asked for.
    out = p3.send(core, newcomer.record(0, 5, {"api_port": 1}), now=0.0)
    assert core.state_of("n7") is None and core.stats["parked"] == 1
    asks = [m for msgs in opened(core, out.sends) for m in msgs if isinstance(m, wire.CertReq)]
    assert asks == [wire.CertReq(["n7"])]
    out = p3.send(core, wire.Cert(newcomer.ident.cert.der), now=0.1)
    assert core.state_of("n7") == MemberState.ALIVE
    assert [e.kind for e in out.events] == [EventKind.JOIN]
    # A record "of n8" signed by n7 never makes n8 a member.
    forged = newcomer.record(0, 5)._replace(name="n8")
    p3.send(core, wire.Cert(Peer("n8").ident.cert.der), forged, now=0.2)
    assert core.state_of("n8") is None and core.stats["bad_signatures"] == 1


def test_utilization_changes_are_held_to_the_meta_budget_and_others_are_not():
    core = make_core(peers=99, suspicion_mult=1000)           # 100 members (nobody dies here)

    def updates(out):
        return [e.member.meta for e in out.events if e.kind == EventKind.UPDATE]
    core.update_meta({"address": "a", "cpu": 1.0}, 0.0)       # first publication
    v = core.mver
    spacing = core._meta_spacing()                            # limit 12, record ~100-400 B
    assert 100 * 12 * 100 / 256 < spacing < 100 * 12 * 400 / 256
    t = 3.0
    for i in range(20):                                       # a value every 3 s, as stats do
        core.update_meta({"address": "a", "cpu": 2.0 + i}, t)
        core.tick(t)
        t += 3.0
    assert core.mver == v                                     # all held: within the budget
    assert updates(core.update_meta({"address": "b", "cpu": 9.0}, t))   # an address: at once
    assert core.meta == {"address": "b", "cpu": 9.0}
    core.update_meta({"address": "b", "cpu": 10.0, "new": 1}, t + 0.5)  # a new key: 2 s on
    assert updates(core.tick(t + 1.9)) == [] and updates(core.tick(t + 2.1))
    # A held value goes out once its spacing has passed, not before.
    t += 3.0
    spacing = core._meta_spacing()
    core.update_meta({"address": "b", "cpu": 11.0, "new": 1}, t)
    assert updates(core.tick(t + spacing - 5)) == []
    assert [m["cpu"] for m in updates(core.tick(t + spacing + 1))] == [11.0]
