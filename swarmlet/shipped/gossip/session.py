"""Per-peer envelopes for one member: sealing, opening, and who knows our certificate.

``Sessions`` turns "send this plaintext to that member" into a pair envelope
(``crypto``) and an incoming pair envelope into (verified sender, plaintext). It
derives each pair key once per cluster key (static ECDH, then HKDF) and keeps the
derived keys, not cipher objects (an OpenSSL context costs ~2.5 KB; a thousand peers
would cost megabytes). It remembers which peers have sealed to our current
certificate: those know it. To a peer that has not, the core sends a hello (our
certificate under the cluster key) before its packets, at most every
``hello_interval`` seconds. After a certificate renewal (``set_identity``) it seals with
the new one and still opens packets sealed for the previous one (peers learn the new
certificate from the hellos that follow).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import AuthError, ProtocolError
from . import crypto
from .identity import Identity, PeerCert, Trust
from .wire import MAX_CERT, packb

_HELLO_TAG = "hello"


class UnknownSender(AuthError):
    """A pair envelope from a certificate id we do not know (yet)."""

    def __init__(self, sid: bytes) -> None:
        super().__init__(f"unknown sender id {sid.hex()}")
        self.sid = sid


class RevokedSender(AuthError):
    """A pair envelope from a certificate that was revoked."""


class _Pair:
    __slots__ = ("gen", "keys")

    def __init__(self) -> None:
        self.gen = -1
        self.keys: List[bytes] = []


class Sessions:
    def __init__(self, identity: Identity, trust: Trust, keyring: crypto.Keyring,
                 hello_interval: float = 0.3) -> None:
        self.identity = identity
        self.trust = trust
        self.keyring = keyring
        self.hello_interval = hello_interval
        self._pairs: Dict[bytes, _Pair] = {}
        self.previous: Optional[Identity] = None
        self._prev_pairs: Dict[bytes, _Pair] = {}
        self.confirmed: Set[bytes] = set()        # peer fps that sealed to our certificate
        self._hello_at: Dict[bytes, float] = {}   # peer fp -> when we last sent it a hello

    # --- keys --------------------------------------------------------------------------

    def set_identity(self, identity: Identity) -> None:
        """Our certificate was renewed: seal with the new one; nobody knows it yet."""
        self.previous, self._prev_pairs = self.identity, self._pairs
        self.identity, self._pairs = identity, {}
        self.confirmed = set()
        self._hello_at = {}

    def _keys(self, peer: PeerCert, previous: bool = False) -> List[bytes]:
        ident, pairs = (self.previous, self._prev_pairs) if previous else (self.identity,
                                                                          self._pairs)
        p = pairs.get(peer.fp)
        if p is None:
            p = pairs[peer.fp] = _Pair()
        ring = self.keyring
        if p.gen != ring.generation:
            secret = ident.shared_secret(peer)
            me = ident.cert.fp
            p.keys = [crypto.pair_key(k, secret, me, peer.fp) for k in ring.keys]
            p.gen = ring.generation
        return p.keys

    def seal(self, peer: PeerCert, plaintext: bytes) -> bytes:
        key = self._keys(peer)[0]
        return crypto.seal_pair(AESGCM(key), self.identity.cert.id, peer.id, plaintext)

    def open(self, packet: bytes) -> Tuple[PeerCert, bytes]:
        """The verified sender and the plaintext; raises ``AuthError`` (or a subclass)."""
        sid, rid = crypto.pair_ids(packet)
        previous = False
        if rid != self.identity.cert.id:
            if self.previous is None or rid != self.previous.cert.id:
                raise AuthError("sealed for another certificate")
            previous = True   # a peer that has not heard of our renewal yet
        cands = self.trust.by_id(sid)
        if not cands:
            if sid in self.trust.revoked_ids:
                raise RevokedSender("sender certificate revoked")
            raise UnknownSender(sid)
        for pc in cands:
            keys = self._keys(pc, previous)
            try:
                plain = crypto.open_pair([AESGCM(k) for k in keys], packet)
            except AuthError:
                continue
            if not previous:
                self.confirmed.add(pc.fp)
            return pc, plain
        raise AuthError("no pair key opens this packet")

    def drop(self, peer: PeerCert) -> None:
        """Forget a peer's keys (revoked, expired or reaped)."""
        self._pairs.pop(peer.fp, None)
        self._prev_pairs.pop(peer.fp, None)
        self.confirmed.discard(peer.fp)
        self._hello_at.pop(peer.fp, None)

    def unconfirm(self, peer: PeerCert) -> None:
        """The peer may have restarted and forgotten us: hello it again."""
        self.confirmed.discard(peer.fp)

    # --- hello -------------------------------------------------------------------------

    def needs_hello(self, peer: PeerCert, now: float) -> bool:
        if peer.fp in self.confirmed:
            return False
        last = self._hello_at.get(peer.fp)
        if last is not None and now - last < self.hello_interval:
            return False
        self._hello_at[peer.fp] = now
        return True

    def hello(self, want_reply: bool) -> bytes:
        return self.keyring.seal(packb([_HELLO_TAG, self.identity.cert.der, want_reply]))

    def open_hello(self, packet: bytes) -> Tuple[bytes, bool]:
        """(certificate DER, whether a hello back is wanted); raises ``ProtocolError``."""
        plain = self.keyring.open(packet)
        try:
            obj = msgpack.unpackb(plain, raw=False, use_list=True)
        except Exception as exc:
            raise ProtocolError(f"undecodable hello: {type(exc).__name__}") from exc
        if (type(obj) is not list or len(obj) < 3 or obj[0] != _HELLO_TAG
                or type(obj[1]) is not bytes or not 0 < len(obj[1]) <= MAX_CERT
                or type(obj[2]) is not bool):
            raise ProtocolError("bad hello")
        return obj[1], obj[2]

    def expire(self, now: float, keep: float) -> None:
        for fp in [fp for fp, t in self._hello_at.items() if now - t > keep]:
            del self._hello_at[fp]

    def known(self, peer: Optional[PeerCert]) -> bool:
        return peer is not None and peer.fp in self.confirmed
