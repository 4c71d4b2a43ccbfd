"""Sans-I/O SWIM membership with Lifeguard: the whole gossip protocol, no sockets, no clock.

``GossipCore`` is driven from outside: ``receive(data, addr, now)`` for each datagram,
``tick(now)`` whenever ``next_deadline()`` passes, and ``join``/``leave``/``update_meta``.
Each returns an ``Output``: datagrams to send (already sealed) and membership events.
The asyncio transport and the simulator are the two drivers.

What it does (memberlist's design, which serf and Consul run in production):

- SWIM failure detection: every probe interval, ping the next member of a shuffled
  round-robin list; with no ack within the probe timeout, ask ``indirect_checks``
  random members to ping it for us; with still no ack by the end of the interval,
  suspect it. A suspect not refuted before its suspicion timeout is declared dead.
- Incarnations: only the member itself raises its incarnation, to refute a suspicion
  (or a death) or to publish new metadata; alive(i) beats suspect(j) iff i > j,
  suspect/dead(i) beat alive(j) iff i >= j.
- Dissemination: changes are queued (``BroadcastQueue``) and piggybacked on every
  packet, and gossiped every ``gossip_interval`` to ``gossip_nodes`` random members,
  each at most retransmit_mult*ceil(log10(N+1)) times.
- Anti-entropy: push-pull of state digests with a random member every push-pull
  period; each side pulls the full alive messages (with metadata) it is behind on,
  and merges remote dead/suspect entries as suspicions so they can be refuted;
  with a random dead member every ``reconnect_interval`` (serf's reconnect), which
  merges healed partitions; with the seeds while no live peer is known.
- Lifeguard: (1) a local-health score (0..awareness_max_multiplier-1) raised by failed
  probes that lacked the nacks a healthy network would have produced, and by having to
  refute, lowered by successful probes; probe interval and timeout are scaled by
  score+1, so a slow member stops accusing healthy ones. (2) The suspicion timeout
  starts at max = 6*min and shrinks toward min = 4*max(1, log10 N)*interval as
  independent members confirm it. (3) Buddy system: a ping to a suspect carries the
  suspicion, so the member learns of it from the prober and refutes at once.

Packets are authenticated (``Keyring``) and pass an anti-replay window before any
field is trusted; every drop is counted in ``stats`` and nothing raises out of
``receive``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from ..exceptions import AuthError, ConfigError, ProtocolError
from . import wire
from .broadcast import BroadcastQueue
from .config import GossipConfig
from .crypto import OVERHEAD, Keyring
from .members import EventKind, Member, MemberEvent, MemberState, Node, Suspicion
from .replay import ReplayGuard
from .wire import (ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT, Ack, Alive, Dead, Entry,
                   IndirectPing, Item, Nack, Ping, Pull, PushPull, Suspect)

Addr = Tuple[str, int]

# Timer kinds.
_T_PROBE, _T_PROBE_TIMEOUT, _T_GOSSIP, _T_PUSH_PULL, _T_SUSPICION, _T_RELAY, _T_REAP, \
    _T_RECONNECT, _T_REJOIN, _T_META = range(10)

# A relay gives up (and nacks) a little before the requester's window closes, so the
# nack arrives in time to count (the requester waits interval - timeout after asking).
_RELAY_FRACTION = 0.8

# Seconds (each stretched by a random 1-2x) after a join for extra push-pulls.
_JOIN_FOLLOW_UPS = (1.0, 4.0)

STAT_KEYS = (
    "packets_in", "packets_ok", "packets_out", "bytes_in", "bytes_out",
    "dropped_auth", "dropped_malformed", "dropped_replay", "unknown_messages",
    "misdirected_pings", "probes", "probe_failures", "indirect_probes", "acks_relayed",
    "suspicions", "refutes", "deaths", "leaves", "joins", "updates",
    "push_pulls", "internal_errors",
)


class Output(NamedTuple):
    sends: List[Tuple[bytes, Addr]]
    events: List[MemberEvent]


class _Probe:
    __slots__ = ("seq", "target", "inc", "acked", "expected_nacks", "nacks")

    def __init__(self, seq: int, target: str, inc: int) -> None:
        self.seq = seq
        self.target = target
        self.inc = inc
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0


class GossipCore:
    def __init__(self, name: str, addr: Addr, *, keyring: Optional[Keyring],
                 config: Optional[GossipConfig] = None, meta: Optional[Dict[str, Any]] = None,
                 now: float = 0.0, epoch: int = 0, rng: Optional[random.Random] = None,
                 seeds: Iterable[Addr] = ()) -> None:
        self.config = cfg = config or GossipConfig()
        if keyring is None and not cfg.allow_plaintext:
            raise ConfigError("gossip without a key needs allow_plaintext=True")
        wire._name(name, "name")
        self.name = name
        self.host, self.port = addr
        self.keyring = keyring
        self.inc = 0
        self.meta: Dict[str, Any] = _valid_local_meta(meta or {})
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
        self._pseq = 0                       # packet sequence numbers (anti-replay)
        self._header = wire.Header(name, epoch)
        self._room = wire.budget(self._header, cfg.udp_buffer_size,
                                 OVERHEAD if keyring is not None else 0)
        self._replay = ReplayGuard(cfg.replay_idle_ttl)
        self._probe: Optional[_Probe] = None
        self._probe_list: List[str] = []
        self._probe_idx = 0
        self._relays: Dict[int, Tuple[Addr, int, bool]] = {}
        self.awareness = 0
        self._seeds: List[Addr] = list(seeds)
        self._meta_published = -math.inf
        self._meta_pending: Optional[Dict[str, Any]] = None
        self._gossip_armed = False
        self._gossip_base = now + self.rng.uniform(0, cfg.gossip_interval)
        self._sends: List[Tuple[bytes, Addr]] = []
        self._events: List[MemberEvent] = []
        self._handlers: Dict[type, Callable[[Any, str, Addr], None]] = {
            Ping: self._h_ping, IndirectPing: self._h_indirect, Ack: self._h_ack,
            Nack: self._h_nack, Alive: self._on_alive_msg, Suspect: self._on_suspect_msg,
            Dead: self._on_dead_msg, PushPull: self._h_push_pull, Pull: self._h_pull,
        }
        # Stagger the periodic timers so members do not act in lockstep.
        self._schedule(now + self.rng.uniform(0, cfg.probe_interval), _T_PROBE)
        self._pp_token = 0
        self._schedule(now + self.rng.uniform(0, cfg.push_pull_interval), _T_PUSH_PULL, 0)
        self._schedule(now + self.rng.uniform(0.5, 1.0) * cfg.reconnect_interval, _T_RECONNECT)
        self._schedule(now + cfg.rejoin_interval, _T_REJOIN)
        # Announce ourselves: rides on the first packets once we know anyone.
        self._broadcast_self()

    # --- public, sans-I/O ----------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> Output:
        """Handle one datagram. Never raises: bad packets are dropped and counted."""
        self._now = now
        st = self.stats
        st["packets_in"] += 1
        st["bytes_in"] += len(data)
        try:
            plain = self.keyring.open(data) if self.keyring is not None else data
            pkt = wire.decode_packet(plain)
        except AuthError:
            st["dropped_auth"] += 1
            return self._flush()
        except ProtocolError:
            st["dropped_malformed"] += 1
            return self._flush()
        if pkt.sender == self.name or not self._replay.accept(pkt.sender, pkt.epoch, pkt.seq, now):
            st["dropped_replay"] += 1
            return self._flush()
        st["packets_ok"] += 1
        st["unknown_messages"] += pkt.unknown
        try:
            for msg in pkt.messages:
                self._handlers[type(msg)](msg, pkt.sender, addr)
        except Exception:  # a bug must not take the member down; tests assert this stays 0
            st["internal_errors"] += 1
        return self._flush()

    def tick(self, now: float) -> Output:
        """Run every timer due at ``now``."""
        self._now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, arg = heapq.heappop(timers)
            self._dispatch_timer(kind, arg)
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
            self._send_state(s, join=True, reply=False)
        # Members started together each learn of the others mostly by gossip, which
        # can miss one; two early push-pulls settle it instead of the 30 s one.
        for delay in _JOIN_FOLLOW_UPS:
            self._schedule(now + delay * (1 + self.rng.random()), _T_PUSH_PULL, None)
        return self._flush()

    def leave(self, now: float) -> Output:
        """Announce a graceful leave (a dead message about ourselves); stop probing."""
        self._now = now
        if not self.left:
            self.left = True
            self._broadcast(self.name, Dead(self.inc, self.name, self.name))
            self._events.append(MemberEvent(EventKind.LEAVE, self.member()))
        return self._flush()

    @property
    def leave_sent(self) -> bool:
        """The leave has been gossiped as often as any broadcast (or nobody is left to tell)."""
        return self.left and (self._live == 0 or not self._queue.pending(self.name))

    def update_meta(self, meta: Dict[str, Any], now: float) -> Output:
        """Publish new metadata with a higher incarnation, so newer always wins.

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

    def _publish_meta(self, meta: Dict[str, Any]) -> None:
        self._meta_pending = None
        if meta == self.meta or self.left:
            return
        self.meta = meta
        self.inc += 1
        self._meta_published = self._now
        self._broadcast_self()
        self._events.append(MemberEvent(EventKind.UPDATE, self.member()))

    def member(self) -> Member:
        state = MemberState.LEFT if self.left else MemberState.ALIVE
        return Member(self.name, self.host, self.port, state, self.inc, dict(self.meta))

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

    def seed_members(self, members: Iterable[Tuple[str, Addr, int, Dict[str, Any]]]) -> None:
        """Add alive members silently (no events, no gossip): the simulator's way of
        starting from an already converged cluster."""
        for name, (host, port), inc, meta in members:
            if name != self.name and name not in self._nodes:
                self._add_node(Alive(inc, name, host, port, meta))
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

    def _emit(self, addr: Addr, items: List[Item]) -> None:
        self._pseq += 1
        pkt = wire.pack_items(self._header, self._pseq, items)
        if self.keyring is not None:
            pkt = self.keyring.seal(pkt)
        self._sends.append((pkt, addr))
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(pkt)

    def _send(self, addr: Addr, items: List[Item]) -> None:
        """Send ``items`` with as many pending broadcasts as fit piggybacked."""
        room = self._room - sum(i.cost for i in items)
        if room > 16 and len(self._queue):
            items = items + self._queue.take(room, self._limit())
        self._emit(addr, items)

    def _limit(self) -> int:
        return self.config.retransmit_limit(self._live + 1)

    def _broadcast(self, key: str, msg: Any) -> None:
        self._queue.queue(key, wire.item(msg))
        if not self._gossip_armed:
            # Gossip rounds stay on this member's own 200 ms grid.
            gi = self.config.gossip_interval
            nxt = self._gossip_base + math.ceil((self._now - self._gossip_base) / gi) * gi
            if nxt <= self._now:
                nxt += gi
            self._gossip_armed = True
            self._schedule(nxt, _T_GOSSIP)

    def _broadcast_self(self) -> None:
        self._broadcast(self.name, Alive(self.inc, self.name, self.host, self.port, self.meta))

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
            items.append(wire.item(Suspect(node.inc, node.name, self.name)))
        self._send(node.addr, items)
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
        self._send(target.addr, [wire.item(Ping(seq, target.name))])
        relays = self._random_nodes(self.config.indirect_checks,
                                    lambda n: n.state == ST_ALIVE and n.name != p.target)
        for r in relays:
            self._send(r.addr, [wire.item(IndirectPing(seq, target.name, target.host,
                                                       target.port, True))])
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
            self._on_suspect(Suspect(p.inc, p.target, self.name))

    def _h_ping(self, m: Ping, sender: str, addr: Addr) -> None:
        if m.target != self.name:
            self.stats["misdirected_pings"] += 1
            return
        self._send(addr, [wire.item(Ack(m.seq))])

    def _h_indirect(self, m: IndirectPing, sender: str, addr: Addr) -> None:
        self._seq += 1
        self._relays[self._seq] = (addr, m.seq, m.nack)
        self._send((m.host, m.port), [wire.item(Ping(self._seq, m.target))])
        self._schedule(self._now + self.config.probe_timeout * _RELAY_FRACTION, _T_RELAY, self._seq)

    def _relay_timeout(self, seq: int) -> None:
        r = self._relays.pop(seq, None)
        if r is not None and r[2]:
            self._send(r[0], [wire.item(Nack(r[1]))])

    def _h_ack(self, m: Ack, sender: str, addr: Addr) -> None:
        p = self._probe
        if p is not None and p.seq == m.seq:
            if not p.acked:
                p.acked = True
                self._adjust_awareness(-1)
            return
        r = self._relays.pop(m.seq, None)
        if r is not None:
            self._send(r[0], [wire.item(Ack(r[1]))])
            self.stats["acks_relayed"] += 1

    def _h_nack(self, m: Nack, sender: str, addr: Addr) -> None:
        p = self._probe
        if p is not None and p.seq == m.seq:
            p.nacks += 1

    def _suspicion_timeout(self, arg: Tuple[str, Suspicion]) -> None:
        name, s = arg
        node = self._nodes.get(name)
        if node is not None and node.suspicion is s and self._now >= s.deadline - 1e-9:
            self._on_dead(Dead(node.inc, name, self.name))

    # --- membership state machine ------------------------------------------------------

    def _on_alive_msg(self, m: Alive, sender: str, addr: Addr) -> None:
        self._on_alive(m)

    def _on_suspect_msg(self, m: Suspect, sender: str, addr: Addr) -> None:
        self._on_suspect(m)

    def _on_dead_msg(self, m: Dead, sender: str, addr: Addr) -> None:
        self._on_dead(m)

    def _on_alive(self, a: Alive) -> None:
        if a.name == self.name:
            if self.left or a.inc < self.inc:
                return
            if a.inc == self.inc and (a.host, a.port, a.meta) == (self.host, self.port, self.meta):
                return  # our own news coming back
            self._refute(a.inc)  # someone holds a newer picture of us (we restarted)
            return
        node = self._nodes.get(a.name)
        if node is None:
            node = self._add_node(a)
            self._broadcast(a.name, a)
            self.stats["joins"] += 1
            self._event(EventKind.JOIN, node)
            return
        if a.inc <= node.inc:
            return
        old = node.state
        changed = (a.meta != node.meta or a.host != node.host or a.port != node.port)
        node.inc, node.host, node.port, node.meta = a.inc, a.host, a.port, a.meta
        if old != ST_ALIVE:
            node.suspicion = None
            self._set_state(node, ST_ALIVE)
        self._broadcast(a.name, a)
        if old >= ST_DEAD:
            self.stats["joins"] += 1
            self._event(EventKind.JOIN, node)
            return
        if old == ST_SUSPECT:
            self._event(EventKind.ALIVE, node)
        if changed:
            self.stats["updates"] += 1
            self._event(EventKind.UPDATE, node)

    def _on_suspect(self, s: Suspect) -> None:
        if s.name == self.name:
            if not self.left and s.inc >= self.inc:
                self._refute(s.inc)
            return
        node = self._nodes.get(s.name)
        if node is None or s.inc < node.inc:
            return
        if node.suspicion is not None:
            if node.suspicion.confirm(s.frm):
                self._broadcast(s.name, s)
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
        self._broadcast(s.name, s)
        self.stats["suspicions"] += 1
        self._event(EventKind.SUSPECT, node)

    def _on_dead(self, d: Dead) -> None:
        if d.name == self.name:
            if not self.left and d.inc >= self.inc:
                self._refute(d.inc)
            return
        node = self._nodes.get(d.name)
        if node is None or d.inc < node.inc or node.state >= ST_DEAD:
            return
        node.inc = d.inc
        node.suspicion = None
        left = d.frm == d.name
        self._set_state(node, ST_LEFT if left else ST_DEAD)
        self._broadcast(d.name, d)
        self._schedule(self._now + self.config.dead_reap_time, _T_REAP, (d.name, node.changed))
        self.stats["leaves" if left else "deaths"] += 1
        self._event(EventKind.LEAVE if left else EventKind.DEAD, node)

    def _refute(self, accused: int) -> None:
        self.inc = max(self.inc, accused) + 1
        self._adjust_awareness(1)  # being suspected hints our own health is poor
        self._broadcast_self()
        self.stats["refutes"] += 1

    def _event(self, kind: EventKind, node: Node) -> None:
        self._events.append(MemberEvent(kind, node.snapshot()))

    def _add_node(self, a: Alive) -> Node:
        node = Node(a.name, a.host, a.port, a.inc, a.meta, self._now)
        self._nodes[a.name] = node
        self._name_idx[a.name] = len(self._names)
        self._names.append(a.name)
        self._live += 1
        # Probe newcomers within this round, at a random place (as memberlist does).
        rest = len(self._probe_list) - self._probe_idx
        pos = self._probe_idx + self.rng.randint(0, max(0, rest))
        self._probe_list.insert(pos, a.name)
        return node

    def _set_state(self, node: Node, state: int) -> None:
        self._live += (state <= ST_SUSPECT) - (node.state <= ST_SUSPECT)
        node.state = state
        node.changed = self._now

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
            self._emit(n.addr, items)

    def _random_nodes(self, k: int, want: Callable[[Node], bool]) -> List[Node]:
        names, nodes = self._names, self._nodes
        if k <= 0 or not names:
            return []
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
        """Digests of every member (no metadata: peers pull what they lack)."""
        # Our own entry carries our metadata, so a join needs no extra round trip.
        own = Entry(self.name, self.host, self.port, self.inc,
                    ST_LEFT if self.left else ST_ALIVE, None if self.left else self.meta)
        return [own] + [Entry(n.name, n.host, n.port, n.inc, n.state)
                        for n in self._nodes.values()]

    def _send_state(self, addr: Addr, join: bool, reply: bool) -> None:
        room = self._room - wire.ITEM_OVERHEAD
        for part, chunk in enumerate(wire.chunk_entries(self._entries(), room)):
            self._emit(addr, [wire.item(PushPull(join, reply, part, chunk))])
        self.stats["push_pulls"] += 1

    def _h_push_pull(self, m: PushPull, sender: str, addr: Addr) -> None:
        want: List[str] = []
        for e in m.entries:
            if e.state == ST_ALIVE:
                if e.meta is not None:
                    self._on_alive(Alive(e.inc, e.name, e.host, e.port, e.meta))
                elif e.name == self.name:
                    if not self.left and e.inc > self.inc:
                        self._refute(e.inc)   # the cluster knew a newer us (we restarted)
                else:
                    node = self._nodes.get(e.name)
                    if node is None or e.inc > node.inc:
                        want.append(e.name)
            elif e.state == ST_LEFT:
                self._on_dead(Dead(e.inc, e.name, e.name))
            else:
                # A remote "dead" is only a suspicion here: the member may refute it.
                self._on_suspect(Suspect(e.inc, e.name, sender))
        for chunk in wire.chunk_names(want, self._room - wire.ITEM_OVERHEAD - 8):
            self._emit(addr, [wire.item(Pull(chunk))])
        if not m.reply and m.part == 0 and not self.left:
            self._send_state(addr, join=False, reply=True)

    def _h_pull(self, m: Pull, sender: str, addr: Addr) -> None:
        batch: List[Item] = []
        used = 0
        for name in m.names:
            if name == self.name:
                if self.left:
                    continue
                a = Alive(self.inc, self.name, self.host, self.port, self.meta)
            else:
                node = self._nodes.get(name)
                if node is None or node.state > ST_SUSPECT:
                    continue
                a = Alive(node.inc, node.name, node.host, node.port, node.meta)
            it = wire.item(a)
            if batch and used + it.cost > self._room:
                self._emit(addr, batch)
                batch, used = [], 0
            batch.append(it)
            used += it.cost
        if batch:
            self._emit(addr, batch)

    def _push_pull(self) -> None:
        self._schedule(self._now + self.config.push_pull_period(self._live + 1), _T_PUSH_PULL,
                       self._pp_token)
        if self.left:
            return
        peers = self._random_nodes(1, lambda n: n.state == ST_ALIVE)
        if peers:
            self._send_state(peers[0].addr, join=False, reply=False)

    def _push_pull_once(self) -> None:
        if not self.left:
            peers = self._random_nodes(1, lambda n: n.state == ST_ALIVE)
            if peers:
                self._send_state(peers[0].addr, join=False, reply=False)

    def _reconnect(self) -> None:
        self._schedule(self._now + self.config.reconnect_interval, _T_RECONNECT)
        if self.left:
            return
        dead = [n for n in self._nodes.values() if n.state == ST_DEAD]
        if dead:
            self._send_state(self.rng.choice(dead).addr, join=True, reply=False)

    def _rejoin(self) -> None:
        self._schedule(self._now + self.config.rejoin_interval, _T_REJOIN)
        if not self.left and self._live == 0:
            for s in self._seeds:
                self._send_state(s, join=True, reply=False)


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
