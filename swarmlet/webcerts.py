"""Web (edge) certificates on the admin side: checking a pair, reading what it covers.

Owns the judgement of a certificate and key a user hands us for ``tls: {cert,
key}`` (stack files, ``swarmlet run --tls-cert/--tls-key``, ``PUT
/v1/certs/NAME``), and of what an ACME CA issued: the chain parses, the key is
the certificate's (a mismatched pair is refused at deploy, before anything is
stored), the leaf is within its validity period, and it covers the host names
that will be served with it. ``PairInfo`` is what the master keeps in clear
beside the sealed key: names, expiry, fingerprint.

Also ``self_signed(names)``, the default certificate the edge shows a client
that sends no SNI or an unknown name (tests and the ingress worker use it).

Admin side (needs ``cryptography``); the agent's ingress loads PEM through
``ssl`` only.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .shipped.exceptions import UsageError
from .shipped.hostnames import wildcard_of

MAX_PEM = 64 * 1024      # a chain of a few certificates; anything bigger is not a web certificate


@dataclass(frozen=True)
class PairInfo:
    names: Tuple[str, ...]       # DNS names of the leaf (SANs; CN only without SANs)
    not_before: float
    not_after: float
    fingerprint: str             # SHA-256 of the leaf's DER, hex
    issuer: str
    chain: int                   # certificates in the PEM


def _load_chain(cert_pem: bytes, what: str) -> List[x509.Certificate]:
    if len(cert_pem) > MAX_PEM:
        raise UsageError(f"{what}: a certificate chain of {len(cert_pem)} bytes is too large "
                         f"(at most {MAX_PEM})")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise UsageError(f"{what}: expected a PEM certificate (BEGIN CERTIFICATE): {exc}") from None
    if not certs:
        raise UsageError(f"{what}: expected a PEM certificate (BEGIN CERTIFICATE)")
    return certs


def _load_key(key_pem: bytes, what: str):
    if len(key_pem) > MAX_PEM:
        raise UsageError(f"{what}: a key of {len(key_pem)} bytes is too large")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise UsageError(f"{what}: the key is encrypted; give it without a passphrase") from None
    except ValueError:
        raise UsageError(f"{what}: expected a PEM private key (BEGIN PRIVATE KEY)") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise UsageError(f"{what}: expected an EC or RSA key, got {type(key).__name__}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise UsageError(f"{what}: an RSA key of {key.key_size} bits is too weak (2048 at least)")
    return key


def names_of(cert: x509.Certificate) -> Tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(str(n).lower().rstrip(".") for n in names)


def covers(names: Iterable[str], host: str) -> bool:
    """A certificate for ``names`` is valid for ``host`` (exact, or one wildcard label)."""
    names = set(names)
    return host in names or wildcard_of(host) in names or (
        host.startswith("*.") and host in names)


def check_pair(cert_pem: bytes, key_pem: bytes, hosts: Sequence[str] = (), *,
               what: str = "certificate", now: float = 0.0) -> PairInfo:
    """Judge a user's pair: ``UsageError`` naming what is wrong, else what it covers."""
    certs = _load_chain(cert_pem, what)
    key = _load_key(key_pem, what)
    leaf = certs[0]
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*pub) != leaf.public_key().public_bytes(*pub):
        raise UsageError(f"{what}: the private key does not match the certificate "
                         f"(it is the key of another certificate)")
    info = info_of(leaf, len(certs))
    if now and info.not_after <= now:
        raise UsageError(f"{what}: the certificate expired on "
                         f"{datetime.datetime.utcfromtimestamp(info.not_after):%Y-%m-%d %H:%M} UTC")
    missing = [h for h in hosts if not covers(info.names, h)]
    if missing:
        raise UsageError(f"{what}: the certificate is for {', '.join(info.names) or 'no DNS name'}, "
                         f"not for {', '.join(missing)}")
    return info


def info_of(leaf: x509.Certificate, chain: int = 1) -> PairInfo:
    return PairInfo(names_of(leaf), leaf.not_valid_before_utc.timestamp(),
                    leaf.not_valid_after_utc.timestamp(),
                    hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
                    leaf.issuer.rfc4514_string(), chain)


def chain_info(cert_pem: bytes, what: str = "certificate") -> PairInfo:
    """What a PEM chain (an issued certificate) covers, without its key."""
    certs = _load_chain(cert_pem, what)
    return info_of(certs[0], len(certs))


def new_key_pem() -> bytes:
    """A fresh ECDSA P-256 key (what ACME certificates get: small, fast handshakes)."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def self_signed(names: Sequence[str], days: float = 3650.0,
                key_pem: bytes = b"") -> Tuple[bytes, bytes]:
    """(cert PEM, key PEM): a self-signed certificate for ``names`` (tests, defaults)."""
    key = (serialization.load_pem_private_key(key_pem, None) if key_pem
           else ec.generate_private_key(ec.SECP256R1()))
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "swarmlet")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key_pem or key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
