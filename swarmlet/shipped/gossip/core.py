"""Sans-I/O SWIM membership with Lifeguard: the whole gossip protocol, no sockets, no clock.

``GossipCore`` is driven from outside: ``receive(data, addr, now)`` for each datagram,
``tick(now)`` whenever ``next_deadline()`` passes, and ``join``/``leave``/``update_meta``
/``set_revoked``. Each returns an ``Output``: datagrams to send (already sealed) and
membership events. The asyncio transport and the simulator are the two drivers. The
wall clock (packet stamps, certificate validity) is the injected ``wall()``.

What it does (memberlist's design, which serf and Consul run in production):

- SWIM failure detection: every probe interval, ping the next member of a shuffled
  round-robin list; with no ack within the probe timeout, ask ``indirect_checks``
  random members to ping it for us; with still no ack by the end of the interval,
  suspect it. A suspect not refuted before its suspicion timeout is declared dead.
- Incarnations: only the member itself raises its incarnation, to refute a suspicion
  (or a death); alive(i) beats suspect(j) iff i > j, suspect/dead(i) beat alive(j)
  iff i >= j. Metadata has its own version (``mver``), so publishing metadata does
  not touch liveness and a refutation carries an incarnation, not the record.
- Dissemination: changes are queued (``BroadcastQueue``) and piggybacked on every
  packet, and gossiped every ``gossip_interval`` to ``gossip_nodes`` random members,
  each at most retransmit_mult*ceil(log10(N+1)) times.
- Anti-entropy: push-pull of digests ``(name, inc, state, mver)`` with a random member
  every push-pull period; each side pulls the signed statements (and certificates) it
  is behind on, and merges remote dead/suspect entries as suspicions so they can be
  refuted; with a random dead member every ``reconnect_interval`` (serf's reconnect),
  which merges healed partitions; with the seeds while no live peer is known.
- Lifeguard: (1) a local-health score (0..awareness_max_multiplier-1) raised by failed
  probes that lacked the nacks a healthy network would have produced, and by having to
  refute, lowered by successful probes; probe interval and timeout are scaled by
  score+1, so a slow member stops accusing healthy ones. (2) The suspicion timeout
  starts at max = 6*min and shrinks toward min = 4*max(1, log10 N)*interval as
  independent members confirm it. (3) Buddy system: a ping to a suspect carries the
  suspicion, so the member learns of it from the prober and refutes at once.

Security (a cluster with a keyring; ``allow_plaintext`` clusters trust every claim):

- Every packet is sealed for its one recipient with a pair key (``session``), so its
  sender is authenticated; its stamp must be fresh and unseen (``replay``).
- What a member says about itself (record, alive, leave) is signed by it
  (``statements``) and checked against its certificate from the cluster CA; a member
  exists only with such a certificate. Certificates come once, in a hello or on
  request, and are cached by name (``identity.Trust``).
- Claims about others (suspect, dead, digests) are refused above the incarnation the
  subject itself signed; claims about ourselves above our own incarnation need our
  own signature (we restarted), which we fetch. So a refutation always fits.
- ``set_revoked(serials)`` refuses a revoked node's packets and statements at once.

Every drop is counted in ``stats``, every buffer is bounded, and nothing raises out of
``receive``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import random
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from ..exceptions import AuthError, ConfigError, ProtocolError
from . import crypto, statements, wire
from .broadcast import BroadcastQueue
from .config import GossipConfig
from .crypto import Keyring
from .identity import Identity, PeerCert, RevokedCert, Trust
from .members import EventKind, Member, MemberEvent, MemberState, Node, Suspicion
from .replay import ReplayGuard
from .session import RevokedSender, Sessions, UnknownSender
from .wire import (INC_MAX, ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT, Ack, Alive, Cert, CertReq,
                   Dead, Entry, IndirectPing, Item, Leave, Nack, Ping, Pull, PushPull, Record,
                   Suspect)

Addr = Tuple[str, int]

# Timer kinds.
_T_PROBE, _T_PROBE_TIMEOUT, _T_GOSSIP, _T_PUSH_PULL, _T_SUSPICION, _T_RELAY, _T_REAP, \
    _T_RECONNECT, _T_REJOIN, _T_META, _T_HOUSEKEEP, _T_CATCHUP = range(12)

# A relay gives up (and nacks) a little before the requester's window closes, so the
# nack arrives in time to count (the requester waits interval - timeout after asking).
_RELAY_FRACTION = 0.8

# Seconds (each stretched by a random 1-2x) after a join for extra push-pulls.
_JOIN_FOLLOW_UPS = (1.0, 4.0)

_HOUSEKEEP_EVERY = 5.0
_HELD_MAX, _HELD_TTL = 64, 2.0            # packets from a sender whose certificate is coming
_PARKED_NAMES, _PARKED_PER_NAME, _PARKED_TTL = 1024, 4, 10.0
_ASK_EVERY = 2.0                          # per name: certificate / statement requests
_ASKED_MAX = 8192
_HELLO_REPLY_EVERY = 0.5                  # per address
_JOIN_WAIT = 5.0
# Asking for certificates and statements: at most this many names per peer per packet;
# more (a member joining a big cluster) wait in a catch-up list, asked every 0.25 s,
# so answers come in paced bursts a UDP socket buffer can take.
_ASK_BATCH, _CATCHUP_EVERY, _CATCHUP_TTL = 128, 0.25, 60.0

STAT_KEYS = (
    "packets_in", "packets_ok", "packets_out", "bytes_in", "bytes_out",
    "dropped_auth", "dropped_malformed", "dropped_replay", "dropped_stale", "dropped_version",
    "dropped_revoked", "dropped_cert", "unknown_messages",
    "held_unknown", "held_released", "dropped_unknown_sender",
    "hellos_in", "hellos_out", "certs_added", "cert_requests",
    "bad_signatures", "refused_claims", "refused_members", "refused_certs", "refused_revoked",
    "parked",
    "misdirected_pings", "probes", "probe_failures", "indirect_probes", "acks_relayed",
    "suspicions", "refutes", "deaths", "leaves", "joins", "updates", "revoked_members",
    "push_pulls", "internal_errors",
)

# Packet outcomes: every packet received lands in exactly one of these (held ones are
# counted again when released: packets_in + held_released == the sum of these).
OUTCOME_KEYS = ("packets_ok", "hellos_in", "held_unknown", "dropped_auth", "dropped_malformed",
                "dropped_replay", "dropped_stale", "dropped_version", "dropped_revoked",
                "dropped_cert")


class Output(NamedTuple):
    sends: List[Tuple[bytes, Addr]]
    events: List[MemberEvent]


class _From:
    """Who a packet came from: its (authenticated, unless plaintext) sender."""

    __slots__ = ("name", "peer", "addr")

    def __init__(self, name: str, peer: Optional[PeerCert], addr: Addr) -> None:
        self.name = name
        self.peer = peer
        self.addr = addr


class _Probe:
    __slots__ = ("seq", "target", "inc", "acked", "expected_nacks", "nacks")

    def __init__(self, seq: int, target: str, inc: int) -> None:
        self.seq = seq
        self.target = target
        self.inc = inc
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0


def _rkey(name: str) -> str:
    # Broadcast-queue key of a member's record (its liveness news is keyed by its name).
    return name + "\x00"


class GossipCore:
    def __init__(self, name: str, addr: Addr, *, keyring: Optional[Keyring],
                 identity: Optional[Identity] = None, trust: Optional[Trust] = None,
                 config: Optional[GossipConfig] = None, meta: Optional[Dict[str, Any]] = None,
                 now: float = 0.0, wall: Optional[Callable[[], float]] = None,
                 rng: Optional[random.Random] = None, seeds: Iterable[Addr] = ()) -> None:
        self.config = cfg = config or GossipConfig()
        if keyring is None and not cfg.allow_plaintext:
            raise ConfigError("gossip without a key needs allow_plaintext=True")
        wire._name(name, "name")
        self.name = name
        self.host, self.port = addr
        self.keyring = keyring
        self.sessions: Optional[Sessions] = None
        if keyring is not None:
            if identity is None or trust is None:
                raise ConfigError("gossip needs this node's certificate and key, and the "
                                  "cluster CA (identity=, trust=)")
            if identity.name != name:
                raise ConfigError(f"the node certificate is for {identity.name!r}, "
                                  f"not {name!r}")
            self.sessions = Sessions(identity, trust, keyring, cfg.hello_interval)
            trust.add_verified(identity.cert)
        self.identity = identity if keyring is not None else None
        self.trust = trust if keyring is not None else None
        self._wall = wall or time.time
        self.inc = 0
        self.meta: Dict[str, Any] = _valid_local_meta(meta or {})
        self.mver = max(1, int(self._wall()))
        self.left = False
        self.rng = rng or random.Random()
        self.stats: Dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._now = now
        self._nodes: Dict[str, Node] = {}
        self._names: List[str] = []          # every other member, for random picks
        self._name_idx: Dict[str, int] = {}
        self._live = 0                       # other members alive or suspect
        self._queue = BroadcastQueue()
        self._timers: List[Tuple[float, int, int, Any]] = []
        self._tseq = itertools.count()
        self._seq = 0                        # ping sequence numbers
        self._stamper = wire.Stamper()
        self._header = wire.Header(name)
        self._room = wire.budget(self._header, cfg.udp_buffer_size,
                                 crypto.PAIR_OVERHEAD if keyring is not None else 0)
        self._replay = ReplayGuard(cfg.max_clock_skew, cfg.max_members + 64)
        self._probe: Optional[_Probe] = None
        self._probe_list: List[str] = []
        self._probe_idx = 0
        self._relays: Dict[int, Tuple[_From, int, bool]] = {}
        self.awareness = 0
        self._seeds: List[Addr] = list(seeds)
        self._meta_published = -math.inf
        self._meta_pending: Optional[Dict[str, Any]] = None
        self._gossip_armed = False
        self._gossip_base = now + self.rng.uniform(0, cfg.gossip_interval)
        self._sends: List[Tuple[bytes, Addr]] = []
        self._events: List[MemberEvent] = []
        # Security bookkeeping, each bounded.
        self._held: Deque[Tuple[float, bytes, bytes, Addr]] = collections.deque()
        self._parked: Dict[str, List[Tuple[float, Any, _From]]] = {}
        self._asked: Dict[Tuple[int, str], float] = {}
        self._wants: Dict[int, Tuple[_From, List[str], List[str]]] = {}
        self._catchup: Dict[str, Tuple[float, _From, bool, bool]] = {}
        self._catchup_armed = False
        self._joining: Dict[Addr, float] = {}
        self._hello_replies: Dict[Addr, float] = {}
        self._tombstones: Dict[str, Tuple[int, int, float]] = {}
        self._self_checked = False
        # First sign of trouble worth a log line (the transport logs each once).
        self.version_mismatch: Optional[Tuple[Addr, int]] = None
        self.clock_offset: Optional[Tuple[Addr, float]] = None
        self._handlers: Dict[type, Callable[[Any, _From], None]] = {
            Ping: self._h_ping, IndirectPing: self._h_indirect, Ack: self._h_ack,
            Nack: self._h_nack, Record: self._h_record, Alive: self._h_alive,
            Leave: self._h_leave, Suspect: self._h_suspect, Dead: self._h_dead,
            PushPull: self._h_push_pull, Pull: self._h_pull, CertReq: self._h_cert_req,
            Cert: self._h_cert,
        }
        self._record = self._sign_record()
        self._own_live: Any = None            # our latest signed alive (or leave)
        # Stagger the periodic timers so members do not act in lockstep.
        self._schedule(now + self.rng.uniform(0, cfg.probe_interval), _T_PROBE)
        self._pp_token = 0
        self._schedule(now + self.rng.uniform(0, cfg.push_pull_interval), _T_PUSH_PULL, 0)
        self._schedule(now + self.rng.uniform(0.5, 1.0) * cfg.reconnect_interval, _T_RECONNECT)
        self._schedule(now + cfg.rejoin_interval, _T_REJOIN)
        self._schedule(now + _HOUSEKEEP_EVERY, _T_HOUSEKEEP)
        # Announce ourselves: rides on the first packets once we know anyone.
        self._broadcast(_rkey(name), wire.item(self._record))

    @property
    def secure(self) -> bool:
        return self.sessions is not None

    # --- public, sans-I/O ----------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> Output:
        """Handle one datagram. Never raises: bad packets are dropped and counted."""
        self._now = now
        st = self.stats
        st["packets_in"] += 1
        st["bytes_in"] += len(data)
        try:
            self._receive(data, addr)
            self._flush_wants()
        except Exception:  # a bug must not take the member down; tests assert this stays 0
            st["internal_errors"] += 1
        return self._flush()

    def _receive(self, data: bytes, addr: Addr) -> None:
        st = self.stats
        peer: Optional[PeerCert] = None
        try:
            if self.sessions is None:
                pkt = wire.decode_packet(data)
            else:
                b0 = data[0] if data else -1
                if b0 == crypto.HELLO_BYTE:
                    self._on_hello(data, addr)
                    return
                if b0 == crypto.V1_BYTE:
                    raise wire.VersionMismatch(1)
                try:
                    peer, plain = self.sessions.open(data)
                except UnknownSender as exc:
                    self._hold(exc.sid, data, addr)
                    return
                pkt = wire.decode_packet(plain)
                if pkt.sender != peer.name:
                    raise AuthError("inner sender differs from the sealing certificate")
        except (RevokedSender, RevokedCert):
            st["dropped_revoked"] += 1
            return
        except AuthError:
            st["dropped_auth"] += 1
            return
        except wire.VersionMismatch as exc:
            st["dropped_version"] += 1
            if self.version_mismatch is None:
                self.version_mismatch = (addr, exc.version)
            return
        except ProtocolError:
            st["dropped_malformed"] += 1
            return
        if pkt.sender == self.name:
            st["dropped_replay"] += 1
            return
        if not self._replay.fresh(pkt.stamp, self._wall()):
            st["dropped_stale"] += 1
            if self.clock_offset is None:
                self.clock_offset = (addr, wire.stamp_time(pkt.stamp) - self._wall())
            return
        if not self._replay.accept(pkt.sender, pkt.stamp, self._now):
            st["dropped_replay"] += 1
            return
        st["packets_ok"] += 1
        st["unknown_messages"] += pkt.unknown
        src = _From(pkt.sender, peer, addr)
        for msg in pkt.messages:
            self._handlers[type(msg)](msg, src)

    def tick(self, now: float) -> Output:
        """Run every timer due at ``now``."""
        self._now = now
        timers = self._timers
        try:
            while timers and timers[0][0] <= now:
                _, _, kind, arg = heapq.heappop(timers)
                self._dispatch_timer(kind, arg)
        except Exception:
            self.stats["internal_errors"] += 1
        return self._flush()

    def next_deadline(self) -> float:
        return self._timers[0][0] if self._timers else math.inf

    def join(self, seeds: Iterable[Addr], now: float) -> Output:
        """Push-pull with each seed; seeds are remembered for rejoining when isolated."""
        self._now = now
        for s in seeds:
            s = (str(s[0]), int(s[1]))
            if s not in self._seeds:
                self._seeds.append(s)
            self._join_via(s)
        # Members started together each learn of the others mostly by gossip, which
        # can miss one; two early push-pulls settle it instead of the 30 s one.
        for delay in _JOIN_FOLLOW_UPS:
            self._schedule(now + delay * (1 + self.rng.random()), _T_PUSH_PULL, None)
        return self._flush()

    def leave(self, now: float) -> Output:
        """Announce a graceful leave (signed by us); stop probing."""
        self._now = now
        if not self.left:
            self.left = True
            self._own_live = statements.leave(self.identity, self.name, self.inc)
            self._broadcast(self.name, wire.item(self._own_live))
            self._events.append(MemberEvent(EventKind.LEAVE, self.member()))
        return self._flush()

    @property
    def leave_sent(self) -> bool:
        """The leave has been gossiped as often as any broadcast (or nobody is left to tell)."""
        return self.left and (self._live == 0 or not self._queue.pending(self.name))

    def update_meta(self, meta: Dict[str, Any], now: float) -> Output:
        """Publish new metadata under a higher metadata version (liveness is untouched).

        At most one publication per ``meta_min_interval``: a faster update is held
        and published (the latest one only) when the interval is up.
        """
        self._now = now
        meta = dict(_valid_local_meta(meta))
        if self.left:
            return self._flush()
        if self._meta_pending is not None:
            self._meta_pending = meta          # the held timer will publish the latest
        elif meta != self.meta:
            due = self._meta_published + self.config.meta_min_interval
            if now >= due:
                self._publish_meta(meta)
            else:
                self._meta_pending = meta
                self._schedule(due, _T_META)
        return self._flush()

    def set_revoked(self, serials: Iterable[int], now: float) -> Output:
        """The cluster's certificate serial denylist (all of it, replacing the last one).

        Revoked members are dead to us at once (an event, no gossip: every member gets
        the list); their packets, statements and accusations are refused from now on.
        """
        self._now = now
        if self.trust is None:
            return self._flush()
        for pc in self.trust.set_revoked(serials):
            self.sessions.drop(pc)
            node = self._nodes.get(pc.name)
            if node is None or self.trust.by_name(pc.name):
                continue
            self._replay.forget(pc.name)
            self._parked.pop(pc.name, None)
            node.cert = None
            if node.state <= ST_SUSPECT:
                node.suspicion = None
                self._set_state(node, ST_DEAD)
                self._schedule(self._now + self.config.dead_reap_time, _T_REAP,
                               (node.name, node.changed))
                self.stats["revoked_members"] += 1
                self._event(EventKind.DEAD, node)
        return self._flush()

    def set_identity(self, identity: Identity, now: float) -> Output:
        """Our certificate was renewed (same name, new key): seal and sign with it from now
        on; packets sealed for the previous one still open, and our record is re-signed."""
        self._now = now
        if self.sessions is None or identity.cert == self.identity.cert:
            return self._flush()
        if identity.name != self.name:
            raise ConfigError(f"the renewed certificate is for {identity.name!r}, "
                              f"not {self.name!r}")
        self.trust.add_verified(identity.cert)
        self.sessions.set_identity(identity)
        self.identity = identity
        if self._own_live is not None:
            self._own_live = (statements.leave if self.left else statements.alive)(
                identity, self.name, self.inc)
        if not self.left:
            self._new_record()
        return self._flush()

    def _publish_meta(self, meta: Dict[str, Any]) -> None:
        self._meta_pending = None
        if meta == self.meta or self.left:
            return
        self.meta = meta
        self._meta_published = self._now
        self._new_record()
        self._events.append(MemberEvent(EventKind.UPDATE, self.member()))

    def _new_record(self) -> None:
        self.mver = min(INC_MAX, max(self.mver + 1, int(self._wall())))
        self._record = self._sign_record()
        self._broadcast(_rkey(self.name), wire.item(self._record))

    def _sign_record(self) -> Record:
        return statements.record(self.identity, self.name, self.inc, self.mver, self.host,
                                 self.port, self.meta)

    @property
    def record(self) -> Record:
        """Our current signed record."""
        return self._record

    def member(self) -> Member:
        state = MemberState.LEFT if self.left else MemberState.ALIVE
        return Member(self.name, self.host, self.port, state, self.inc, dict(self.meta),
                      self.mver)

    def members(self) -> List[Member]:
        """Every known member, ourselves first (dead and left ones until reaped)."""
        return [self.member()] + [n.snapshot() for n in self._nodes.values()]

    def state_of(self, name: str) -> Optional[MemberState]:
        """A member's state as we see it (cheap; the simulator polls this)."""
        if name == self.name:
            return MemberState.LEFT if self.left else MemberState.ALIVE
        n = self._nodes.get(name)
        return None if n is None else _STATES[n.state]

    @property
    def live_count(self) -> int:
        """Members alive or suspect, ourselves included: the estimate of N."""
        return self._live + 1

    def seed_members(self, records: Iterable[Record], certs: Iterable[PeerCert] = ()) -> None:
        """Add alive members silently (no events, no gossip, no signature checks): the
        simulator's way of starting from an already converged cluster, where everyone
        holds everyone's certificate."""
        if self.trust is not None:
            for pc in certs:
                self.trust.add_verified(pc)
                self.sessions.confirmed.add(pc.fp)
        for r in records:
            if r.name != self.name and r.name not in self._nodes:
                self._add_node(r)
        # Spread push-pulls over the period for this size, as a long-running cluster would.
        self._pp_token += 1
        period = self.config.push_pull_period(self._live + 1)
        self._schedule(self._now + self.rng.uniform(0, period), _T_PUSH_PULL, self._pp_token)

    # --- output ----------------------------------------------------------------------

    def _flush(self) -> Output:
        if not self._sends and not self._events:
            return _EMPTY_OUTPUT  # shared and empty: callers only read outputs
        out = Output(self._sends, self._events)
        self._sends, self._events = [], []
        return out

    def _raw(self, pkt: bytes, addr: Addr) -> None:
        self._sends.append((pkt, addr))
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(pkt)

    def _emit(self, peer: Optional[PeerCert], addr: Addr, items: List[Item]) -> None:
        pkt = wire.pack_items(self._header, self._stamper.next(self._wall()), items)
        s = self.sessions
        if s is not None:
            if peer is None:
                return  # nobody to seal for: never happens for a member we admitted
            if s.needs_hello(peer, self._now):
                self._raw(s.hello(False), addr)
                self.stats["hellos_out"] += 1
            pkt = s.seal(peer, pkt)
        self._raw(pkt, addr)

    def _send(self, peer: Optional[PeerCert], addr: Addr, items: List[Item]) -> None:
        """Send ``items`` with as many pending broadcasts as fit piggybacked."""
        room = self._room - sum(i.cost for i in items)
        if room > 16 and len(self._queue):
            items = items + self._queue.take(room, self._limit())
        self._emit(peer, addr, items)

    def _reply(self, src: _From, items: List[Item]) -> None:
        self._send(src.peer, src.addr, items)

    def _emit_batched(self, src: _From, items: List[Item]) -> None:
        batch: List[Item] = []
        used = 0
        for it in items:
            if batch and used + it.cost > self._room:
                self._emit(src.peer, src.addr, batch)
                batch, used = [], 0
            batch.append(it)
            used += it.cost
        if batch:
            self._emit(src.peer, src.addr, batch)

    def _limit(self) -> int:
        return self.config.retransmit_limit(self._live + 1)

    def _broadcast(self, key: str, it: Item) -> None:
        self._queue.queue(key, it)
        if not self._gossip_armed:
            # Gossip rounds stay on this member's own 200 ms grid.
            gi = self.config.gossip_interval
            nxt = self._gossip_base + math.ceil((self._now - self._gossip_base) / gi) * gi
            if nxt <= self._now:
                nxt += gi
            self._gossip_armed = True
            self._schedule(nxt, _T_GOSSIP)

    # --- timers ----------------------------------------------------------------------

    def _schedule(self, when: float, kind: int, arg: Any = None) -> None:
        heapq.heappush(self._timers, (when, next(self._tseq), kind, arg))

    def _dispatch_timer(self, kind: int, arg: Any) -> None:
        if kind == _T_GOSSIP:
            self._gossip()
        elif kind == _T_PROBE:
            self._probe_round()
        elif kind == _T_PROBE_TIMEOUT:
            self._probe_timeout(arg)
        elif kind == _T_RELAY:
            self._relay_timeout(arg)
        elif kind == _T_SUSPICION:
            self._suspicion_timeout(arg)
        elif kind == _T_PUSH_PULL:
            if arg is None:
                self._push_pull_once()
            elif arg == self._pp_token:
                self._push_pull()
        elif kind == _T_RECONNECT:
            self._reconnect()
        elif kind == _T_REJOIN:
            self._rejoin()
        elif kind == _T_REAP:
            self._reap(arg)
        elif kind == _T_META:
            if self._meta_pending is not None:
                self._publish_meta(self._meta_pending)
        elif kind == _T_HOUSEKEEP:
            self._housekeep()
        elif kind == _T_CATCHUP:
            self._catch_up()

    def _scale(self, t: float) -> float:
        return t * (self.awareness + 1)

    def _adjust_awareness(self, delta: int) -> None:
        top = self.config.awareness_max_multiplier - 1
        self.awareness = min(top, max(0, self.awareness + delta))

    # --- failure detection -------------------------------------------------------------

    def _probe_round(self) -> None:
        self._finish_probe()
        now = self._now
        self._schedule(now + self._scale(self.config.probe_interval), _T_PROBE)
        if self.left:
            return
        node = self._next_probe_target()
        if node is None:
            return
        self._seq += 1
        self._probe = _Probe(self._seq, node.name, node.inc)
        items = [wire.item(Ping(self._seq, node.name))]
        if node.state == ST_SUSPECT:
            # Buddy system: tell the suspect directly so it can refute now.
            items.append(wire.item(Suspect(node.name, node.inc, self.name)))
        self._send(node.cert, node.addr, items)
        self.stats["probes"] += 1
        self._schedule(now + self._scale(self.config.probe_timeout), _T_PROBE_TIMEOUT, self._seq)

    def _next_probe_target(self) -> Optional[Node]:
        for _ in range(len(self._probe_list) + 2):
            if self._probe_idx >= len(self._probe_list):
                self._probe_list = [n for n in self._names if self._nodes[n].state <= ST_SUSPECT]
                self.rng.shuffle(self._probe_list)
                self._probe_idx = 0
                if not self._probe_list:
                    return None
            node = self._nodes.get(self._probe_list[self._probe_idx])
            self._probe_idx += 1
            if node is not None and node.state <= ST_SUSPECT:
                return node
        return None

    def _probe_timeout(self, seq: int) -> None:
        p = self._probe
        if p is None or p.seq != seq or p.acked:
            return
        target = self._nodes.get(p.target)
        if target is None:
            return
        # A second direct ping alongside the indirect ones: memberlist sends its TCP
        # fallback ping here; over lossy UDP a retry alone cuts false suspicions ~5x.
        self._send(target.cert, target.addr, [wire.item(Ping(seq, target.name))])
        relays = self._random_nodes(self.config.indirect_checks,
                                    lambda n: n.state == ST_ALIVE and n.name != p.target)
        for r in relays:
            self._send(r.cert, r.addr, [wire.item(IndirectPing(seq, target.name, True))])
        p.expected_nacks = len(relays)
        self.stats["indirect_probes"] += len(relays)

    def _finish_probe(self) -> None:
        p, self._probe = self._probe, None
        if p is None or p.acked:
            return
        self.stats["probe_failures"] += 1
        # Lifeguard: missing nacks mean *we* may be the slow one; no relays, plain penalty.
        if p.expected_nacks > 0:
            self._adjust_awareness(max(0, p.expected_nacks - p.nacks))
        else:
            self._adjust_awareness(1)
        if p.target in self._nodes:
            self._on_suspect(Suspect(p.target, p.inc, self.name), None)

    def _h_ping(self, m: Ping, src: _From) -> None:
        if m.target != self.name:
            self.stats["misdirected_pings"] += 1
            return
        self._reply(src, [wire.item(Ack(m.seq))])

    def _h_indirect(self, m: IndirectPing, src: _From) -> None:
        target = self._nodes.get(m.target)
        if target is None or (self.sessions is not None and target.cert is None):
            if m.nack:
                self._reply(src, [wire.item(Nack(m.seq))])   # we cannot reach what we do not know
            return
        self._seq += 1
        self._relays[self._seq] = (src, m.seq, m.nack)
        self._send(target.cert, target.addr, [wire.item(Ping(self._seq, m.target))])
        self._schedule(self._now + self.config.probe_timeout * _RELAY_FRACTION, _T_RELAY, self._seq)

    def _relay_timeout(self, seq: int) -> None:
        r = self._relays.pop(seq, None)
        if r is not None and r[2]:
            self._reply(r[0], [wire.item(Nack(r[1]))])

    def _h_ack(self, m: Ack, src: _From) -> None:
        p = self._probe
        if p is not None and p.seq == m.seq:
            if not p.acked:
                p.acked = True
                self._adjust_awareness(-1)
            return
        r = self._relays.pop(m.seq, None)
        if r is not None:
            self._reply(r[0], [wire.item(Ack(r[1]))])
            self.stats["acks_relayed"] += 1

    def _h_nack(self, m: Nack, src: _From) -> None:
        p = self._probe
        if p is not None and p.seq == m.seq:
            p.nacks += 1

    def _suspicion_timeout(self, arg: Tuple[str, Suspicion]) -> None:
        name, s = arg
        node = self._nodes.get(name)
        if node is not None and node.suspicion is s and self._now >= s.deadline - 1e-9:
            self._on_dead(Dead(name, node.inc, self.name), None)

    # --- what members say about themselves (signed) -----------------------------------

    def _h_record(self, m: Record, src: _From) -> None:
        if m.name == self.name:
            self._about_self(m, src)
            return
        node = self._nodes.get(m.name)
        if node is not None and m.mver <= node.mver and m.inc <= node.signed_inc:
            return  # nothing new: no signature to check
        if not self._verified(m, src):
            return
        if node is None:
            if self._admissible(m):
                node = self._add_node(m)
                self._broadcast(_rkey(m.name), node.record)
                self.stats["joins"] += 1
                self._event(EventKind.JOIN, node)
            return
        it = wire.item(m)
        changed = meta_new = m.mver > node.mver
        if meta_new:
            changed = (m.meta, m.host, m.port) != (node.meta, node.host, node.port)
            node.meta, node.host, node.port, node.mver = m.meta, m.host, m.port, m.mver
            node.record, node.rec_inc = it, m.inc
        live_new = self._alive_at(node, m.inc)
        if live_new and not meta_new:
            node.live, node.live_inc = it, m.inc   # the proof of its newest incarnation
        if meta_new or live_new:
            self._broadcast(_rkey(m.name), it)
        if changed and node.state <= ST_SUSPECT:
            self.stats["updates"] += 1
            self._event(EventKind.UPDATE, node)

    def _h_alive(self, m: Alive, src: _From) -> None:
        if m.name == self.name:
            self._about_self(m, src)
            return
        node = self._nodes.get(m.name)
        if node is None:
            self._want(src, m.name)        # a stranger: its record says who and where
            return
        if m.inc <= node.signed_inc:
            return
        if not self._verified(m, src):
            return
        it = wire.item(m)
        node.live, node.live_inc = it, m.inc
        if self._alive_at(node, m.inc):
            self._broadcast(m.name, it)

    def _h_leave(self, m: Leave, src: _From) -> None:
        if m.name == self.name:
            self._about_self(m, src)
            return
        node = self._nodes.get(m.name)
        if node is None or m.inc < node.inc or node.state >= ST_DEAD:
            return
        if not self._verified(m, src):
            return
        it = wire.item(m)
        node.signed_inc = max(node.signed_inc, m.inc)
        node.live, node.live_inc = it, m.inc
        node.inc = m.inc
        node.suspicion = None
        self._set_state(node, ST_LEFT)
        self._broadcast(m.name, it)
        self._schedule(self._now + self.config.dead_reap_time, _T_REAP, (m.name, node.changed))
        self.stats["leaves"] += 1
        self._event(EventKind.LEAVE, node)

    def _alive_at(self, node: Node, inc: int) -> bool:
        """Apply a verified "alive at ``inc``"; True if it changed our view."""
        node.signed_inc = max(node.signed_inc, inc)
        if inc <= node.inc:
            return False
        old = node.state
        node.inc = inc
        if old != ST_ALIVE:
            node.suspicion = None
            self._set_state(node, ST_ALIVE)
        if old >= ST_DEAD:
            self.stats["joins"] += 1
            self._event(EventKind.JOIN, node)
        elif old == ST_SUSPECT:
            self._event(EventKind.ALIVE, node)
        return True

    def _about_self(self, m: Any, src: _From) -> None:
        """Someone relays a statement of ours: news of ours coming back, or of an earlier
        run of ours (we restarted) that we must get ahead of."""
        if self.left:
            return
        newer_inc = m.inc > self.inc or (type(m) is Leave and m.inc >= self.inc)
        newer_meta = type(m) is Record and m.mver >= self.mver and m != self._record
        if not (newer_inc or newer_meta):
            return
        if self.trust is not None:
            certs = [self.identity.cert] + [c for c in self.trust.by_name(self.name)
                                            if c is not self.identity.cert]
            if statements.verify(certs, m) is None:
                self.stats["bad_signatures"] += 1
                return
        if newer_meta and m.mver >= self.mver:
            self.mver = m.mver
            self._new_record()   # mver + 1, and our record as it is now
        if newer_inc:
            self._refute(m.inc)

    def _verified(self, m: Any, src: _From) -> bool:
        """Is ``m`` signed by its subject? If we lack the certificate to tell, park it and
        ask the sender for the certificate."""
        if self.trust is None:
            return True
        certs = self.trust.by_name(m.name)
        if certs:
            if statements.verify(certs, m) is not None:
                return True
            self.stats["bad_signatures"] += 1
        if m.name in self.trust.revoked_names:
            self.stats["refused_revoked"] += 1
            return False
        self._park(m, src)
        self._want(src, m.name, cert=True, pull=False)
        return False

    def _admissible(self, m: Record) -> bool:
        t = self._tombstones.get(m.name)
        if t is not None and m.inc <= t[0] and m.mver <= t[1]:
            self.stats["refused_members"] += 1    # an old statement of a member long gone
            return False
        if len(self._nodes) >= self.config.max_members:
            self.stats["refused_members"] += 1
            return False
        if t is not None:
            del self._tombstones[m.name]
        return True

    def _refute(self, accused: int) -> None:
        if accused >= INC_MAX:
            return   # cannot happen: the wire bounds accusations below INC_MAX
        self.inc = max(self.inc, accused) + 1
        self._adjust_awareness(1)  # being suspected hints our own health is poor
        self._own_live = statements.alive(self.identity, self.name, self.inc)
        self._broadcast(self.name, wire.item(self._own_live))
        self.stats["refutes"] += 1

    # --- what members say about others (bounded by what the subject signed) -----------

    def _h_suspect(self, m: Suspect, src: _From) -> None:
        self._on_suspect(m, src)

    def _h_dead(self, m: Dead, src: _From) -> None:
        self._on_dead(m, src)

    def _about_self_accused(self, inc: int, src: Optional[_From]) -> None:
        if self.left or inc < self.inc:
            return
        if inc == self.inc or self.trust is None:
            self._refute(inc)
        elif src is not None:
            # Higher than we ever signed in this run: an earlier run of ours did, or the
            # accuser lies. Ask for our own signed statement; _about_self takes it.
            self._want(src, self.name)

    def _claim_ok(self, node: Node, inc: int, frm: str) -> bool:
        if self.trust is None:
            return True
        if inc > node.signed_inc or frm in self.trust.revoked_names:
            self.stats["refused_claims"] += 1
            return False
        return True

    def _on_suspect(self, s: Suspect, src: Optional[_From]) -> None:
        if s.name == self.name:
            self._about_self_accused(s.inc, src)
            return
        node = self._nodes.get(s.name)
        if node is None or s.inc < node.inc or not self._claim_ok(node, s.inc, s.frm):
            return
        if node.suspicion is not None:
            if node.suspicion.confirm(s.frm):
                self._broadcast(s.name, wire.item(s))
                self._schedule(node.suspicion.deadline, _T_SUSPICION, (s.name, node.suspicion))
            return
        if node.state != ST_ALIVE:
            return
        node.inc = s.inc
        self._set_state(node, ST_SUSPECT)
        n = self._live + 1
        k = self.config.suspicion_mult - 2
        if n - 2 < k:  # too few members to expect that many confirmations
            k = 0
        lo, hi = self.config.suspicion_bounds(n)
        node.suspicion = Suspicion(s.frm, k, lo, hi, self._now)
        self._schedule(node.suspicion.deadline, _T_SUSPICION, (s.name, node.suspicion))
        self._broadcast(s.name, wire.item(s))
        self.stats["suspicions"] += 1
        self._event(EventKind.SUSPECT, node)

    def _on_dead(self, d: Dead, src: Optional[_From]) -> None:
        if d.name == self.name:
            self._about_self_accused(d.inc, src)
            return
        node = self._nodes.get(d.name)
        if node is None or d.inc < node.inc or node.state >= ST_DEAD \
                or not self._claim_ok(node, d.inc, d.frm):
            return
        node.inc = d.inc
        node.suspicion = None
        self._set_state(node, ST_DEAD)
        self._broadcast(d.name, wire.item(d))
        self._schedule(self._now + self.config.dead_reap_time, _T_REAP, (d.name, node.changed))
        self.stats["deaths"] += 1
        self._event(EventKind.DEAD, node)

    def _event(self, kind: EventKind, node: Node) -> None:
        self._events.append(MemberEvent(kind, node.snapshot()))

    def _add_node(self, r: Record) -> Node:
        node = Node(r.name, r.host, r.port, r.inc, r.meta, self._now, r.mver)
        node.record = wire.item(r)
        if self.trust is not None:
            node.cert = self.trust.newest(r.name)
        self._nodes[r.name] = node
        self._name_idx[r.name] = len(self._names)
        self._names.append(r.name)
        self._live += 1
        # Probe newcomers within this round, at a random place (as memberlist does).
        rest = len(self._probe_list) - self._probe_idx
        pos = self._probe_idx + self.rng.randint(0, max(0, rest))
        self._probe_list.insert(pos, r.name)
        return node

    def _set_state(self, node: Node, state: int) -> None:
        self._live += (state <= ST_SUSPECT) - (node.state <= ST_SUSPECT)
        node.state = state
        node.changed = self._now
        if state >= ST_DEAD and self.sessions is not None and node.cert is not None:
            self.sessions.unconfirm(node.cert)   # if it comes back, it may not know us

    def _reap(self, arg: Tuple[str, float]) -> None:
        name, changed = arg
        node = self._nodes.get(name)
        if node is None or node.state < ST_DEAD or node.changed != changed:
            return
        del self._nodes[name]
        i = self._name_idx.pop(name)
        last = self._names.pop()
        if last != name:
            self._names[i] = last
            self._name_idx[last] = i
        if len(self._tombstones) >= self.config.max_members:
            oldest = min(self._tombstones, key=lambda k: self._tombstones[k][2])
            del self._tombstones[oldest]
        self._tombstones[name] = (node.signed_inc, node.mver, self._now)
        if self.trust is not None:
            for pc in self.trust.by_name(name):
                self.sessions.drop(pc)
            self.trust.forget(name)

    # --- certificates, hellos, parked statements ---------------------------------------

    def _on_hello(self, data: bytes, addr: Addr) -> None:
        st = self.stats
        s = self.sessions
        try:
            der, want_reply = s.open_hello(data)
        except AuthError:
            st["dropped_auth"] += 1
            return
        except ProtocolError:
            st["dropped_malformed"] += 1
            return
        try:
            pc = self._add_cert(der)
        except RevokedCert:
            st["dropped_revoked"] += 1
            return
        except AuthError:
            st["dropped_cert"] += 1
            return
        st["hellos_in"] += 1
        if pc.name == self.name:
            return
        # A hello means the sender has not heard from us since it started: it may not
        # know our certificate, so our next packet to it carries a hello too.
        s.unconfirm(pc)
        if want_reply:
            last = self._hello_replies.get(addr)
            if last is None or self._now - last >= _HELLO_REPLY_EVERY:
                if len(self._hello_replies) < 4096:
                    self._hello_replies[addr] = self._now
                self._raw(s.hello(False), addr)
                st["hellos_out"] += 1
        # Joining: push-pull with whoever answered (a seed may answer from another
        # address than the one we were given; any verified member will do).
        if self._joining.pop(addr, None) is not None or (self._joining and self._live == 0):
            self._send_state(pc, addr, join=True, reply=False)

    def _add_cert(self, der: bytes) -> PeerCert:
        """Verify and cache a certificate (``AuthError`` if refused), then let what
        waited for it go on."""
        known = len(self.trust)
        pc = self.trust.add(der, self._wall())
        if len(self.trust) == known:
            return pc
        node = self._nodes.get(pc.name)
        if node is not None and node.cert is not pc and self.trust.newest(pc.name) is pc:
            node.cert = pc
        self.stats["certs_added"] += 1
        self._release(pc)
        self._unpark(pc.name)
        return pc

    def _h_cert_req(self, m: CertReq, src: _From) -> None:
        if self.trust is None:
            return
        items = []
        for name in m.names[:64]:
            pc = self.identity.cert if name == self.name else self.trust.newest(name)
            if pc is not None:
                items.append(wire.item(Cert(pc.der)))
        self._emit_batched(src, items)

    def _h_cert(self, m: Cert, src: _From) -> None:
        if self.trust is None:
            return
        try:
            self._add_cert(m.der)
        except RevokedCert:
            self.stats["refused_revoked"] += 1
        except AuthError:
            self.stats["refused_certs"] += 1

    def _hold(self, sid: bytes, data: bytes, addr: Addr) -> None:
        """A packet from a certificate we do not know yet: its hello is usually right
        behind (or was lost; the sender sends another)."""
        self.stats["held_unknown"] += 1
        held = self._held
        while held and (len(held) >= _HELD_MAX or self._now - held[0][0] > _HELD_TTL):
            held.popleft()
            self.stats["dropped_unknown_sender"] += 1
        held.append((self._now, sid, data, addr))

    def _release(self, pc: PeerCert) -> None:
        if not self._held:
            return
        keep: Deque[Tuple[float, bytes, bytes, Addr]] = collections.deque()
        due = []
        for h in self._held:
            (due if h[1] == pc.id else keep).append(h)
        self._held = keep
        for when, _, data, addr in due:
            if self._now - when > _HELD_TTL:
                self.stats["dropped_unknown_sender"] += 1
                continue
            self.stats["held_released"] += 1
            self._receive(data, addr)

    def _park(self, m: Any, src: _From) -> None:
        lst = self._parked.get(m.name)
        if lst is None:
            if len(self._parked) >= _PARKED_NAMES:
                self._parked.pop(next(iter(self._parked)))
            lst = self._parked[m.name] = []
        if len(lst) >= _PARKED_PER_NAME:
            del lst[0]
        lst.append((self._now, m, src))
        self.stats["parked"] += 1

    def _unpark(self, name: str) -> None:
        lst = self._parked.pop(name, None)
        if not lst:
            return
        for when, m, src in lst:
            if self._now - when <= _PARKED_TTL and self.trust.by_name(name):
                self._handlers[type(m)](m, src)

    def _want(self, src: _From, name: str, cert: bool = False, pull: bool = True) -> None:
        """Ask ``src`` (at the end of this packet) for ``name``'s statements, and for its
        certificate if we lack it. At most once per name per ``_ASK_EVERY``."""
        if src.peer is None and self.sessions is not None:
            return
        need_cert = self.trust is not None and (cert or not self.trust.by_name(name))
        key = id(src)
        w = self._wants.get(key)
        if w is None:
            w = self._wants[key] = (src, [], [])
        if len(w[1]) >= _ASK_BATCH or len(w[2]) >= _ASK_BATCH:
            if name not in self._catchup and len(self._catchup) < self.config.max_members:
                self._catchup[name] = (self._now, src, need_cert, pull)
                if not self._catchup_armed:
                    self._catchup_armed = True
                    self._schedule(self._now + _CATCHUP_EVERY, _T_CATCHUP)
            return
        if need_cert and self._ask_ok(1, name):
            w[1].append(name)
        if pull and self._ask_ok(2, name):
            w[2].append(name)

    def _catch_up(self) -> None:
        """Ask for the next batch of what did not fit in earlier requests."""
        batch = []
        for name in list(self._catchup)[:_ASK_BATCH]:
            batch.append((name, self._catchup.pop(name)))
        for name, (when, src, cert, pull) in batch:
            known = name in self._nodes and (self.trust is None or self.trust.by_name(name))
            if not known and self._now - when <= _CATCHUP_TTL:
                self._want(src, name, cert, pull)
        self._flush_wants()
        self._catchup_armed = bool(self._catchup)
        if self._catchup_armed:
            self._schedule(self._now + _CATCHUP_EVERY, _T_CATCHUP)

    def _ask_ok(self, kind: int, name: str) -> bool:
        k = (kind, name)
        last = self._asked.get(k)
        if last is not None and self._now - last < _ASK_EVERY:
            return False
        if len(self._asked) >= _ASKED_MAX:
            self._asked.clear()
        self._asked[k] = self._now
        return True

    def _flush_wants(self) -> None:
        if not self._wants:
            return
        wants, self._wants = self._wants, {}
        room = self._room - wire.ITEM_OVERHEAD - 8
        for src, certs, pulls in wants.values():
            for chunk in wire.chunk_names(certs, room):
                self._emit(src.peer, src.addr, [wire.item(CertReq(chunk))])
                self.stats["cert_requests"] += 1
            for chunk in wire.chunk_names(pulls, room):
                self._emit(src.peer, src.addr, [wire.item(Pull(chunk))])

    def _housekeep(self) -> None:
        now = self._now
        self._schedule(now + _HOUSEKEEP_EVERY, _T_HOUSEKEEP)
        self._replay.expire(now)
        while self._held and now - self._held[0][0] > _HELD_TTL:
            self._held.popleft()
            self.stats["dropped_unknown_sender"] += 1
        for name in [n for n, lst in self._parked.items() if now - lst[-1][0] > _PARKED_TTL]:
            del self._parked[name]
        for k in [k for k, t in self._asked.items() if now - t > _ASK_EVERY]:
            del self._asked[k]
        for a in [a for a, t in self._joining.items() if now > t]:
            del self._joining[a]
        for a in [a for a, t in self._hello_replies.items() if now - t > _HELLO_REPLY_EVERY]:
            del self._hello_replies[a]
        ttl = self.config.tombstone_time
        for n in [n for n, t in self._tombstones.items() if now - t[2] > ttl]:
            del self._tombstones[n]
        if self.sessions is not None:
            self.sessions.expire(now, 60.0)
            for pc in self.trust.expire(self._wall()):
                self.sessions.drop(pc)

    # --- dissemination and anti-entropy ------------------------------------------------

    def _gossip(self) -> None:
        if not len(self._queue):
            self._gossip_armed = False
            return
        now = self._now
        self._schedule(now + self.config.gossip_interval, _T_GOSSIP)
        dead_cutoff = now - self.config.gossip_to_dead_time
        # Recently dead members get gossip too, so a wrongly dead one hears and refutes.
        targets = self._random_nodes(self.config.gossip_nodes,
                                     lambda n: n.state <= ST_SUSPECT or
                                     (n.state == ST_DEAD and n.changed > dead_cutoff))
        limit = self._limit()
        for n in targets:
            items = self._queue.take(self._room, limit)
            if not items:
                break
            self._emit(n.cert, n.addr, items)

    def _random_nodes(self, k: int, want: Callable[[Node], bool]) -> List[Node]:
        names, nodes = self._names, self._nodes
        if k <= 0 or not names:
            return []
        if self.sessions is not None:
            base = want
            want = lambda n: n.cert is not None and base(n)  # noqa: E731 (revoked ones)
        out: List[Node] = []
        if len(names) <= 4 * k:
            pool = list(names)
            self.rng.shuffle(pool)
            for nm in pool:
                n = nodes[nm]
                if want(n):
                    out.append(n)
                    if len(out) == k:
                        break
            return out
        seen = set()
        rand = self.rng.random
        for _ in range(3 * k + 3):
            nm = names[int(rand() * len(names))]
            if nm in seen:
                continue
            seen.add(nm)
            n = nodes[nm]
            if want(n):
                out.append(n)
                if len(out) == k:
                    break
        return out

    def _entries(self) -> List[Entry]:
        own = Entry(self.name, self.inc, ST_LEFT if self.left else ST_ALIVE, self.mver)
        return [own] + [Entry(n.name, n.inc, n.state, n.mver) for n in self._nodes.values()]

    def _send_state(self, peer: Optional[PeerCert], addr: Addr, join: bool, reply: bool) -> None:
        room = self._room - wire.ITEM_OVERHEAD
        for part, chunk in enumerate(wire.chunk_entries(self._entries(), room)):
            items = [wire.item(PushPull(join, reply, part, chunk))]
            self._emit(peer, addr, items)
        if join or reply:
            # Our record with it: a joining member needs no round trip to learn us.
            self._emit(peer, addr, [wire.item(self._record)])
        self.stats["push_pulls"] += 1

    def _h_push_pull(self, m: PushPull, src: _From) -> None:
        for e in m.entries:
            if e.name == self.name:
                self._own_entry(e, src)
                continue
            node = self._nodes.get(e.name)
            if node is None:
                if e.state <= ST_SUSPECT:
                    self._want(src, e.name)
                continue
            if e.mver > node.mver or e.inc > node.signed_inc or \
                    (e.state == ST_LEFT and node.state != ST_LEFT):
                self._want(src, e.name)
            if e.state in (ST_SUSPECT, ST_DEAD):
                # A remote "dead" is only a suspicion here: the member may refute it.
                self._on_suspect(Suspect(e.name, e.inc, src.name), src)
        if not m.reply and m.part == 0 and not self.left:
            self._send_state(src.peer, src.addr, join=False, reply=True)

    def _own_entry(self, e: Entry, src: _From) -> None:
        if self.left:
            return
        if e.state in (ST_SUSPECT, ST_DEAD):
            self._about_self_accused(e.inc, src)
        elif e.inc > self.inc or e.mver > self.mver or e.state == ST_LEFT \
                or (not self._self_checked and e.mver == self.mver):
            if self.trust is None:
                if e.inc > self.inc:
                    self._refute(e.inc)   # the cluster knew a newer us (we restarted)
                return
            self._self_checked = True
            self._want(src, self.name)    # our signed statements as they know them

    def _h_pull(self, m: Pull, src: _From) -> None:
        items: List[Item] = []
        for name in m.names[:MAX_PULL]:
            if name == self.name:
                items.append(wire.item(self._record))
                live = self._own_live
                if live is not None and (self.left or live.inc > self._record.inc):
                    items.append(wire.item(live))
                continue
            node = self._nodes.get(name)
            if node is None:
                continue
            about_asker = name == src.name
            if node.state == ST_DEAD and not about_asker:
                continue   # do not spread the dead; but a restarted member needs its proof
            if about_asker and self.trust is not None:
                items.extend(wire.item(Cert(pc.der)) for pc in self.trust.by_name(name))
            if node.record is not None:
                items.append(node.record)
            if node.live is not None and node.live_inc > node.rec_inc:
                items.append(node.live)
        self._emit_batched(src, items)

    def _push_pull(self) -> None:
        self._schedule(self._now + self.config.push_pull_period(self._live + 1), _T_PUSH_PULL,
                       self._pp_token)
        if self.left:
            return
        peers = self._random_nodes(1, lambda n: n.state == ST_ALIVE)
        if peers:
            self._send_state(peers[0].cert, peers[0].addr, join=False, reply=False)

    def _push_pull_once(self) -> None:
        if not self.left:
            peers = self._random_nodes(1, lambda n: n.state == ST_ALIVE)
            if peers:
                self._send_state(peers[0].cert, peers[0].addr, join=False, reply=False)

    def _reconnect(self) -> None:
        self._schedule(self._now + self.config.reconnect_interval, _T_RECONNECT)
        if self.left:
            return
        dead = [n for n in self._nodes.values() if n.state == ST_DEAD and
                (self.sessions is None or n.cert is not None)]
        if dead:
            n = self.rng.choice(dead)
            self._send_state(n.cert, n.addr, join=True, reply=False)

    def _rejoin(self) -> None:
        self._schedule(self._now + self.config.rejoin_interval, _T_REJOIN)
        if not self.left and self._live == 0:
            for s in self._seeds:
                self._join_via(s)

    def _join_via(self, addr: Addr) -> None:
        if self.sessions is None:
            self._send_state(None, addr, join=True, reply=False)
            return
        for n in self._nodes.values():
            if n.addr == addr and n.cert is not None and n.cert.fp in self.sessions.confirmed:
                self._send_state(n.cert, addr, join=True, reply=False)
                return
        # We do not know who answers there: a hello asking for theirs, then the push-pull.
        if len(self._joining) < 1024:
            self._joining[addr] = self._now + _JOIN_WAIT
        self._raw(self.sessions.hello(True), addr)
        self.stats["hellos_out"] += 1


MAX_PULL = 1024
_EMPTY_OUTPUT = Output([], [])
_STATES = {ST_ALIVE: MemberState.ALIVE, ST_SUSPECT: MemberState.SUSPECT,
           ST_DEAD: MemberState.DEAD, ST_LEFT: MemberState.LEFT}


def _valid_local_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    try:
        wire.check_meta(meta)
    except ProtocolError as exc:
        raise ConfigError(f"invalid gossip metadata: {exc}") from exc
    if wire.meta_size(meta) > wire.MAX_META_BYTES:
        raise ConfigError(f"gossip metadata over {wire.MAX_META_BYTES} bytes")
    return meta
