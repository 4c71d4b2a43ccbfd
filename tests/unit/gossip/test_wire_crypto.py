"""Wire encoding/validation, envelopes and keyring, certificates, signatures and the
anti-replay window."""

from __future__ import annotations

import datetime

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmlet import pki
from swarmlet.shipped.exceptions import AuthError, ConfigError, ProtocolError
from swarmlet.shipped.gossip import crypto, statements, wire
from swarmlet.shipped.gossip.broadcast import BroadcastQueue
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.crypto import OVERHEAD, PAIR_OVERHEAD, Keyring, generate_key
from swarmlet.shipped.gossip.identity import Identity, RevokedCert, Trust
from swarmlet.shipped.gossip.replay import WINDOW, ReplayGuard
from swarmlet.shipped.gossip.session import Sessions, UnknownSender

from tests.unit.gossip.peers import CA, CA_DER, Peer, identity, trust

pytestmark = pytest.mark.unit

META = {"address": "10.0.0.1", "api_port": 7443, "labels": {"zone": "a"}, "version": "0.1.0",
        "cpu_percent": 12.5, "mem_used": 1 << 30, "mem_total": 4 << 30, "load1": 0.3,
        "cpus": 2.0, "tasks": 3}
SIG = bytes(range(64))

MESSAGES = [
    wire.Ping(7, "n1"),
    wire.IndirectPing(8, "n2", True),
    wire.Ack(9),
    wire.Nack(10),
    wire.Suspect("n2", 3, "n1"),
    wire.Record("n3", 4, 1_700_000_000, "10.0.0.3", 7946, META, SIG),
    wire.Alive("n3", 5, SIG),
    wire.Leave("n4", 5, SIG),
    wire.Dead("n4", 5, "n1"),
    wire.PushPull(True, False, 0, [wire.Entry("n5", 2, wire.ST_SUSPECT, 1_700_000_000)]),
    wire.Pull(["n1", "n2"]),
    wire.CertReq(["n3"]),
    wire.Cert(b"\x30" * 480),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_alone_and_compound(msg):
    h = wire.Header("sender")
    single = wire.decode_packet(wire.pack_items(h, 123, [wire.item(msg)]))
    assert single == wire.Packet("sender", 123, [msg], 0)
    both = wire.decode_packet(wire.pack_items(h, 124, [wire.item(msg), wire.item(wire.Ack(1))]))
    assert both.messages == [msg, wire.Ack(1)]
    assert wire.pack_items(h, 2, [wire.item(msg)])[0] >> 4 == wire.WIRE_VERSION == 2


def test_unknown_types_are_skipped_not_errors():
    h = wire.Header("s")
    future = wire.Item(15, msgpack.packb([1, 2, 3]))
    pkt = wire.decode_packet(wire.pack_items(h, 1, [future, wire.item(wire.Ack(4))]))
    assert pkt.messages == [wire.Ack(4)] and pkt.unknown == 1
    alone = wire.decode_packet(wire.pack_items(h, 1, [future]))
    assert alone.messages == [] and alone.unknown == 1


@pytest.mark.parametrize("body", [
    ["s", 1, [-1, "n"]],                 # negative seq
    ["s", 1, [1]],                       # too few fields
    ["", 1, [1, "n"]],                   # empty sender
    ["s" * 200, 1, [1, "n"]],            # sender too long
    ["s\n", 1, [1, "n"]],                # a control character in a name
    ["s", -5, [1, "n"]],                 # negative stamp
    ["s", 1, [True, "n"]],               # bool is not an int
    ["s", 1, "nope"],                    # fields not a list
    ["s", 1],                            # header too short
])
def test_malformed_ping_packets_are_rejected(body):
    data = bytes(((wire.WIRE_VERSION << 4) | wire.PING,)) + msgpack.packb(body)
    with pytest.raises(ProtocolError):
        wire.decode_packet(data)


@pytest.mark.parametrize("t,fields", [
    (wire.DEAD, ["n", wire.INC_MAX, "x"]),             # an accusation nobody could refute
    (wire.SUSPECT, ["n", (1 << 63) - 1, "x"]),
    (wire.ALIVE, ["n", wire.INC_MAX + 1, SIG]),
    (wire.ALIVE, ["n", 1, b"short"]),                  # a signature is 64 bytes
    (wire.RECORD, ["n", 1, 1, "h", 1, {"k": "v" * 250, "j": "v" * 250, "l": "x" * 30}, SIG]),
    (wire.CERT, [b""]),
    (wire.PUSH_PULL, [False, False, 0, [["n", wire.INC_MAX, wire.ST_DEAD, 1]]]),
])
def test_incarnations_are_bounded_so_a_refutation_always_fits(t, fields):
    data = bytes(((wire.WIRE_VERSION << 4) | t,)) + msgpack.packb(["s", 1, fields],
                                                                  use_bin_type=True)
    with pytest.raises(ProtocolError):
        wire.decode_packet(data)
    # The largest accusation that passes still leaves room for accused + 1.
    ok = wire.decode_packet(wire.pack_items(wire.Header("s"), 1, [
        wire.item(wire.Dead("n", wire.INC_MAX - 1, "x"))]))
    assert ok.messages[0].inc + 1 == wire.INC_MAX
    wire.decode_packet(wire.pack_items(wire.Header("s"), 1, [
        wire.item(wire.Alive("n", wire.INC_MAX, SIG))]))


@pytest.mark.parametrize("meta", [
    {"k": [1, 2]}, {"k": {"a": {"b": 1}}}, {1: "x"}, {"k": "x" * 300}, {"k": float("nan")},
    {f"k{i}": i for i in range(40)},
])
def test_bad_meta_is_rejected(meta):
    with pytest.raises(ProtocolError):
        wire.check_meta(meta)


def test_other_wire_versions_are_named_and_nested_compound_is_rejected():
    good = wire.pack_items(wire.Header("s"), 1, [wire.item(wire.Ack(1))])
    with pytest.raises(wire.VersionMismatch) as err:
        wire.decode_packet(bytes(((1 << 4) | wire.ACK,)) + good[1:])
    assert err.value.version == 1 and "version 1" in str(err.value)
    nested = bytes(((wire.WIRE_VERSION << 4) | wire.COMPOUND,)) + msgpack.packb(
        ["s", 1, [[wire.COMPOUND, []]]])
    with pytest.raises(ProtocolError):
        wire.decode_packet(nested)


def test_push_pull_chunks_fit_the_udp_payload():
    h = wire.Header("a-long-member-name-0001")
    room = wire.budget(h, 1400, PAIR_OVERHEAD) - wire.ITEM_OVERHEAD
    entries = [wire.Entry(f"member-{i:04d}", i, 0, 1_700_000_000 + i) for i in range(2000)]
    chunks = wire.chunk_entries(entries, room)
    assert sum(len(c) for c in chunks) == 2000 and len(chunks) > 1
    for part, c in enumerate(chunks):
        pkt = wire.pack_items(h, (1 << 63) - 1, [wire.item(wire.PushPull(False, True, part, c))])
        assert len(pkt) + PAIR_OVERHEAD <= 1400


def test_stamps_increase_and_carry_the_senders_clock():
    s = wire.Stamper()
    a, b, c = s.next(1000.0), s.next(1000.0), s.next(999.0)   # same ms; clock stepped back
    assert a < b < c and wire.stamp_time(a) == 1000.0
    assert wire.Stamper().next(1000.001) > c                  # a restart is ahead of the last run


def test_broadcast_queue_limits_retransmits_and_replaces_older_news():
    q = BroadcastQueue()
    q.queue("n1", wire.item(wire.Suspect("n1", 1, "x")))
    q.queue("n1", wire.item(wire.Alive("n1", 2, SIG)))     # newer news about n1 wins
    q.queue("n2", wire.item(wire.Dead("n2", 1, "x")))
    sent = []
    for _ in range(10):
        sent.append(q.take(1000, limit=3))
    assert [len(s) for s in sent[:3]] == [2, 2, 2] and all(not s for s in sent[3:])
    assert all(wire.Suspect("n1", 1, "x") not in wire.decode_packet(
        wire.pack_items(wire.Header("s"), 1, s)).messages for s in sent[:3])
    assert len(q) == 0
    # Least-transmitted first: a fresh item goes out before older ones when room is short.
    rec = wire.Record("a", 1, 1, "h", 1, META, SIG)
    old, fresh = wire.item(rec), wire.item(rec._replace(name="b"))
    q.queue("a", old)
    q.take(1000, limit=5)
    q.queue("b", fresh)
    assert q.take(fresh.cost + 10, 5) == [fresh]


def test_retransmit_limit_and_suspicion_bounds_follow_memberlist():
    c = GossipConfig()
    assert [c.retransmit_limit(n) for n in (1, 9, 10, 99, 100, 1000)] == [4, 4, 8, 8, 12, 16]
    assert c.suspicion_bounds(5) == (4.0, 24.0)
    assert c.suspicion_bounds(1000) == pytest.approx((12.0, 72.0))
    assert c.push_pull_period(32) == 30 and c.push_pull_period(1000) == 180


def test_keyring_seals_opens_and_rotates():
    k1, k2 = generate_key(), generate_key()
    a, b = Keyring([k1]), Keyring([k1])
    sealed = a.seal(b"hello")
    assert len(sealed) == 5 + OVERHEAD and sealed[0] == crypto.HELLO_BYTE
    assert b.open(sealed) == b"hello"
    assert a.seal(b"hello") != sealed                       # random nonce
    g = a.generation
    b.add(k2)                                               # rotation step 1: accept k2
    a.use(k2)                                               # step 2: seal with k2
    assert a.generation > g
    assert b.open(a.seal(b"x")) == b"x"
    a.remove(k1)
    with pytest.raises(AuthError):
        a.open(sealed)                                      # k1 is gone
    with pytest.raises(ConfigError):
        a.remove(k2)                                        # never the primary
    assert Keyring.from_json(a.to_json()).keys == a.keys
    a.replace([k1, k2])
    assert a.keys == [k1, k2]


@pytest.mark.parametrize("mangle", [
    lambda p: p[:-1], lambda p: p[:10], lambda p: b"\x02" + p[1:],
    lambda p: p[:20] + bytes([p[20] ^ 1]) + p[21:], lambda p: p[:-1] + bytes([p[-1] ^ 0x80]),
])
def test_tampered_packets_fail_authentication(mangle):
    ring = Keyring([generate_key()])
    with pytest.raises(AuthError):
        ring.open(mangle(ring.seal(b"payload bytes")))


def test_bad_keys_and_key_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        Keyring([b"\x00" * 16])
    with pytest.raises(ConfigError):
        Keyring([])
    (tmp_path / "k").write_text('["not base64!"]')
    with pytest.raises(ConfigError):
        Keyring.load(tmp_path / "k")
    with pytest.raises(ConfigError):
        Keyring.load(tmp_path / "missing")


def test_pair_envelopes_authenticate_the_sender_and_only_the_pair_can_open_them():
    ring = Keyring([generate_key()])
    a, b, c = identity("pa"), identity("pb"), identity("pc")
    sa, sb, sc = (Sessions(i, trust(), ring) for i in (a, b, c))
    for s in (sa, sb, sc):
        for i in (a, b, c):
            s.trust.add_verified(i.cert)
    sealed = sa.seal(b.cert, b"for b")
    assert len(sealed) == 5 + PAIR_OVERHEAD
    peer, plain = sb.open(sealed)
    assert (peer.name, plain) == ("pa", b"for b")
    with pytest.raises(AuthError):
        sc.open(sealed)                                     # sealed for b, not c
    # c holds the cluster key and its own certificate, yet cannot pass as a:
    forged = sealed[:1] + a.cert.id + b.cert.id + sc.seal(b.cert, b"x")[9:]
    with pytest.raises(AuthError):
        sb.open(forged)
    # A holder of the cluster key alone can only make hellos.
    key_only = crypto.seal_pair(AESGCM(ring.primary), a.cert.id, b.cert.id, b"x")
    with pytest.raises(AuthError):
        sb.open(key_only)
    stranger = Sessions(identity("pd"), trust(), ring)
    stranger.trust.add_verified(b.cert)
    with pytest.raises(UnknownSender):
        sb.open(stranger.seal(b.cert, b"who?"))
    # Rotation: packets keep opening while both sides change keys in any order.
    new = generate_key()
    sb.keyring.add(new)                                     # (shared ring here; see test_rotate)
    assert sb.open(sa.seal(b.cert, b"y"))[1] == b"y"


def test_certificates_are_checked_against_the_cluster_ca():
    t = Trust(CA_DER)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    good = identity("good").cert
    assert t.add(good.der, now).name == "good"
    other_ca = pki.create_ca("other")
    with pytest.raises(AuthError):
        t.add(identity("x", ca=other_ca).cert.der, now)     # another cluster's certificate
    with pytest.raises(AuthError):
        t.add(identity("cli-x", role="cli").cert.der, now)  # not an agent
    with pytest.raises(AuthError):
        t.add(b"\x30\x03junk", now)
    with pytest.raises(AuthError):
        Trust(CA_DER).add(good.der, now + 900 * 86400)      # expired by then (825 days)
    assert t.expire(now + 900 * 86400) == [good] and not t.by_name("good")
    t.add(good.der, now)
    kp = pki.issue(CA, "old", "agent", days=1)
    ident = Identity.from_pem(kp.cert_pem, kp.key_pem)
    with pytest.raises(AuthError):
        Trust(CA_DER).add(ident.cert.der, now + 3 * 86400)
    # Revocation drops a cached certificate at once and refuses it afterwards.
    gone = t.set_revoked([good.serial])
    assert gone == [good] and t.by_name("good") == [] and "good" in t.revoked_names
    with pytest.raises(RevokedCert):
        t.add(good.der, now)
    t.set_revoked([])
    assert t.add(good.der, now) is not None


def test_the_cache_is_bounded_and_keeps_two_certificates_per_name():
    t = Trust(CA_DER, max_certs=3)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    for n in ("c1", "c2", "c3"):
        t.add(identity(n).cert.der, now)
    with pytest.raises(AuthError):
        t.add(identity("c4").cert.der, now)
    assert len(t) == 3


def test_signed_statements_verify_only_for_their_subject():
    a, b = identity("sa"), identity("sb")
    r = statements.record(a, "sa", 1, 2, "h", 1, {"k": "v"})
    assert statements.verify([a.cert], r) is a.cert
    assert statements.verify([b.cert], r) is None
    assert statements.verify([a.cert], r._replace(meta={"k": "w"})) is None
    assert statements.verify([a.cert], r._replace(inc=2)) is None
    al = statements.alive(a, "sa", 3)
    lv = statements.leave(a, "sa", 3)
    assert statements.verify([a.cert], al) and statements.verify([a.cert], lv)
    assert statements.verify([a.cert], wire.Leave("sa", 3, al.sig)) is None   # kinds differ
    # Through the wire and back: the re-encoded fields still verify.
    pkt = wire.decode_packet(wire.pack_items(wire.Header("x"), 1, [wire.item(r)]))
    assert statements.verify([a.cert], pkt.messages[0]) is a.cert


def test_replay_window_accepts_reordering_and_rejects_repeats():
    g = ReplayGuard(skew=60)
    assert g.accept("a", 1000, 0.0)
    assert not g.accept("a", 1000, 0.0)                     # exact repeat
    assert g.accept("a", 900, 0.0)                          # late but new
    assert not g.accept("a", 900, 0.0)
    for s in range(2000, 2000 + WINDOW):
        assert g.accept("a", s, 0.1)
    assert not g.accept("a", 950, 0.2)                      # below a full window
    assert g.accept("b", 5, 0.3)                            # windows are per sender


def test_freshness_bounds_replays_once_a_window_is_forgotten():
    g = ReplayGuard(skew=60)
    wall = 1_700_000_000.0
    s = wire.Stamper().next(wall)
    assert g.fresh(s, wall + 59) and g.fresh(s, wall - 59)
    assert not g.fresh(s, wall + 61) and not g.fresh(s, wall - 61)
    assert g.accept("a", s, 0.0)
    g.expire(124.0)
    assert not g.accept("a", s, 124.0)                      # window still held
    g.expire(126.0)                                         # idle 2 x skew: forgotten...
    assert len(g) == 0 and not g.fresh(s, wall + 126)       # ...and the packet is stale anyway


def test_a_full_guard_closes_behind_the_senders_it_drops():
    g = ReplayGuard(skew=60, max_senders=4)
    for i in range(4):
        assert g.accept(f"s{i}", 100 + i, float(i))
    assert g.accept("s9", 200, 10.0)                        # evicts the two least recent
    assert g.floor == 101
    assert not g.accept("s0", 100, 11.0)                    # an evicted sender's old stamp


def test_peer_helper_round_trip():
    from tests.unit.gossip.peers import make_core
    core = make_core()
    out = Peer("n3").send(core, wire.Ping(5, "n1"))
    assert core.stats["packets_ok"] == 1 and len(out.sends) == 1
