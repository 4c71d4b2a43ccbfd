"""Bulk hostile gossip: at least 100,000 forged, garbled and replayed packets,
chosen by hypothesis, each one counted (issue 9, bad input).

``tests/unit/gossip/test_fuzz.py`` checks each kind of bad packet a few
hundred times; this is the volume run. Hypothesis draws *recipes* (a kind, a
source packet, positions, bytes, a seed) — a whole packet list per example
would overrun its entropy buffer — and each recipe expands into
``PER_RECIPE`` packets that are fed, one by one, to a real ``GossipCore``
(encrypted, or plaintext so the msgpack decoder sees the garbage). After every
example: no exception, no internal error, and every packet sits in exactly one
outcome counter (accepted, a hello, held for a certificate, or dropped for auth /
malformed / replay / stale / version / revoked / certificate). The test then
asserts the grand total. Pure, no I/O: it runs in a few seconds.
"""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.shipped.gossip import wire
from swarmlet.shipped.gossip.core import OUTCOME_KEYS
from swarmlet.shipped.gossip.crypto import Keyring, generate_key

from tests.unit.gossip.peers import pair

pytestmark = pytest.mark.chaos

TARGET = 100_000
PER_RECIPE = 16
FORGER = Keyring([generate_key()])
SRC = ("10.0.0.2", 7946)
KINDS = ("garbage", "truncated", "flipped", "forged", "replayed", "plain_mutated", "plain_structured")


def _valid(encrypted: bool):
    """Real packets of a real peer to ``rx``: join, push-pull, meta gossip, probes."""
    make_rx, tx = pair(encrypted)
    out = list(tx.join([("10.0.0.1", 7946)], 0.0).sends)
    out += tx.update_meta({"cpu_percent": 1.5}, 0.1).sends
    for t in (1.0, 2.0, 5.0):
        out += tx.tick(t).sends
    return make_rx, [d for d, a in out if a == ("10.0.0.1", 7946)]


MAKE_RX, VALID = _valid(True)
MAKE_RX_PLAIN, VALID_PLAIN = _valid(False)


def _expand(kind: str, src: int, pos: int, blob: bytes, seed: int):
    """``PER_RECIPE`` packets of one kind, derived deterministically from the recipe."""
    rnd = random.Random(seed)
    pool = VALID_PLAIN if kind.startswith("plain") else VALID
    base = pool[src % len(pool)]
    for i in range(PER_RECIPE):
        if kind == "garbage":
            yield blob + rnd.randbytes(rnd.randrange(0, 200))
        elif kind == "truncated":
            yield base[:(pos + i) % len(base)]
        elif kind == "flipped":
            j = (pos + rnd.randrange(len(base))) % len(base)
            yield base[:j] + bytes([base[j] ^ (1 << rnd.randrange(8))]) + base[j + 1:]
        elif kind == "forged":
            t = (wire.WIRE_VERSION << 4) | ((pos + i) % 16)
            yield FORGER.seal(bytes([t]) + blob + rnd.randbytes(rnd.randrange(0, 64)))
        elif kind == "replayed":
            yield VALID[(src + i) % len(VALID)]
        elif kind == "plain_mutated":
            p = bytearray(base)
            for _ in range(1 + rnd.randrange(4)):
                p[rnd.randrange(len(p))] = rnd.randrange(256)
            yield bytes(p[:rnd.randrange(len(p) + 1)])
        else:  # plain_structured: well-formed msgpack of the wrong shape
            body = [blob.decode("latin-1"), pos, rnd.randrange(1 << 40),
                    [[rnd.randrange(20), [rnd.random(), None, blob]] for _ in range(rnd.randrange(4))]]
            yield bytes([rnd.randrange(256)]) + msgpack.packb(body[:rnd.randrange(5)], use_bin_type=True)


recipes = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 4000),
                             st.binary(max_size=48), st.integers(0, 2 ** 32)),
                   min_size=20, max_size=40)


def test_100k_hostile_packets_are_each_counted_and_never_crash():
    total = {"packets": 0, "ok": 0, "auth": 0, "malformed": 0, "replay": 0, "other": 0}

    @settings(max_examples=260, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(recipes)
    def feed(batch):
        cores = {True: MAKE_RX(), False: MAKE_RX_PLAIN()}
        sent = {True: 0, False: 0}
        for kind, src, pos, blob, seed in batch:
            enc = not kind.startswith("plain")
            for pkt in _expand(kind, src, pos, blob, seed):
                cores[enc].receive(pkt, SRC, 1.0)
                sent[enc] += 1
        for enc, core in cores.items():
            s = core.stats
            assert s["internal_errors"] == 0
            assert s["packets_in"] == sent[enc]
            assert s["packets_in"] + s["held_released"] == sum(s[k] for k in OUTCOME_KEYS), s
            total["packets"] += s["packets_in"]
            total["ok"] += s["packets_ok"]
            total["auth"] += s["dropped_auth"]
            total["malformed"] += s["dropped_malformed"]
            total["replay"] += s["dropped_replay"]
            total["other"] += sum(s[k] for k in OUTCOME_KEYS) - s["packets_ok"] - s[
                "dropped_auth"] - s["dropped_malformed"] - s["dropped_replay"]

    feed()
    print(f"\ngossip flood: {total}")
    assert total["packets"] >= TARGET, total
    # each kind of drop was exercised, and real packets still got through first time
    assert total["auth"] and total["malformed"] and total["replay"] and total["ok"], total
