"""Certificates and what waits for them, one part of ``GossipCore``: hellos (a
certificate under the cluster key, answered when asked), certificates on request,
packets held until their sender's certificate arrives, statements parked until their
subject's does, and the paced requests (``_want``, catch-up) that fetch both."""

from __future__ import annotations

import collections
from typing import Any, Deque, Tuple

from ..exceptions import AuthError, ProtocolError
from . import wire
from .identity import PeerCert, RevokedCert
from .shared import _T_CATCHUP, Addr, _From
from .wire import Cert, CertReq, Pull

_HELD_MAX, _HELD_TTL = 64, 2.0            # packets from a sender whose certificate is coming
_PARKED_NAMES, _PARKED_PER_NAME, _PARKED_TTL = 1024, 4, 10.0
_ASK_EVERY = 2.0                          # per name: certificate / statement requests
_ASKED_MAX = 8192
_HELLO_REPLY_EVERY = 0.5                  # per address
# Asking for certificates and statements: at most this many names per peer per packet;
# more (a member joining a big cluster) wait in a catch-up list, asked every 0.25 s,
# so answers come in paced bursts a UDP socket buffer can take.
_ASK_BATCH, _CATCHUP_EVERY, _CATCHUP_TTL = 128, 0.25, 60.0


class CertFlow:
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
