"""Test helpers: a cluster CA, member identities, and peers that talk to a core by hand.

``Peer(name)`` is a member with its own certificate and key: it seals packets for a
core with their pair key, signs its own statements, and opens what the core sends it.
``make_core`` builds a core that already knows a few such peers (as after a
converged start). Real crypto throughout; the wall clock is the real one.
"""

from __future__ import annotations

import random
import time
from typing import Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmlet import pki
from swarmlet.shipped.gossip import statements, wire
from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.core import GossipCore
from swarmlet.shipped.gossip.crypto import Keyring, generate_key
from swarmlet.shipped.gossip.identity import Identity, Trust
from swarmlet.shipped.gossip.session import Sessions

CA = pki.create_ca("test-cluster")
CA_DER = x509.load_pem_x509_certificate(CA.cert_pem).public_bytes(serialization.Encoding.DER)
RING = Keyring([generate_key()])
ADDR = {f"n{i}": (f"10.0.0.{i}", 7946) for i in range(1, 10)}
_IDS: Dict[str, Identity] = {}


def identity(name: str, ca: pki.KeyPair = CA, role: str = "agent") -> Identity:
    key = (name, id(ca), role)
    if key not in _IDS:
        kp = pki.issue(ca, name, role)
        _IDS[key] = Identity.from_pem(kp.cert_pem, kp.key_pem)
    return _IDS[key]


def trust() -> Trust:
    return Trust(CA_DER)


class Peer:
    """A member speaking for itself to one or more cores."""

    def __init__(self, name: str, ring: Keyring = RING, ident: Optional[Identity] = None) -> None:
        self.name = name
        self.ident = ident or identity(name)
        self.trust = trust()
        self.sessions = Sessions(self.ident, self.trust, ring)
        self.header = wire.Header(name)
        self.stamper = wire.Stamper()
        self.addr = ADDR.get(name, ("10.0.1.1", 7946))

    def knows(self, core: GossipCore) -> "Peer":
        self.trust.add_verified(core.identity.cert)
        return self

    def plain(self, *msgs, stamp: Optional[int] = None) -> bytes:
        stamp = self.stamper.next(time.time()) if stamp is None else stamp
        return wire.pack_items(self.header, stamp, [wire.item(m) for m in msgs])

    def packet(self, core: GossipCore, *msgs, stamp: Optional[int] = None) -> bytes:
        self.knows(core)
        return self.sessions.seal(core.identity.cert, self.plain(*msgs, stamp=stamp))

    def send(self, core: GossipCore, *msgs, now: float = 0.0):
        return core.receive(self.packet(core, *msgs), self.addr, now)

    def record(self, inc: int = 0, mver: int = 1, meta=None) -> wire.Record:
        host, port = self.addr
        return statements.record(self.ident, self.name, inc, mver, host, port, meta or {})

    def alive(self, inc: int) -> wire.Alive:
        return statements.alive(self.ident, self.name, inc)

    def leave(self, inc: int) -> wire.Leave:
        return statements.leave(self.ident, self.name, inc)

    def hello(self, want_reply: bool = False) -> bytes:
        return self.sessions.hello(want_reply)

    def open(self, data: bytes) -> List[object]:
        """Messages of a packet the core sent us (a hello opens to [])."""
        if data[0] == 0x22:
            return []
        _, plain = self.sessions.open(data)
        return wire.decode_packet(plain).messages


def make_core(peers: int = 5, name: str = "n1", **cfg) -> GossipCore:
    """A secure core that knows ``n2..n{peers+1}`` (certificates and signed records)."""
    core = GossipCore(name, ADDR[name], keyring=RING, identity=identity(name), trust=trust(),
                      config=GossipConfig(**cfg), rng=random.Random(4))
    members = [Peer(f"n{i}") for i in range(2, peers + 2)]
    core.seed_members([p.record() for p in members], [p.ident.cert for p in members])
    return core


def opened(core: GossipCore, sends) -> List[List[object]]:
    """Open a core's sends as the peers they went to (by address; hellos open to [])."""
    by_addr = {a: n for n, a in ADDR.items()}
    peers: Dict[str, Peer] = {}
    out = []
    for data, addr in sends:
        name = by_addr[addr]
        if name not in peers:
            peers[name] = Peer(name).knows(core)
        out.append(peers[name].open(data))
    return out


def pair(encrypted: bool = True, rx: str = "rx", tx: str = "tx"):
    """(make_rx, tx): ``make_rx()`` builds a fresh receiver that knows ``tx`` (and the
    reverse), so fuzz tests can feed ``tx``'s real packets to a clean core each time.

    Both read one wall clock frozen when the pair is made: packets made at import are
    replayed to receivers made minutes later (a long test session), and a live clock
    would then drop every one of them as stale (``max_clock_skew``)."""
    frozen = time.time()
    cfg = GossipConfig(allow_plaintext=not encrypted)
    ring = RING if encrypted else None
    addr_rx, addr_tx = ("10.0.0.1", 7946), ("10.0.0.2", 7946)

    def make(name: str, addr) -> GossipCore:
        return GossipCore(name, addr, keyring=ring, identity=identity(name) if encrypted else None,
                          trust=trust() if encrypted else None, config=cfg,
                          rng=random.Random(1), wall=lambda: frozen)

    txc = make(tx, addr_tx)
    proto = make(rx, addr_rx)
    certs = [identity(rx).cert, identity(tx).cert] if encrypted else []

    def make_rx() -> GossipCore:
        core = make(rx, addr_rx)
        core.seed_members([txc.record], certs)
        return core

    extra = [] if encrypted else [wire.Record("n3", 0, 1, "10.0.0.3", 7946, {"a": 1}, b"")]
    txc.seed_members([proto.record] + extra, certs)
    return make_rx, txc


def accounted(core: GossipCore) -> None:
    """Every packet sits in exactly one outcome counter; nothing raised inside."""
    from swarmlet.shipped.gossip.core import OUTCOME_KEYS
    s = core.stats
    assert s["internal_errors"] == 0
    assert s["packets_in"] + s["held_released"] == sum(s[k] for k in OUTCOME_KEYS), s
