"""The membership state machine, one part of ``GossipCore``: what members say about
themselves (signed records, alive, leave: checked, then applied) and about others
(suspect, dead: bounded by what the subject signed), refutation, admission of new
members (a certificate, a signed record, no tombstone), and reaping the dead."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import statements, wire
from .members import EventKind, MemberEvent, Node, Suspicion
from .shared import _T_REAP, _T_SUSPICION, _ckey, _From, _rkey
from .wire import (INC_MAX, ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT, Alive, Cert, Dead, Leave,
                   Record, Suspect)


class StateMachine:
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
                self._spread_cert(node)
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
            self._spread_cert(node)
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

    def _spread_cert(self, node: Node) -> None:
        """A member (re)joined: its certificate rides beside its news. Without it every
        member that hears the news parks it and asks the relay for the certificate, and at
        10 % loss one in five of those round trips is lost and waits for the next relay or
        push-pull: the join took 50 s to reach 99.99 % of 100 members. Known certificates
        cost a receiver one hash (``Trust.add``); only joins pay the bytes."""
        pc = node.cert if self.trust is not None else None
        if pc is not None:
            self._broadcast(_ckey(node.name), wire.item(Cert(pc.der)))

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
