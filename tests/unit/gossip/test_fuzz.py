"""Hypothesis fuzz of the receive path: garbage, truncated, replayed and forged packets.

Invariants: ``receive`` never raises; every packet lands in exactly one outcome
counter (accepted, a hello, held for a certificate, or dropped for auth / malformed /
replay / stale / version / revoked / certificate); no internal error is counted.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.crypto import Keyring, generate_key

from tests.unit.gossip.peers import accounted, pair

pytestmark = pytest.mark.unit

SRC = ("10.0.0.2", 7946)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_packets(encrypted: bool = True):
    """Real packets from a real peer to ``rx``: push-pull, ping, meta gossip, probes."""
    make_rx, tx = pair(encrypted)
    out = list(tx.join([("10.0.0.1", 7946)], 0.0).sends)
    out += tx.update_meta({"cpu_percent": 1.5}, 0.1).sends
    for t in (1.0, 2.0, 5.0):
        out += tx.tick(t).sends   # probes, gossip, a suspicion
    return make_rx, [d for d, a in out if a == ("10.0.0.1", 7946)]


MAKE_RX, VALID = _valid_packets()
MAKE_RX_PLAIN, VALID_PLAIN = _valid_packets(encrypted=False)


def test_valid_packets_are_accepted_exactly_once():
    rx = MAKE_RX()
    for p in VALID:
        rx.receive(p, SRC, 0.2)
    ok = rx.stats["packets_ok"]
    assert ok + rx.stats["hellos_in"] == len(VALID) and ok >= 4
    for p in VALID:
        rx.receive(p, SRC, 0.3)
    assert rx.stats["dropped_replay"] == ok
    assert any(m.name == "tx" and m.meta == {"cpu_percent": 1.5} for m in rx.members())
    accounted(rx)


@FUZZ
@given(st.binary(max_size=2000))
def test_garbage_is_never_accepted(data):
    rx = MAKE_RX()
    rx.receive(data, SRC, 1.0)
    assert rx.stats["packets_ok"] == 0
    accounted(rx)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_truncated_and_bit_flipped_packets_are_forgeries(pkt, data):
    cut = data.draw(st.integers(0, len(pkt) - 1))
    i = data.draw(st.integers(0, len(pkt) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = pkt[:i] + bytes([pkt[i] ^ (1 << bit)]) + pkt[i + 1:]
    rx = MAKE_RX()
    rx.receive(pkt[:cut], SRC, 1.0)
    rx.receive(flipped, SRC, 1.0)
    assert rx.stats["packets_ok"] == rx.stats["hellos_in"] == 0
    accounted(rx)


@FUZZ
@given(st.binary(min_size=1, max_size=1200), st.sampled_from(list(range(16))))
def test_forged_with_another_key_is_dropped(plain, t):
    forger = Keyring([generate_key()])
    rx = MAKE_RX()
    rx.receive(forger.seal(bytes([(wire.WIRE_VERSION << 4) | t]) + plain), SRC, 1.0)
    assert rx.stats["dropped_auth"] == 1
    accounted(rx)


@FUZZ
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=12))
def test_replays_in_any_order_are_counted(seq):
    rx = MAKE_RX()
    for p in seq:
        rx.receive(p, SRC, 1.0)
    distinct = set(seq)
    hellos = sum(1 for p in distinct if p[0] == 0x22)
    assert rx.stats["packets_ok"] == len(distinct) - hellos
    assert rx.stats["hellos_in"] == sum(1 for p in seq if p[0] == 0x22)   # idempotent
    assert rx.stats["dropped_replay"] == len(seq) - len(distinct) - (
        rx.stats["hellos_in"] - hellos)
    accounted(rx)


# Decoder fuzz (plaintext mode, so the msgpack layer sees the garbage directly).

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 64), 1 << 64),
                    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda c: st.one_of(
    st.lists(c, max_size=6), st.dictionaries(st.text(max_size=10), c, max_size=5)), max_leaves=25)
names = st.text(min_size=1, max_size=20)
fields = st.lists(values, max_size=8)
parts = st.lists(st.tuples(st.integers(0, 20), fields).map(list), min_size=1, max_size=5)


@FUZZ
@given(st.integers(0, 255), st.one_of(
    values,
    st.tuples(names, st.integers(0, 1 << 60), fields).map(list),
    st.tuples(names, st.integers(0, 1 << 60), parts).map(list),
))
def test_structured_garbage_never_raises(typebyte, body):
    rx = MAKE_RX_PLAIN()
    try:
        data = bytes([typebyte]) + msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    rx.receive(data, SRC, 1.0)
    accounted(rx)


@FUZZ
@given(st.sampled_from(VALID_PLAIN), st.data())
def test_mutated_plaintext_never_raises(pkt, data):
    rx = MAKE_RX_PLAIN()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(pkt) - 1))
        pkt = pkt[:i] + bytes([data.draw(st.integers(0, 255))]) + pkt[i + 1:]
    rx.receive(pkt[:data.draw(st.integers(0, len(pkt)))], SRC, 1.0)
    accounted(rx)


def test_plaintext_to_an_encrypted_member_is_never_accepted():
    rx = MAKE_RX()
    for p in VALID_PLAIN:
        rx.receive(p, SRC, 1.0)
    assert rx.stats["packets_ok"] == rx.stats["hellos_in"] == 0
    assert len(rx.members()) == 2          # itself and tx, as before
    accounted(rx)
