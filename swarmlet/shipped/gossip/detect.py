"""Failure detection, one part of ``GossipCore``: SWIM probes (direct, a second direct
ping and ``indirect_checks`` relays), acks and nacks, relaying for others, Lifeguard's
local-health score (awareness) and the suspicion timeout that turns a suspect dead."""

from __future__ import annotations

from typing import Optional, Tuple

from . import wire
from .members import Node, Suspicion
from .shared import _T_PROBE, _T_PROBE_TIMEOUT, _T_RELAY, _From
from .wire import ST_ALIVE, ST_SUSPECT, Ack, Dead, IndirectPing, Nack, Ping, Suspect

# A relay gives up (and nacks) a little before the requester's window closes, so the
# nack arrives in time to count (the requester waits interval - timeout after asking).
_RELAY_FRACTION = 0.8


class _Probe:
    __slots__ = ("seq", "target", "inc", "acked", "expected_nacks", "nacks")

    def __init__(self, seq: int, target: str, inc: int) -> None:
        self.seq = seq
        self.target = target
        self.inc = inc
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0


class Detection:
    def _scale(self, t: float) -> float:
        return t * (self.awareness + 1)

    def _adjust_awareness(self, delta: int) -> None:
        top = self.config.awareness_max_multiplier - 1
        self.awareness = min(top, max(0, self.awareness + delta))

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
