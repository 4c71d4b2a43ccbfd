"""The cluster CA: key generation and certificate issuance (admin side only).

``swarmlet init`` makes one CA per cluster. Every party gets a certificate
signed by it, with its role in the subject's OU: ``master``, ``cli`` or
``agent``. The agent API accepts only ``master`` and ``cli`` clients; a
certificate from another cluster's CA fails the TLS handshake itself.
Keys are ECDSA P-256: small, fast to make, and supported by every TLS stack.
TLS contexts (stdlib only, shipped to agents) live in ``tlsutil``; who signs,
and the ledger of what was issued and revoked, in ``signer``.

Lifetimes (``LIFETIME_DAYS``), argued in docs/security.md: agent certificates
last 30 days and the master renews them once half is gone (so the master may
be away 15 days with no certificate lapsing); the master and cli certificates,
which live next to the CA key, last 90 days and are renewed the same way on the
admin host. Revocation (a denylist, seconds) is the fast path; the lifetime
bounds what a revocation that never arrived can leave open.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("master", "cli", "agent")
_VALIDITY_DAYS_CA = 3650
LIFETIME_DAYS = {"agent": 30.0, "master": 90.0, "cli": 90.0}   # what the Signer issues
_VALIDITY_DAYS_OTHER = 825    # a leaf made outside the Signer (the etcd CA's): never renewed
RENEW_FRACTION = 0.5      # renew once less than this fraction of the lifetime is left
_BACKDATE = datetime.timedelta(minutes=5)   # tolerate clocks a little behind the admin host's


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(cluster_id: str, cluster_name: str = "swarmlet") -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"swarmlet:{cluster_id}"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name} CA"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALIDITY_DAYS_CA))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _sans(names: Iterable[str]) -> list:
    out: list = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue(
    ca: KeyPair,
    common_name: str,
    role: str,
    sans: Sequence[str] = (),
    days: Optional[float] = None,
) -> KeyPair:
    """A leaf certificate and a new key for ``common_name`` with ``role`` in its OU.

    Every leaf may act as TLS server and client, so an agent can both serve
    its API and join peers; authorization is by role, not by usage bits.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(ca, key.public_key(), common_name, role, sans, days)
    return KeyPair(_key_pem(key), cert)


def sign_csr(ca: KeyPair, csr_pem: bytes, common_name: str, role: str, sans: Sequence[str] = (),
             days: Optional[float] = None) -> bytes:
    """A certificate for the key of ``csr_pem``; name, role and SANs are the signer's, never the CSR's.

    The CSR's own signature is checked (its holder has the private key); its
    subject and extensions are ignored, so a node cannot ask for another identity.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature does not verify")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise ValueError("the certificate request must be for an ECDSA P-256 key")
    return _sign(ca, pub, common_name, role, sans, days)


def _sign(ca: KeyPair, public_key: ec.EllipticCurvePublicKey, common_name: str, role: str,
          sans: Sequence[str], days: Optional[float]) -> bytes:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = _now()
    lifetime = datetime.timedelta(days=_VALIDITY_DAYS_OTHER if days is None else days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    names = list(dict.fromkeys([common_name, *sans]))
    builder = builder.add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertInfo:
    serial: int
    name: str
    role: Optional[str]
    not_before: float        # unix time; issued at not_before + _BACKDATE
    not_after: float
    sans: tuple

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before - _BACKDATE.total_seconds()


def cert_info(cert_pem: bytes) -> CertInfo:
    cert = x509.load_pem_x509_certificate(cert_pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(cert.serial_number, str(cn[0].value) if cn else "", cert_role(cert_pem),
                    cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(), sans)


def needs_renewal(not_after: float, now: float, lifetime_days: float,
                  fraction: float = RENEW_FRACTION) -> bool:
    """Less than ``fraction`` of the lifetime left, or more left than the policy allows. Pure."""
    lifetime = lifetime_days * 86400.0
    left = not_after - now
    return left < lifetime * fraction or left > lifetime * 1.1


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "SHA256:" + cert.fingerprint(hashes.SHA256()).hex()


def cert_role(cert_pem: bytes) -> Optional[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(attrs[0].value) if attrs else None
