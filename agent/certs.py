"""The agent's own certificate and the cluster's denylist, on disk and live in its TLS context.

Renewal (``Renewal``): the master asks for a certificate request
(``POST /v1/certificate/request``); the agent makes a new P-256 key, keeps it
in memory and answers the CSR, so the private key never leaves the node. The
master signs it (name, role and SANs are the signer's, not the CSR's) and
sends the certificate (``PUT /v1/certificate``). The agent installs it only if
it is for the pending key, names this node with role ``agent`` and chains to
the cluster CA: cert and key are written atomically (key 0600) over the
configured paths, then loaded into the live server context, so new
handshakes use it and old connections finish undisturbed.

Denylist (``DenylistFile``): ``<state_dir>/revoked.json``, replaced whole
when the master ships a newer version (``PUT /v1/revocations``) and read back
at start, so a restarted agent refuses revoked certificates before the
master is back. The ``Denylist`` object itself (``swarmlet.tlsutil``) is
what the API's TLS context checks in every handshake, and what gossip can
subscribe to.

Python 3.9 compatible; needs only ``cryptography`` (shipped in the bundle).
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmlet.shipped.exceptions import ConfigError, ProtocolError
from swarmlet.shipped.tlsutil import Denylist

REVOKED_FILE = "revoked.json"


def write_atomic(path: str, data: bytes, mode: int) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _utc(cert: Any, attr: str) -> float:
    """``not_valid_before/after`` as unix time, on old and new ``cryptography`` alike."""
    value = getattr(cert, attr + "_utc", None)
    if value is None:
        value = getattr(cert, attr).replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def cert_times(path: str) -> Tuple[int, float, float]:
    """(serial, not_before, not_after) of the certificate file at ``path``."""
    with open(path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    return cert.serial_number, _utc(cert, "not_valid_before"), _utc(cert, "not_valid_after")


class Renewal:
    """A pending key between the master's CSR request and its certificate."""

    def __init__(self, name: str, cert_path: str, key_path: str, ca_path: str) -> None:
        self.name = name
        self.cert_path, self.key_path, self.ca_path = cert_path, key_path, ca_path
        self._pending: Optional[ec.EllipticCurvePrivateKey] = None
        self.renewed = 0

    def request(self) -> str:
        """A new key (kept here) and its CSR, PEM. Blocking (key generation): run in a thread."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
               .sign(key, hashes.SHA256()))
        self._pending = key
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def install(self, cert_pem: str, ctx: Optional[ssl.SSLContext]) -> Dict[str, Any]:
        """Check and install the signed certificate for the pending key. Blocking."""
        key = self._pending
        if key is None:
            raise ProtocolError("no certificate request is pending")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            with open(self.ca_path, "rb") as fh:
                ca = x509.load_pem_x509_certificate(fh.read())
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, OSError) as exc:
            raise ProtocolError(f"the certificate does not verify against the cluster CA: {exc}") from exc
        except Exception as exc:   # cryptography's InvalidSignature
            raise ProtocolError("the certificate is not signed by the cluster CA") from exc
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if (cert.public_key().public_bytes(serialization.Encoding.DER, pub)
                != key.public_key().public_bytes(serialization.Encoding.DER, pub)):
            raise ProtocolError("the certificate is not for the pending key")
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not cn or cn[0].value != self.name or not ou or ou[0].value != "agent":
            raise ProtocolError(f"the certificate is not for agent {self.name!r}")
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        # Key first: a crash in between leaves the new key with the old cert, which the
        # check below (load_cert_chain) would refuse, so write both before loading.
        old = self._read_pair()
        write_atomic(self.key_path, key_pem, 0o600)
        write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        try:
            if ctx is not None:
                ctx.load_cert_chain(self.cert_path, self.key_path)
        except (ssl.SSLError, OSError) as exc:
            if old is not None:     # put the working pair back
                write_atomic(self.key_path, old[1], 0o600)
                write_atomic(self.cert_path, old[0], 0o644)
            raise ConfigError(f"the new certificate could not be loaded: {exc}") from exc
        self._pending = None
        self.renewed += 1
        return {"serial": f"{cert.serial_number:X}",
                "not_after": _utc(cert, "not_valid_after")}

    def _read_pair(self) -> Optional[Tuple[bytes, bytes]]:
        try:
            with open(self.cert_path, "rb") as c, open(self.key_path, "rb") as k:
                return c.read(), k.read()
        except OSError:
            return None


class DenylistFile:
    """``<state_dir>/revoked.json``: the last denylist the master shipped."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, REVOKED_FILE)

    def load(self) -> Denylist:
        try:
            with open(self.path, encoding="utf-8") as fh:
                version, entries = Denylist.parse_wire(json.load(fh))
        except FileNotFoundError:
            return Denylist()
        except (OSError, ValueError):
            os.replace(self.path, self.path + ".corrupt")   # keep the evidence; the master resends
            return Denylist()
        d = Denylist(version, entries)
        d.prune(time.time())
        return d

    def save(self, d: Denylist) -> None:
        write_atomic(self.path, json.dumps(d.to_wire(), separators=(",", ":")).encode(), 0o644)


def apply_denylist(d: Denylist, body: Any) -> Tuple[bool, List[str]]:
    """Take a shipped denylist if newer; (changed, names newly revoked).

    Called on the event loop (subscribers, e.g. gossip, run there); the caller
    saves the file in a thread.
    """
    try:
        version, entries = Denylist.parse_wire(body)
    except ValueError as exc:
        raise ProtocolError(f"bad denylist: {exc}") from exc
    before = set(d.names())
    if not d.update(version, entries):
        return False, []
    d.prune(time.time())
    return True, sorted(set(d.names()) - before)
