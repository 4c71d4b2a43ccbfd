"""Mutual-TLS contexts and peer roles, standard library only (shipped to agents).

Both sides pin trust to the cluster CA alone (no system roots), require TLS
1.2+, and the server requires a client certificate. Authorization is by the
role in the peer certificate's OU, see ``pki``.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional


def server_context(cert_file: str, key_file: str, ca_file: str,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    """A server context of the cluster CA. ``require_client_cert=False`` (the dashboard,
    which also takes a token) still verifies a client certificate that is offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    cert_file: str, key_file: str, ca_file: str, check_hostname: bool = True
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_role(ssl_object: Any) -> Optional[str]:
    """The OU (role) of a verified peer certificate, or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "organizationalUnitName":
                return str(value)
    return None


def peer_name(ssl_object: Any) -> Optional[str]:
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
