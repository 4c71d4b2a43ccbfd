"""A deterministic simulated network for ``GossipCore``: fake clock, latency, loss,
partitions, crashes, pauses, slow members and skewed clocks.

It drives the real core (real wire format; with a keyring, real pair envelopes, real
certificates from a cluster CA made here, real signatures) with a discrete-event loop:
one heap of deliveries and per-member timer wake-ups, each member woken only at its own
``next_deadline()``, so 1000 members simulate in seconds. The same seed gives the same
run, but for the random nonces and signatures inside the packets. Each member's wall
clock is ``wall0 + now + skew``, ``wall0`` the real time when the network was made (the
certificates are valid from then). ``taps`` see every datagram delivered (an attacker's
recorder). Tests and ``bench/gossip`` use it; nothing here does real I/O or reads a
clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .config import GossipConfig
from .core import Addr, GossipCore, Output
from .crypto import Keyring
from .identity import Identity, Trust
from .members import MemberEvent, MemberState

Observer = Callable[[float, str, MemberEvent], None]


class SimCA:
    """A cluster CA for the simulated members, as ``swarmlet init``/``join`` would make
    (EC P-256, role ``agent`` in the OU); a few lines of ``cryptography`` so that the
    shipped layer needs nothing from the admin side."""

    def __init__(self, wall0: float) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self._x509, self._hashes, self._ec, self._oid = x509, hashes, ec, NameOID
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarmlet:sim"),
                                x509.NameAttribute(NameOID.COMMON_NAME, "sim CA")])
        t0 = datetime.datetime.fromtimestamp(wall0, datetime.timezone.utc)
        self._from = t0 - datetime.timedelta(days=1)   # + 1 s per certificate issued
        self._to = t0 + datetime.timedelta(days=30)
        self._issued = 0
        cert = (x509.CertificateBuilder().subject_name(self._name).issuer_name(self._name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self._from).not_valid_after(self._to)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.der = cert.public_bytes(serialization.Encoding.DER)

    def issue(self, name: str) -> Identity:
        from cryptography.hazmat.primitives import serialization
        x509, oid = self._x509, self._oid
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(oid.ORGANIZATION_NAME, "swarmlet:sim"),
                             x509.NameAttribute(oid.ORGANIZATIONAL_UNIT_NAME, "agent"),
                             x509.NameAttribute(oid.COMMON_NAME, name)])
        import datetime
        # Each certificate a second younger than the last: a renewal is the newest.
        self._issued += 1
        start = self._from + datetime.timedelta(seconds=self._issued)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(self._to)
                .sign(self._key, self._hashes.SHA256()))
        return Identity(cert.public_bytes(serialization.Encoding.DER), key)
Tap = Callable[[float, Addr, Addr, bytes], None]   # (now, src, dst, data)

_DELIVER, _TICK = 0, 1


class SimNode:
    __slots__ = ("name", "addr", "core", "up", "tick_at", "paused_until", "delay", "skew")

    def __init__(self, name: str, addr: Addr, core: GossipCore, skew: float) -> None:
        self.name = name
        self.addr = addr
        self.core = core
        self.up = True
        self.tick_at = math.inf
        self.paused_until = 0.0
        self.delay = 0.0      # extra inbound processing delay: a slow, starved member
        self.skew = skew      # its wall clock runs this far ahead of true time


class SimNetwork:
    def __init__(self, seed: int = 0, *, config: Optional[GossipConfig] = None,
                 keyring: Optional[Keyring] = None, latency: Tuple[float, float] = (0.0005, 0.002),
                 loss: float = 0.0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.config = config or GossipConfig(allow_plaintext=keyring is None)
        self.keyring = keyring
        self.latency = latency
        self.loss = loss
        self.nodes: Dict[str, SimNode] = {}
        self._by_addr: Dict[Addr, SimNode] = {}
        self._heap: List[Tuple[float, int, int, Any, Any, Any]] = []
        self._seq = itertools.count()
        self._group: Optional[Dict[str, int]] = None
        self.observers: List[Observer] = []
        self.taps: List[Tap] = []
        self.delivered = 0
        self.dropped = 0
        self._skews: Dict[str, float] = {}
        self.wall0 = float(int(time.time()))   # only the certificates' validity needs it real
        self._ca: Optional[SimCA] = SimCA(self.wall0) if keyring is not None else None
        self.ca_der = self._ca.der if self._ca is not None else b""
        self.identities: Dict[str, Identity] = {}

    def identity(self, name: str) -> Identity:
        """The member's certificate and key (made once: a restart keeps them)."""
        ident = self.identities.get(name)
        if ident is None:
            ident = self.identities[name] = self._ca.issue(name)
        return ident

    def trust(self) -> Optional[Trust]:
        if self._ca is None:
            return None
        return Trust(self.ca_der, skew=self.config.max_clock_skew,
                     max_certs=self.config.max_members)

    # --- building the cluster ----------------------------------------------------------

    def _addr_for(self, i: int) -> Addr:
        return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 7946)

    def add(self, name: str, meta: Optional[Dict[str, Any]] = None,
            seeds: Iterable[str] = (), config: Optional[GossipConfig] = None) -> SimNode:
        """Start a member and, if ``seeds`` (member names) are given, join through them."""
        old = self.nodes.get(name)
        addr = old.addr if old is not None else self._addr_for(len(self.nodes) + 1)
        skew = self._skews.get(name, 0.0)
        secure = self.keyring is not None
        core = GossipCore(name, addr, keyring=self.keyring,
                          identity=self.identity(name) if secure else None,
                          trust=self.trust(), config=config or self.config,
                          meta=meta or {}, now=self.now, wall=self._wall_of(name),
                          rng=random.Random(self.rng.random()))
        node = SimNode(name, addr, core, skew)
        self.nodes[name] = node
        self._by_addr[addr] = node
        seed_addrs = [self.nodes[s].addr for s in seeds]
        self._after(node, core.join(seed_addrs, self.now) if seed_addrs else core.tick(self.now))
        return node

    def add_converged(self, n: int, prefix: str = "n",
                      meta: Optional[Callable[[int], Dict[str, Any]]] = None) -> List[str]:
        """``n`` members that already know each other (as after a long quiet period)."""
        names = [f"{prefix}{i}" for i in range(n)]
        metas = [meta(i) if meta else {} for i in range(n)]
        nodes = [self.add(nm, metas[i]) for i, nm in enumerate(names)]
        records = [nd.core.record for nd in nodes]
        certs = [self.identities[nm].cert for nm in names] if self.keyring is not None else []
        for nd in nodes:
            nd.core.seed_members(records, certs)
            self._reschedule(nd)
        return names

    def _wall_of(self, name: str) -> Callable[[], float]:
        return lambda: self.wall0 + self.now + self._skews.get(name, 0.0)

    def set_skew(self, name: str, seconds: float) -> None:
        """Set ``name``'s wall clock ``seconds`` ahead of true time (negative: behind)."""
        self._skews[name] = seconds
        if name in self.nodes:
            self.nodes[name].skew = seconds

    # --- faults ----------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """Crash: no leave message, packets to it vanish."""
        self.nodes[name].up = False

    def restart(self, name: str, seeds: Iterable[str] = (), meta: Optional[Dict[str, Any]] = None
                ) -> SimNode:
        """A new process at the same address (fresh incarnation 0, newer epoch)."""
        return self.add(name, meta, seeds)

    def pause(self, name: str, duration: float) -> None:
        """Freeze a member (GC pause, SIGSTOP): packets queue up, timers wait."""
        self.nodes[name].paused_until = self.now + duration

    def slow(self, name: str, delay: float) -> None:
        """Every packet to ``name`` is processed ``delay`` seconds late."""
        self.nodes[name].delay = delay

    def partition(self, *groups: Iterable[str]) -> None:
        """Only members of the same group hear each other (unlisted members: group -1)."""
        self._group = {}
        for gi, g in enumerate(groups):
            for nm in g:
                self._group[nm] = gi

    def heal(self) -> None:
        self._group = None

    # --- driving -------------------------------------------------------------------------

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        self._after(node, node.core.leave(self.now))

    def update_meta(self, name: str, meta: Dict[str, Any]) -> None:
        node = self.nodes[name]
        self._after(node, node.core.update_meta(meta, self.now))

    def inject(self, name: str, data: bytes, src: Addr) -> None:
        """Deliver raw bytes to a member now (forged, replayed or garbage packets)."""
        node = self.nodes[name]
        self._after(node, node.core.receive(data, src, self.now))

    def renew(self, name: str) -> Identity:
        """Give a member a new certificate and key (a renewal), live."""
        ident = self.identities[name] = self._ca.issue(name)
        node = self.nodes[name]
        self._after(node, node.core.set_identity(ident, self.now))
        return ident

    def set_revoked(self, serials: Iterable[int], among: Optional[Iterable[str]] = None) -> None:
        """Ship a revocation list to members (all live ones by default)."""
        serials = list(serials)
        for name in (among if among is not None else [n.name for n in self.live()]):
            node = self.nodes[name]
            self._after(node, node.core.set_revoked(serials, self.now))

    def run_until(self, t: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t:
            when, _, kind, a, b, c = pop(heap)
            self.now = when
            if kind == _TICK:
                node = a
                if node.tick_at != when or node is not self.nodes.get(node.name) or not node.up:
                    continue
                node.tick_at = math.inf
                if node.paused_until > when:
                    node.tick_at = node.paused_until
                    self._push(node.paused_until, _TICK, node)
                    continue
                self._after(node, node.core.tick(when))
            else:
                node = self._by_addr.get(a)
                if node is None or not node.up:
                    continue
                if node.paused_until > when:
                    self._push(node.paused_until, _DELIVER, a, b, c)
                    continue
                self.delivered += 1
                for tap in self.taps:
                    tap(when, c, a, b)
                out = node.core.receive(b, c, when)
                if node.tick_at <= when:  # timers due while the packet waited run first
                    node.tick_at = math.inf
                    self._after(node, node.core.tick(when))
                self._after(node, out)
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float, step: float = 0.1
                       ) -> Optional[float]:
        """Advance in ``step``s until ``pred()``; the sim time it became true, or None."""
        end = self.now + timeout
        while self.now < end:
            if pred():
                return self.now
            self.run_until(min(end, self.now + step))
        return self.now if pred() else None

    # --- inspection ----------------------------------------------------------------------

    def live(self) -> List[SimNode]:
        return [n for n in self.nodes.values() if n.up and not n.core.left]

    def all_see(self, name: str, state: MemberState, among: Optional[Iterable[str]] = None) -> bool:
        nodes = [self.nodes[m] for m in among] if among is not None else self.live()
        return all(n.core.state_of(name) == state for n in nodes if n.name != name)

    def converged(self, among: Optional[Iterable[str]] = None) -> bool:
        """Every live member sees every other live member alive."""
        nodes = [self.nodes[m] for m in among] if among is not None else self.live()
        names = [n.name for n in nodes]
        return all(n.core.state_of(m) == MemberState.ALIVE for n in nodes for m in names)

    # --- plumbing --------------------------------------------------------------------------

    def _push(self, when: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, a, b, c))

    def _reschedule(self, node: SimNode) -> None:
        d = node.core.next_deadline()
        if d < node.tick_at:
            node.tick_at = d
            self._push(max(d, self.now), _TICK, node)
            node.tick_at = max(d, self.now)

    def _after(self, node: SimNode, out: Output) -> None:
        if out.sends:
            rng = self.rng
            lo, hi = self.latency
            group = self._group
            src_group = group.get(node.name, -1) if group is not None else 0
            for data, dst in out.sends:
                if self.loss and rng.random() < self.loss:
                    self.dropped += 1
                    continue
                target = self._by_addr.get(dst)
                if target is None:
                    self.dropped += 1
                    continue
                if group is not None and group.get(target.name, -1) != src_group:
                    self.dropped += 1
                    continue
                when = self.now + lo + (hi - lo) * rng.random() + target.delay
                self._push(when, _DELIVER, dst, data, node.addr)
        if out.events:
            for obs in self.observers:
                for ev in out.events:
                    obs(self.now, node.name, ev)
        self._reschedule(node)
