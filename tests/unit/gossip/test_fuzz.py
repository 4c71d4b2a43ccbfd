"""Hypothesis fuzz of the receive path: garbage, truncated, replayed and forged packets.

Invariants: ``receive`` never raises; every packet lands in exactly one counter
(accepted, or dropped for auth / malformed / replay); no internal error is counted.
"""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.core import GossipCore
from swarmlet.shipped.gossip.crypto import Keyring, generate_key

pytestmark = pytest.mark.unit

KEY = generate_key()
SRC = ("10.0.0.2", 7946)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _core(encrypted: bool = True, name: str = "rx") -> GossipCore:
    return GossipCore(name, ("10.0.0.1", 7946), keyring=Keyring([KEY]) if encrypted else None,
                      config=GossipConfig(allow_plaintext=not encrypted), epoch=1,
                      rng=random.Random(1))


def _valid_packets(encrypted: bool = True):
    """Real packets from a real peer: push-pull, ping, acks and piggybacked gossip."""
    tx = _core(encrypted, "tx")
    tx.seed_members([("rx", ("10.0.0.1", 7946), 0, {}), ("n3", ("10.0.0.3", 7946), 0, {"a": 1})])
    out = list(tx.join([("10.0.0.1", 7946)], 0.0).sends)
    out += tx.update_meta({"cpu_percent": 1.5}, 0.1).sends
    out += tx.tick(5.0).sends   # probes, gossip, a suspicion
    return [d for d, _ in out]


VALID = _valid_packets()
VALID_PLAIN = _valid_packets(encrypted=False)


def _accounted(core: GossipCore) -> None:
    s = core.stats
    assert s["internal_errors"] == 0
    assert s["packets_in"] == (s["packets_ok"] + s["dropped_auth"] + s["dropped_malformed"]
                               + s["dropped_replay"])


def test_valid_packets_are_accepted_exactly_once():
    rx = _core()
    for p in VALID:
        rx.receive(p, SRC, 0.2)
    assert rx.stats["packets_ok"] == len(VALID) >= 4
    for p in VALID:
        rx.receive(p, SRC, 0.3)
    assert rx.stats["dropped_replay"] == len(VALID)
    assert any(m.name == "tx" for m in rx.members())
    _accounted(rx)


@FUZZ
@given(st.binary(max_size=2000))
def test_garbage_is_dropped_as_unauthenticated(data):
    rx = _core()
    rx.receive(data, SRC, 1.0)
    assert rx.stats["packets_ok"] == 0
    _accounted(rx)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_truncated_and_bit_flipped_packets_are_forgeries(pkt, data):
    cut = data.draw(st.integers(0, len(pkt) - 1))
    i = data.draw(st.integers(0, len(pkt) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = pkt[:i] + bytes([pkt[i] ^ (1 << bit)]) + pkt[i + 1:]
    rx = _core()
    rx.receive(pkt[:cut], SRC, 1.0)
    rx.receive(flipped, SRC, 1.0)
    assert rx.stats["dropped_auth"] == 2
    _accounted(rx)


@FUZZ
@given(st.binary(min_size=1, max_size=1200), st.sampled_from(list(range(16))))
def test_forged_with_another_key_is_dropped(plain, t):
    forger = Keyring([generate_key()])
    rx = _core()
    rx.receive(forger.seal(bytes([(wire.WIRE_VERSION << 4) | t]) + plain), SRC, 1.0)
    assert rx.stats["dropped_auth"] == 1
    _accounted(rx)


@FUZZ
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=12))
def test_replays_in_any_order_are_counted(seq):
    rx = _core()
    for p in seq:
        rx.receive(p, SRC, 1.0)
    assert rx.stats["packets_ok"] == len(set(seq))
    assert rx.stats["dropped_replay"] == len(seq) - len(set(seq))
    _accounted(rx)


# Decoder fuzz (plaintext mode, so the msgpack layer sees the garbage directly).

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 64), 1 << 64),
                    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda c: st.one_of(
    st.lists(c, max_size=6), st.dictionaries(st.text(max_size=10), c, max_size=5)), max_leaves=25)
names = st.text(min_size=1, max_size=20)
fields = st.lists(values, max_size=7)
parts = st.lists(st.tuples(st.integers(0, 20), fields).map(list), min_size=1, max_size=5)


@FUZZ
@given(st.integers(0, 255), st.one_of(
    values,
    st.tuples(names, st.integers(0, 1 << 40), st.integers(0, 1 << 40), fields).map(list),
    st.tuples(names, st.integers(0, 1 << 40), st.integers(0, 1 << 40), parts).map(list),
))
def test_structured_garbage_never_raises(typebyte, body):
    rx = _core(encrypted=False)
    try:
        data = bytes([typebyte]) + msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    rx.receive(data, SRC, 1.0)
    _accounted(rx)


@FUZZ
@given(st.sampled_from(VALID_PLAIN), st.data())
def test_mutated_plaintext_never_raises(pkt, data):
    rx = _core(encrypted=False)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(pkt) - 1))
        pkt = pkt[:i] + bytes([data.draw(st.integers(0, 255))]) + pkt[i + 1:]
    rx.receive(pkt[:data.draw(st.integers(0, len(pkt)))], SRC, 1.0)
    _accounted(rx)


def test_plaintext_to_an_encrypted_member_is_an_auth_drop():
    rx = _core()
    for p in VALID_PLAIN:
        rx.receive(p, SRC, 1.0)
    assert rx.stats["dropped_auth"] == len(VALID_PLAIN)
    assert len(rx.members()) == 1
