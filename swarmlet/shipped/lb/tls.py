"""TLS for the edge: modern server contexts, and the certificate chosen per SNI name.

Defaults (Mozilla's "intermediate" profile, which nginx and HAProxy configs
follow): TLS 1.2 and 1.3 only; for 1.2 only ECDHE key exchange with AES-GCM or
ChaCha20-Poly1305 (forward secrecy, AEAD); no compression, no renegotiation;
ALPN ``http/1.1`` (the proxy speaks HTTP/1.1, so it never agrees to h2). Every
context is made by ``server_context`` with the same settings, because the SNI
callback swaps the connection's context and OpenSSL then reads some of them
(ALPN) from the new one.

``CertStore`` holds one context per certificate and answers the SNI callback:
the exact name, then the wildcard one label up (``*.example.com``), else the
default certificate — the default service's, or a self-signed one made at
start (a client that sends no SNI, or a name we have no certificate for, still
completes a handshake and then gets the edge's 404 naming the host). The key
of each certificate is loaded from an anonymous in-memory file (``memfd``), so
it never touches the node's disk here; ``update`` replaces the whole set
atomically, so a renewal takes effect for the next handshake and connections
already open keep theirs.

Shipped to agents: Python 3.9; ``cryptography`` (in the bundle) only for the
self-signed default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..hostnames import wildcard_of

log = logging.getLogger("swarmlet.ingress.tls")

CIPHERS_TLS12 = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
ALPN = ["http/1.1"]


def server_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A server context for one certificate chain and key (PEM text); ``ssl.SSLError``
    or ``ValueError`` when they do not load (bad PEM, key not the certificate's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(ALPN)
    _load(ctx, cert_pem, key_pem)
    return ctx


def _load(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` reads files only: hand it an anonymous memory file."""
    data = (key_pem.strip() + "\n" + cert_pem.strip() + "\n").encode()
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("swarmlet-edge-cert", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            path = f"/proc/self/fd/{fd}"
            ctx.load_cert_chain(path, path)
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("wb", delete=True) as fh:   # not Linux: a private file
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
        fh.flush()
        ctx.load_cert_chain(fh.name, fh.name)


def self_signed_pem(name: str = "swarmlet-edge") -> Tuple[str, str]:
    """(cert, key) PEM of a throwaway self-signed certificate: the default with no other."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


class CertStore:
    """Certificates by SNI name, and the context every TLS connection starts with."""

    def __init__(self, default: Optional[Tuple[str, str]] = None) -> None:
        cert, key = default or self_signed_pem()
        self.fallback = server_context(cert, key)
        self.main = server_context(cert, key)        # the listener's; its SNI callback picks
        self.main.sni_callback = self._sni
        self.by_name: Dict[str, ssl.SSLContext] = {}
        self.by_fingerprint: Dict[str, ssl.SSLContext] = {}
        self.names: Dict[str, str] = {}              # host -> certificate name, for status
        self.default: ssl.SSLContext = self.fallback
        self.errors: Dict[str, str] = {}             # certificate name -> why it did not load
        self.loaded: Dict[str, Dict[str, Any]] = {}  # name -> {hosts, not_after, fingerprint}
        self.sni_misses = 0

    def update(self, certs: Iterable[Any], default_name: str = "") -> None:
        """Replace the whole set (``models.EdgeCert``s); a certificate that does not load is
        reported in ``errors`` and the others go on. Unchanged ones keep their context."""
        by_name: Dict[str, ssl.SSLContext] = {}
        by_fp: Dict[str, ssl.SSLContext] = {}
        names: Dict[str, str] = {}
        errors: Dict[str, str] = {}
        loaded: Dict[str, Dict[str, Any]] = {}
        default = None
        for c in certs:
            fp = c.fingerprint or hashlib.sha256((c.cert + c.key).encode()).hexdigest()
            ctx = self.by_fingerprint.get(fp)
            if ctx is None:
                try:
                    ctx = server_context(c.cert, c.key)
                except (ssl.SSLError, ValueError, OSError) as exc:
                    errors[c.name] = f"cannot load the certificate: {exc}"
                    log.warning("certificate %s: %s", c.name, errors[c.name])
                    continue
            by_fp[fp] = ctx
            loaded[c.name] = {"hosts": list(c.hosts), "not_after": c.not_after, "fingerprint": fp}
            for host in c.hosts:
                by_name.setdefault(host, ctx)
                names.setdefault(host, c.name)
            if c.name == default_name or default_name in c.hosts:
                default = ctx
        self.by_name, self.by_fingerprint, self.names = by_name, by_fp, names
        self.errors, self.loaded = errors, loaded
        self.default = default or self.fallback

    def context_for(self, name: Optional[str]) -> ssl.SSLContext:
        if name:
            name = name.lower().rstrip(".")
            ctx = self.by_name.get(name)
            if ctx is None:
                wild = wildcard_of(name)
                ctx = self.by_name.get(wild) if wild is not None else None
            if ctx is not None:
                return ctx
            self.sni_misses += 1
        return self.default

    def _sni(self, sslobj: Any, name: Optional[str], _ctx: ssl.SSLContext) -> None:
        ctx = self.context_for(name)
        if ctx is not self.main:
            sslobj.context = ctx
        return None

    def describe(self) -> Dict[str, Any]:
        return {"certs": dict(self.loaded), "errors": dict(self.errors),
                "sni_misses": self.sni_misses}


__all__: List[str] = ["CertStore", "server_context", "self_signed_pem", "CIPHERS_TLS12", "ALPN"]
