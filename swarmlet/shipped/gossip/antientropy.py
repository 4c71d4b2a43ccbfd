"""Dissemination and anti-entropy, one part of ``GossipCore``: gossip rounds, random
member picks, push-pull of digests with pulls of what we are behind on, answering
pulls with the signed statements, reconnecting to the dead, and joining (through a
hello when the seed is a stranger)."""

from __future__ import annotations

from typing import Callable, List, Optional

from . import wire
from .identity import PeerCert
from .members import Node
from .shared import _T_GOSSIP, _T_PUSH_PULL, _T_RECONNECT, _T_REJOIN, Addr, _From
from .wire import (ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT, Cert, Entry, Item, Pull, PushPull,
                   Suspect)

MAX_PULL = 1024
_JOIN_WAIT = 5.0


class AntiEntropy:
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
