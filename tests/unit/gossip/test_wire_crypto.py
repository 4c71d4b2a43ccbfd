"""Wire encoding/validation, the AES-GCM keyring and the anti-replay window."""

from __future__ import annotations

import msgpack
import pytest

from swarmlet.shipped.exceptions import AuthError, ConfigError, ProtocolError
from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.broadcast import BroadcastQueue
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.crypto import OVERHEAD, Keyring, generate_key
from swarmlet.shipped.gossip.replay import ReplayGuard

pytestmark = pytest.mark.unit

META = {"address": "10.0.0.1", "api_port": 7443, "labels": {"zone": "a"}, "version": "0.1.0",
        "cpu_percent": 12.5, "mem_used": 1 << 30, "mem_total": 4 << 30, "load1": 0.3,
        "cpus": 2.0, "tasks": 3}

MESSAGES = [
    wire.Ping(7, "n1"),
    wire.IndirectPing(8, "n2", "10.0.0.2", 7946, True),
    wire.Ack(9),
    wire.Nack(10),
    wire.Suspect(3, "n2", "n1"),
    wire.Alive(4, "n3", "10.0.0.3", 7946, META),
    wire.Dead(5, "n4", "n4"),
    wire.PushPull(True, False, 0, [wire.Entry("n5", "10.0.0.5", 7946, 2, wire.ST_SUSPECT, META)]),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_alone_and_compound(msg):
    h = wire.Header("sender", 123)
    single = wire.decode_packet(wire.pack_items(h, 1, [wire.item(msg)]))
    assert single == wire.Packet("sender", 123, 1, [msg], 0)
    assert single.messages[0] == msg
    both = wire.decode_packet(wire.pack_items(h, 2, [wire.item(msg), wire.item(wire.Ack(1))]))
    assert both.messages == [msg, wire.Ack(1)]
    assert wire.pack_items(h, 2, [wire.item(msg)])[0] >> 4 == wire.WIRE_VERSION


def test_unknown_types_are_skipped_not_errors():
    h = wire.Header("s", 1)
    future = wire.Item(15, msgpack.packb([1, 2, 3]))
    pkt = wire.decode_packet(wire.pack_items(h, 1, [future, wire.item(wire.Ack(4))]))
    assert pkt.messages == [wire.Ack(4)] and pkt.unknown == 1
    alone = wire.decode_packet(wire.pack_items(h, 1, [future]))
    assert alone.messages == [] and alone.unknown == 1


@pytest.mark.parametrize("body", [
    ["s", 1, 1, [-1, "n"]],                 # negative seq
    ["s", 1, 1, [1]],                       # too few fields
    ["", 1, 1, [1, "n"]],                   # empty sender
    ["s" * 200, 1, 1, [1, "n"]],            # sender too long
    ["s", -5, 1, [1, "n"]],                 # negative epoch
    ["s", 1, 1, [True, "n"]],               # bool is not an int
    ["s", 1, 1, "nope"],                    # fields not a list
    ["s", 1, 1],                            # header too short
])
def test_malformed_ping_packets_are_rejected(body):
    data = bytes(((wire.WIRE_VERSION << 4) | wire.PING,)) + msgpack.packb(body)
    with pytest.raises(ProtocolError):
        wire.decode_packet(data)


@pytest.mark.parametrize("meta", [
    {"k": [1, 2]}, {"k": {"a": {"b": 1}}}, {1: "x"}, {"k": "x" * 300}, {"k": float("nan")},
    {f"k{i}": i for i in range(40)},
])
def test_bad_meta_is_rejected(meta):
    with pytest.raises(ProtocolError):
        wire.check_meta(meta)


def test_wrong_version_and_nested_compound_are_rejected():
    good = wire.pack_items(wire.Header("s", 1), 1, [wire.item(wire.Ack(1))])
    with pytest.raises(ProtocolError):
        wire.decode_packet(bytes(((2 << 4) | wire.ACK,)) + good[1:])
    nested = bytes(((wire.WIRE_VERSION << 4) | wire.COMPOUND,)) + msgpack.packb(
        ["s", 1, 1, [[wire.COMPOUND, []]]])
    with pytest.raises(ProtocolError):
        wire.decode_packet(nested)


def test_push_pull_chunks_fit_the_udp_payload():
    h = wire.Header("a-long-member-name-0001", 1 << 62)
    room = wire.budget(h, 1400, OVERHEAD) - wire.ITEM_OVERHEAD
    entries = [wire.Entry(f"member-{i:04d}", f"10.0.{i >> 8}.{i & 255}", 7946, i, 0, META)
               for i in range(300)]
    chunks = wire.chunk_entries(entries, room)
    assert sum(len(c) for c in chunks) == 300 and len(chunks) > 1
    for part, c in enumerate(chunks):
        pkt = wire.pack_items(h, (1 << 63) - 1, [wire.item(wire.PushPull(False, True, part, c))])
        assert len(pkt) + OVERHEAD <= 1400


def test_broadcast_queue_limits_retransmits_and_replaces_older_news():
    q = BroadcastQueue()
    q.queue("n1", wire.item(wire.Suspect(1, "n1", "x")))
    q.queue("n1", wire.item(wire.Alive(2, "n1", "h", 1, {})))   # newer news about n1 wins
    q.queue("n2", wire.item(wire.Dead(1, "n2", "x")))
    sent = []
    for _ in range(10):
        sent.append(q.take(1000, limit=3))
    assert [len(s) for s in sent[:3]] == [2, 2, 2] and all(not s for s in sent[3:])
    assert all(wire.Suspect(1, "n1", "x") != wire.decode_packet(
        wire.pack_items(wire.Header("s", 1), 1, s)).messages[0] for s in sent[:3])
    assert len(q) == 0
    # Least-transmitted first: a fresh item goes out before older ones when room is short.
    old, fresh = wire.item(wire.Alive(1, "a", "h", 1, META)), wire.item(wire.Alive(1, "b", "h", 1, META))
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
    assert len(sealed) == 5 + OVERHEAD and sealed[0] == 1
    assert b.open(sealed) == b"hello"
    assert a.seal(b"hello") != sealed                       # random nonce
    b.add(k2)                                               # rotation step 1: accept k2
    a.use(k2)                                               # step 2: seal with k2
    assert b.open(a.seal(b"x")) == b"x"
    a.remove(k1)
    with pytest.raises(AuthError):
        a.open(sealed)                                      # k1 is gone
    with pytest.raises(ConfigError):
        a.remove(k2)                                        # never the primary
    assert Keyring.from_json(a.to_json()).keys == a.keys


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


def test_replay_window_accepts_reordering_and_rejects_repeats():
    g = ReplayGuard(idle_ttl=60)
    assert g.accept("a", 5, 10, 0.0)
    assert not g.accept("a", 5, 10, 0.0)                    # exact repeat
    assert g.accept("a", 5, 8, 0.0)                         # late but inside the window
    assert not g.accept("a", 5, 8, 0.0)
    assert g.accept("a", 5, 100, 0.0)
    assert not g.accept("a", 5, 30, 0.0)                    # older than the 64-packet window
    assert not g.accept("a", 4, 1000, 0.0)                  # an older process's packet
    assert g.accept("a", 6, 1, 0.0)                         # restarted sender, newer epoch
    assert not g.accept("a", 5, 101, 1.0)
    assert g.accept("a", 5, 101, 100.0)                     # window forgotten after idle_ttl
