"""Signed route updates that agents relay to each other (``PUT /v1/routes/relay``).

At 1,000 nodes one replica's health flip was one ~415-byte delta from the master
to each node (405 KB). Docker Swarm spreads endpoint changes between nodes
(networkdb gossip) instead; swarmlet does the same for route deltas: the master
signs the update once, sends it to a few agents, and agents relay it to the rest
(``relaytree``), while the master's direct push stays the backstop.

An envelope (JSON) carries:

- ``update``: the ``RoutesUpdate`` JSON without its ``node`` (what the pusher
  encodes once per (base, version, term)), as a string: the exact signed bytes;
- ``sig``: ECDSA P-256 (SHA-256, raw ``r || s``, base64) by the master's own mTLS
  key over ``DOMAIN + update``, so no other signature made with that key (gossip
  statements, TLS) can pass for one;
- ``signer``: the SHA-256 fingerprint (hex) of the master's certificate; ``cert``
  (optional, base64 DER): the certificate itself. The master leaves ``cert`` out
  (a certificate is about 500 bytes, more than the update): an agent already
  knows the master's certificate from the master's own mTLS calls
  (``MasterCerts.learn`` in the API middleware, every handshake of a ``master``
  peer), and one that does not refuses the envelope; the master's backstop then
  pushes to it directly.

``MasterCerts.open`` accepts an envelope only if its signer chains to the
cluster CA, has role ``master``, is valid now and is not revoked (the agent's
denylist, followed live), and the signature verifies. The update must be a
delta (``base`` > 0): a delta applies only on the exact table it was made
against (``routestate.offer``), so replaying an old envelope changes nothing,
where an old whole table could roll a node back. Everything refused raises
``RelayRefused`` (the API answers 4xx and counts it). The relay fields (range,
fanout, budget) are not signed: a forwarder that lies about them can only fail
to deliver, which the backstop covers. Shipped to agents: Python 3.9,
``cryptography`` (as gossip).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any, Dict, Optional, Tuple

from .exceptions import AuthError, ProtocolError
from .gossip.identity import Identity, PeerCert, Trust
from .models import RoutesUpdate, from_wire

DOMAIN = b"swarmlet routes relay v1\0"
MAX_UPDATE = 1 << 20        # bytes of one relayed update at most (a big delta of a deploy)
MAX_CERT = 8192


class RelayRefused(Exception):
    """An envelope that is not accepted: ``status`` is the HTTP answer (400 or 403)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def seal(update: bytes, identity: Identity, with_cert: bool = False) -> Dict[str, Any]:
    """The envelope of ``update`` (the update's JSON without ``node``), signed by ``identity``."""
    env: Dict[str, Any] = {"update": update.decode(),
                           "sig": base64.b64encode(identity.sign(DOMAIN + update)).decode(),
                           "signer": identity.cert.fp.hex()}
    if with_cert:
        env["cert"] = base64.b64encode(identity.cert.der).decode()
    return env


class MasterCerts:
    """The master certificates this node trusts to sign relayed routes.

    Learnt from the TLS handshakes of callers with role ``master`` (already
    verified by OpenSSL against the CA and the denylist; checked again here:
    issuer, role, validity), or from an envelope's ``cert``. Bounded (HA masters
    and their renewals: a handful). ``follow(denylist)`` forgets a revoked one at once.
    """

    def __init__(self, ca_pem: bytes, max_certs: int = 32) -> None:
        self.trust = Trust.from_pem(ca_pem, roles=("master",), max_certs=max_certs)
        self._seen: Dict[bytes, float] = {}      # fingerprints already tried (bounded)

    @classmethod
    def load(cls, ca_path: str, **kw: Any) -> "MasterCerts":
        with open(ca_path, "rb") as fh:
            return cls(fh.read(), **kw)

    def follow(self, denylist: Any) -> None:
        def revoked(d: Any) -> None:
            self.trust.set_revoked([e.serial for e in d.entries()])
        revoked(denylist)
        denylist.subscribe(revoked)

    def learn(self, der: Optional[bytes], now: Optional[float] = None) -> Optional[PeerCert]:
        """A master's certificate from a verified handshake; None if refused."""
        if not der:
            return None
        fp = hashlib.sha256(der).digest()
        known = self.trust.by_fp(fp)
        if known is not None:
            return known
        if fp in self._seen:         # refused before (e.g. revoked): not parsed again each call
            return None
        try:
            return self.trust.add(der, time.time() if now is None else now)
        except AuthError:
            if len(self._seen) > 256:
                self._seen.clear()
            self._seen[fp] = 0.0
            return None

    def open(self, body: Any, node: str, now: Optional[float] = None) -> Tuple[RoutesUpdate, bytes]:
        """(the update for ``node``, its signed bytes) from an envelope; ``RelayRefused`` if not."""
        wire, raw = self.verify(body, now)
        try:
            return from_wire(RoutesUpdate, dict(wire, node=node)), raw
        except (ValueError, ProtocolError) as exc:
            raise RelayRefused(f"bad routes update: {exc}", 400) from None

    def verify(self, body: Any, now: Optional[float] = None) -> Tuple[Dict[str, Any], bytes]:
        """(the update's decoded JSON, its signed bytes) if the master signed it and it is a
        delta; ``RelayRefused`` if not. Its fields are not validated (``open`` does): what
        the master signed is trusted to be well formed, and a hop forwards it first."""
        now = time.time() if now is None else now
        if not isinstance(body, dict):
            raise RelayRefused("a relay envelope is a JSON object", 400)
        update, sig, signer = body.get("update"), body.get("sig"), body.get("signer")
        if not isinstance(update, str) or not isinstance(sig, str) or not isinstance(signer, str):
            raise RelayRefused("a relay envelope has update, sig and signer strings", 400)
        raw = update.encode()
        if len(raw) > MAX_UPDATE:
            raise RelayRefused(f"relayed update over {MAX_UPDATE} bytes", 400)
        try:
            sig_b = base64.b64decode(sig, validate=True)
            fp = bytes.fromhex(signer)
        except (ValueError, binascii.Error):
            raise RelayRefused("sig is base64 and signer hex", 400) from None
        pc = self.trust.by_fp(fp)
        cert = body.get("cert")
        if pc is None and cert is not None:
            if not isinstance(cert, str) or len(cert) > MAX_CERT:
                raise RelayRefused("cert is base64 DER", 400)
            try:
                der = base64.b64decode(cert, validate=True)
            except (ValueError, binascii.Error):
                raise RelayRefused("cert is base64 DER", 400) from None
            if hashlib.sha256(der).digest() != fp:
                raise RelayRefused("cert does not match signer")
            try:
                pc = self.trust.add(der, now)
            except AuthError as exc:
                raise RelayRefused(f"signer refused: {exc}") from None
        if pc is None:
            raise RelayRefused("signer is not a master certificate this node knows")
        if self.trust.is_revoked(pc.serial):
            raise RelayRefused(f"signer {pc.name} is revoked")
        if not pc.not_before - self.trust.skew <= now <= pc.not_after + self.trust.skew:
            raise RelayRefused(f"signer {pc.name}'s certificate is not valid now")
        if not pc.verify(DOMAIN + raw, sig_b):
            raise RelayRefused("signature does not verify")
        try:
            wire = json.loads(raw)
        except ValueError:
            raise RelayRefused("bad routes update: not JSON", 400) from None
        if not isinstance(wire, dict):
            raise RelayRefused("bad routes update: not an object", 400)
        for k in ("version", "base", "epoch", "term"):
            v = wire.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise RelayRefused(f"bad routes update: {k} is a non-negative integer", 400)
        if wire.get("base", 0) <= 0:
            raise RelayRefused("only deltas are relayed (a whole table comes from the master)", 400)
        return wire, raw
