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
  exists only with such a certificate. Certificates come in a hello, beside a
  member's join news, or on request, and are cached by name (``identity.Trust``).
- Claims about others (suspect, dead, digests) are refused above the incarnation the
  subject itself signed; claims about ourselves above our own incarnation need our
  own signature (we restarted), which we fetch. So a refutation always fits.
- ``set_revoked(serials)`` refuses a revoked node's packets and statements at once.

Every drop is counted in ``stats``, every buffer is bounded, and nothing raises out of
``receive``.

The class is assembled from parts of one job each, mixins over the state made here:
``detect`` (probes, Lifeguard), ``statemachine`` (statements, incarnations, admission,
reaping), ``certflow`` (hellos, certificates, what waits for them), ``antientropy``
(gossip rounds, push-pull, pulls, joining). This module keeps the state, the receive
pipeline, the public API, the timers and the output.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import random
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from ..exceptions import AuthError, ConfigError, ProtocolError
from . import crypto, statements, wire
from .antientropy import AntiEntropy
from .broadcast import BroadcastQueue
from .certflow import _ASK_EVERY, _HELD_TTL, _HELLO_REPLY_EVERY, _PARKED_TTL, CertFlow
from .config import GossipConfig
from .crypto import Keyring
from .detect import Detection, _Probe
from .identity import Identity, PeerCert, RevokedCert, Trust
from .members import EventKind, Member, MemberEvent, MemberState, Node
from .replay import ReplayGuard
from .session import RevokedSender, Sessions, UnknownSender
from .shared import (_T_CATCHUP, _T_GOSSIP, _T_HOUSEKEEP, _T_META, _T_PROBE, _T_PROBE_TIMEOUT,
                     _T_PUSH_PULL, _T_REAP, _T_RECONNECT, _T_REJOIN, _T_RELAY, _T_SUSPICION, Addr,
                     Output, _From, _rkey)
from .statemachine import StateMachine
from .wire import (INC_MAX, ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT, Ack, Alive, Cert, CertReq,
                   Dead, IndirectPing, Item, Leave, Nack, Ping, Pull, PushPull, Record, Suspect)

# Seconds (each stretched by a random 1-2x) after a join for extra push-pulls.
_JOIN_FOLLOW_UPS = (1.0, 4.0)

_HOUSEKEEP_EVERY = 5.0

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


class GossipCore(Detection, StateMachine, CertFlow, AntiEntropy):
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
        # A run starts its incarnation at the wall clock's seconds, as its metadata
        # version: a restarted or re-joined member is at once newer than the Leave or
        # Dead of an earlier run. That statement may be signed by a certificate revoked
        # since (leave, then join again), which this run cannot verify, so it could
        # never refute it and stayed "left" in every view.
        self.inc = max(0, int(self._wall()))
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
        self._record_cost = wire.item(self._record).cost
        self._meta_due = -math.inf
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

        At most one publication per ``meta_min_interval``; a faster update is held and
        the latest one published when it is due. A change that only moves values (a
        node's utilization) waits longer, so that such changes of every member together
        cost each member at most ``meta_budget`` bytes/s: every publication goes to every
        member, each sending it retransmit_limit times. A new or dropped key, or a change
        of ``meta_urgent_keys`` (address, port, labels, version), only waits the minimum.
        """
        self._now = now
        meta = dict(_valid_local_meta(meta))
        if self.left:
            return self._flush()
        latest = self._meta_pending if self._meta_pending is not None else self.meta
        if meta == latest:
            return self._flush()
        cfg = self.config
        urgent = set(meta) != set(self.meta) or any(
            meta.get(k) != self.meta.get(k) for k in cfg.meta_urgent_keys)
        wait = cfg.meta_min_interval if urgent else max(cfg.meta_min_interval, self._meta_spacing())
        due = self._meta_published + wait
        if self._meta_pending is not None and self._meta_due <= due:
            self._meta_pending = meta          # the held timer will publish the latest
        elif now >= due:
            self._publish_meta(meta)
        else:
            self._meta_pending, self._meta_due = meta, due
            self._schedule(due, _T_META)
        return self._flush()

    def _meta_spacing(self) -> float:
        """Seconds between value-only publications that keep within ``meta_budget``."""
        n = self._live + 1
        size = self._record_cost + 40     # the record, and its share of packet overhead
        return n * self.config.retransmit_limit(n) * size / max(1.0, self.config.meta_budget)

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
        it = wire.item(self._record)
        self._record_cost = it.cost
        self._broadcast(_rkey(self.name), it)

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
            if self._meta_pending is not None and self._now >= self._meta_due - 1e-9:
                self._publish_meta(self._meta_pending)
        elif kind == _T_HOUSEKEEP:
            self._housekeep()
        elif kind == _T_CATCHUP:
            self._catch_up()

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
