"""Who a gossip member is: its own certificate and key (``Identity``), and the cluster
CA with the certificates it vouches for (``Trust``).

Every node already has an ECDSA P-256 key and a certificate from the cluster CA (made
at ``swarmlet join``; CN = node name, OU = role). Gossip uses them for two things:

- signatures (raw ``r || s``, 64 bytes) on what a member says about itself;
- a static ECDH secret per pair of members, from which ``crypto`` derives the key that
  seals their packets, so a packet's sender is authenticated at no per-packet cost.

``Trust`` verifies a certificate once (issued by the CA, in its validity period with
``skew`` of slack, role allowed, P-256 key, serial not revoked) and caches it by
fingerprint, by its 4-byte id (what envelopes carry) and by name (at most two per
name: the newest wins for sealing, the older still verifies during a renewal).
The cache is bounded (``max_certs``). ``set_revoked(serials)`` takes the cluster's
serial denylist at runtime and forgets those certificates at once.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Dict, Iterable, List, Optional, Set, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)
from cryptography.x509.oid import NameOID

from ..exceptions import AuthError, ConfigError

SIG_SIZE = 64
ID_SIZE = 4
_ECDSA = ec.ECDSA(hashes.SHA256())
_PER_NAME = 2


class RevokedCert(AuthError):
    """A certificate on the cluster's revocation list."""


class PeerCert:
    """A verified member certificate (immutable; shared freely)."""

    __slots__ = ("name", "der", "fp", "id", "public_key", "serial", "not_before", "not_after")

    def __init__(self, name: str, der: bytes, public_key: ec.EllipticCurvePublicKey,
                 serial: int, not_before: float, not_after: float) -> None:
        self.name = name
        self.der = der
        self.fp = hashlib.sha256(der).digest()
        self.id = self.fp[:ID_SIZE]
        self.public_key = public_key
        self.serial = serial
        self.not_before = not_before
        self.not_after = not_after

    def verify(self, data: bytes, sig: bytes) -> bool:
        if len(sig) != SIG_SIZE:
            return False
        der_sig = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                       int.from_bytes(sig[32:], "big"))
        try:
            self.public_key.verify(der_sig, data, _ECDSA)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerCert) and other.fp == self.fp

    def __hash__(self) -> int:
        return hash(self.fp)

    def __repr__(self) -> str:
        return f"PeerCert({self.name!r}, serial={self.serial:x}, id={self.id.hex()})"


def _ts(dt: datetime.datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def _parse(der: bytes) -> Tuple[x509.Certificate, PeerCert]:
    try:
        cert = x509.load_der_x509_certificate(der)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(cns[0].value) if cns else ""
        key = cert.public_key()
        nb = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
        na = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    except Exception as exc:  # cryptography raises ValueError and friends for junk
        raise AuthError(f"unreadable certificate: {type(exc).__name__}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AuthError("gossip certificates need an EC P-256 key")
    if not name or len(name) > 128 or not name.isprintable():
        raise AuthError("certificate has no usable common name")
    return cert, PeerCert(name, der, key, cert.serial_number, _ts(nb), _ts(na))


def _role(cert: x509.Certificate) -> Optional[str]:
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(ous[0].value) if ous else None


class Identity:
    """This member's certificate and private key."""

    def __init__(self, cert_der: bytes, key: ec.EllipticCurvePrivateKey) -> None:
        _, self.cert = _parse(cert_der)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or \
                key.public_key().public_numbers() != self.cert.public_key.public_numbers():
            raise ConfigError("the gossip key does not match its certificate")
        self._key = key
        self.name = self.cert.name

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> "Identity":
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"unreadable node certificate or key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("gossip needs an EC P-256 node key")
        try:
            return cls(cert.public_bytes(serialization.Encoding.DER), key)
        except AuthError as exc:
            raise ConfigError(f"node certificate: {exc}") from exc

    @classmethod
    def load(cls, cert_path: str, key_path: str) -> "Identity":
        try:
            with open(cert_path, "rb") as fh:
                cert_pem = fh.read()
            with open(key_path, "rb") as fh:
                key_pem = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read node certificate/key: {exc.strerror}: "
                              f"{exc.filename}") from exc
        return cls.from_pem(cert_pem, key_pem)

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, _ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def shared_secret(self, peer: PeerCert) -> bytes:
        """Static ECDH with a peer: the same 32 bytes on both sides."""
        return self._key.exchange(ec.ECDH(), peer.public_key)


class Trust:
    """The cluster CA and the member certificates verified against it."""

    def __init__(self, ca_der: bytes, *, roles: Iterable[str] = ("agent",),
                 max_certs: int = 10000, skew: float = 60.0) -> None:
        try:
            self._ca = x509.load_der_x509_certificate(ca_der)
        except ValueError as exc:
            raise ConfigError(f"unreadable cluster CA certificate: {exc}") from exc
        self.roles = frozenset(roles)
        self.max_certs = max_certs
        self.skew = skew
        self._by_fp: Dict[bytes, PeerCert] = {}
        self._by_id: Dict[bytes, List[PeerCert]] = {}
        self._by_name: Dict[str, List[PeerCert]] = {}
        self._revoked: Set[int] = set()
        self.revoked_ids: Set[bytes] = set()      # ids of certificates dropped by revocation
        self.revoked_names: Set[str] = set()      # names left with no valid certificate

    @classmethod
    def from_pem(cls, ca_pem: bytes, **kw) -> "Trust":
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError as exc:
            raise ConfigError(f"unreadable cluster CA certificate: {exc}") from exc
        return cls(ca.public_bytes(serialization.Encoding.DER), **kw)

    @classmethod
    def load(cls, ca_path: str, **kw) -> "Trust":
        try:
            with open(ca_path, "rb") as fh:
                pem = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read cluster CA {ca_path}: {exc.strerror}") from exc
        return cls.from_pem(pem, **kw)

    def __len__(self) -> int:
        return len(self._by_fp)

    # --- lookups -----------------------------------------------------------------

    def by_fp(self, fp: bytes) -> Optional[PeerCert]:
        """The cached certificate with SHA-256 fingerprint ``fp``."""
        return self._by_fp.get(fp)

    def by_id(self, cid: bytes) -> List[PeerCert]:
        return self._by_id.get(cid, [])

    def by_name(self, name: str) -> List[PeerCert]:
        """Valid certificates for ``name``, newest first."""
        return self._by_name.get(name, [])

    def newest(self, name: str) -> Optional[PeerCert]:
        certs = self._by_name.get(name)
        return certs[0] if certs else None

    # --- adding --------------------------------------------------------------------

    def add(self, der: bytes, wall: float) -> PeerCert:
        """Verify ``der`` against the CA and cache it; raises ``AuthError`` if refused."""
        fp = hashlib.sha256(der).digest()
        known = self._by_fp.get(fp)
        if known is not None:
            return known
        cert, pc = _parse(der)
        if cert.issuer != self._ca.subject:
            raise AuthError("certificate not issued by this cluster's CA")
        try:
            cert.verify_directly_issued_by(self._ca)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise AuthError("certificate signature does not verify against the cluster CA") \
                from exc
        if _role(cert) not in self.roles:
            raise AuthError(f"certificate role {_role(cert)!r} may not gossip")
        if not pc.not_before - self.skew <= wall <= pc.not_after + self.skew:
            raise AuthError(f"certificate of {pc.name} is not valid now")
        if pc.serial in self._revoked:
            raise RevokedCert(f"certificate of {pc.name} is revoked")
        self.add_verified(pc)
        return pc

    def add_verified(self, pc: PeerCert) -> bool:
        """Cache a certificate already verified (the simulator's converged start)."""
        if pc.fp in self._by_fp:
            return True
        if len(self._by_fp) >= self.max_certs and pc.name not in self._by_name:
            raise AuthError("certificate cache full")
        self._by_fp[pc.fp] = pc
        self._by_id.setdefault(pc.id, []).append(pc)
        certs = self._by_name.setdefault(pc.name, [])
        certs.append(pc)
        certs.sort(key=lambda c: (c.not_before, c.fp), reverse=True)
        for old in certs[_PER_NAME:]:
            self._drop(old)
        self.revoked_names.discard(pc.name)
        self.revoked_ids.discard(pc.id)
        return True

    def _drop(self, pc: PeerCert) -> None:
        self._by_fp.pop(pc.fp, None)
        ids = self._by_id.get(pc.id)
        if ids is not None:
            if pc in ids:
                ids.remove(pc)
            if not ids:
                del self._by_id[pc.id]
        certs = self._by_name.get(pc.name)
        if certs is not None:
            if pc in certs:
                certs.remove(pc)
            if not certs:
                del self._by_name[pc.name]

    def forget(self, name: str) -> None:
        """Drop every certificate of ``name`` (a member reaped long ago)."""
        for pc in list(self._by_name.get(name, ())):
            self._drop(pc)

    # --- revocation ----------------------------------------------------------------

    def set_revoked(self, serials: Iterable[int]) -> List[PeerCert]:
        """Replace the serial denylist; returns the cached certificates it removed."""
        self._revoked = {int(s) for s in serials}
        gone = [pc for pc in self._by_fp.values() if pc.serial in self._revoked]
        for pc in gone:
            self._drop(pc)
            self.revoked_ids.add(pc.id)
            if pc.name not in self._by_name:
                self.revoked_names.add(pc.name)
        return gone

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def expire(self, wall: float) -> List[PeerCert]:
        """Drop certificates past their validity; returns them."""
        gone = [pc for pc in self._by_fp.values() if wall > pc.not_after + self.skew]
        for pc in gone:
            self._drop(pc)
        return gone
