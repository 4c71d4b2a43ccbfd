"""Mutual-TLS contexts, peer identity checks and the revocation denylist (stdlib only, shipped).

Both sides pin trust to the cluster CA alone (no system roots), require TLS
1.2+, and the server requires a client certificate. Authorization is by the
role in the peer certificate's OU, see ``pki``.

On top of OpenSSL's chain check, every context made here runs ``check_peer``
inside the handshake itself (``sslobject_class`` is a subclass whose
``do_handshake`` checks the verified peer certificate before the first byte of
a request goes out or comes in):

- a client context built with an ``Expect`` refuses a server whose certificate
  has another role (OU), another name (CN), or lacks the address it was
  reached at in its SANs, so a node's certificate can serve only as that node;
- every context refuses a peer whose certificate serial is in its
  ``Denylist`` (revoked by ``leave``/``node rm``). The denylist is a live
  object: a context made with it refuses a serial from the moment it is added.

``Denylist`` is also what the agent exposes for gossip (``Agent.denylist``):
``is_revoked(serial)``, ``subscribe(callback)``.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple


# --- peer identity ----------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """Who must be on the other end: ``role`` (OU), ``name`` (CN), ``address`` in the SANs.

    ``None`` for a field means "any".
    """

    role: Optional[str] = None
    name: Optional[str] = None
    address: Optional[str] = None


def _subject(cert: Mapping[str, Any], key: str) -> Optional[str]:
    for rdn in cert.get("subject", ()):
        for k, value in rdn:
            if k == key:
                return str(value)
    return None


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")


def cert_serial(cert: Mapping[str, Any]) -> Optional[int]:
    """The serial of a decoded (``getpeercert()``) certificate as an integer."""
    raw = cert.get("serialNumber")
    try:
        return int(str(raw), 16) if raw else None
    except ValueError:
        return None


def check_peer(cert: Optional[Mapping[str, Any]], expect: Optional[Expect] = None,
               denylist: Optional["Denylist"] = None) -> Optional[str]:
    """Why a chain-verified peer certificate is refused, or ``None`` if it is accepted. Pure."""
    if not cert:
        return "the peer sent no certificate" if expect is not None else None
    role, name = _subject(cert, "organizationalUnitName"), _subject(cert, "commonName")
    if denylist is not None:
        serial = cert_serial(cert)
        if serial is not None and denylist.is_revoked(serial):
            return f"certificate of {name!r} ({role}) is revoked (serial {serial:X})"
    if expect is None:
        return None
    if expect.role is not None and role != expect.role:
        return f"its certificate is {name!r} with role {role!r}, expected role {expect.role!r}"
    if expect.name is not None and name != expect.name:
        return f"its certificate is {role} {name!r}, expected {role} {expect.name!r}"
    if expect.address is not None:
        sans = [str(v) for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
        if not any(_same_address(expect.address, s) for s in sans):
            return (f"address {expect.address} is not in the certificate of {name!r} "
                    f"(it names {', '.join(sans) or 'no address'})")
    return None


class _CheckedObject(ssl.SSLObject):
    """asyncio's TLS object: the handshake completes only if ``check_peer`` accepts the peer."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _enforce(self, self.context)


class _CheckedSocket(ssl.SSLSocket):
    """The same for blocking sockets (``http.client``, ``socket``-level tests)."""

    def do_handshake(self, block: bool = False) -> None:  # type: ignore[override]
        super().do_handshake(block)
        _enforce(self, self.context)


def _enforce(obj: Any, ctx: Any) -> None:
    reason = check_peer(obj.getpeercert(), getattr(ctx, "swarmlet_expect", None),
                        getattr(ctx, "swarmlet_denylist", None))
    if reason is not None:
        raise ssl.SSLCertVerificationError(reason)


def _hook(ctx: ssl.SSLContext, expect: Optional[Expect], denylist: Optional["Denylist"]) -> None:
    ctx.sslobject_class = _CheckedObject
    ctx.sslsocket_class = _CheckedSocket
    ctx.swarmlet_expect = expect          # type: ignore[attr-defined]
    ctx.swarmlet_denylist = denylist      # type: ignore[attr-defined]


def server_context(cert_file: str, key_file: str, ca_file: str,
                   require_client_cert: bool = True,
                   denylist: Optional["Denylist"] = None) -> ssl.SSLContext:
    """A server context of the cluster CA. ``require_client_cert=False`` (the dashboard,
    which also takes a token) still verifies a client certificate that is offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _hook(ctx, None, denylist)
    return ctx


def client_context(
    cert_file: str, key_file: str, ca_file: str, check_hostname: bool = True,
    expect: Optional[Expect] = None, denylist: Optional["Denylist"] = None,
) -> ssl.SSLContext:
    """A client context; with ``expect``, the address check is ``check_peer``'s (not OpenSSL's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=ca_file)
    ctx.check_hostname = check_hostname and expect is None
    ctx.verify_mode = ssl.CERT_REQUIRED
    _hook(ctx, expect, denylist)
    return ctx


def peer_role(ssl_object: Any) -> Optional[str]:
    """The OU (role) of a verified peer certificate, or None."""
    if ssl_object is None:
        return None
    return _subject(ssl_object.getpeercert() or {}, "organizationalUnitName")


def peer_name(ssl_object: Any) -> Optional[str]:
    if ssl_object is None:
        return None
    return _subject(ssl_object.getpeercert() or {}, "commonName")


def peer_revoked(ssl_object: Any, denylist: Optional["Denylist"]) -> Optional[str]:
    """Why a connection's (already verified) peer is now refused: revoked since its handshake."""
    if ssl_object is None or denylist is None or not denylist:
        return None
    return check_peer(ssl_object.getpeercert() or {}, None, denylist)


# --- revocation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Revoked:
    """One revoked certificate: its serial, whose it was, and when it would have expired."""

    serial: int
    name: str = ""
    role: str = ""
    not_after: float = 0.0       # unix time; after it the certificate is refused as expired anyway

    def to_wire(self) -> Dict[str, Any]:
        return {"serial": f"{self.serial:X}", "name": self.name, "role": self.role,
                "not_after": self.not_after}

    @classmethod
    def from_wire(cls, d: Any) -> "Revoked":
        if not isinstance(d, dict):
            raise ValueError("a revoked entry is an object")
        serial = d.get("serial")
        if not isinstance(serial, str) or not 0 < len(serial) <= 40:
            raise ValueError("serial must be a hex string")
        na = d.get("not_after", 0)
        if not isinstance(na, (int, float)) or isinstance(na, bool):
            raise ValueError("not_after must be a number")
        return cls(int(serial, 16), str(d.get("name", ""))[:253], str(d.get("role", ""))[:16],
                   float(na))


MAX_REVOKED = 100_000   # a denylist beyond this is refused (bounded memory on every agent)


class Denylist:
    """Revoked certificate serials, versioned; checked in every handshake and shared live.

    ``update`` takes a whole newer list (versions only move forward), so a lost
    or repeated push is harmless. Entries past their ``not_after`` are dropped
    by ``prune``: OpenSSL refuses an expired certificate by itself.
    Thread-safe for the check (a set lookup) and the swap.
    """

    def __init__(self, version: int = 0, entries: Iterable[Revoked] = ()) -> None:
        self._lock = threading.Lock()
        self.version = version
        self._entries: Dict[int, Revoked] = {e.serial: e for e in entries}
        self._subs: List[Callable[["Denylist"], Any]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def is_revoked(self, serial: Any) -> bool:
        """``serial`` as an int or a hex string (as ``getpeercert()`` gives it)."""
        if isinstance(serial, str):
            try:
                serial = int(serial, 16)
            except ValueError:
                return False
        return serial in self._entries

    def entries(self) -> List[Revoked]:
        return sorted(self._entries.values(), key=lambda e: e.serial)

    def names(self) -> List[str]:
        return sorted({e.name for e in self._entries.values() if e.name})

    def update(self, version: int, entries: Iterable[Revoked]) -> bool:
        """Replace the list if ``version`` is newer; True if it changed."""
        fresh = {e.serial: e for e in entries}
        if len(fresh) > MAX_REVOKED:
            raise ValueError(f"a denylist of {len(fresh)} entries is over the limit of {MAX_REVOKED}")
        with self._lock:
            if version <= self.version:
                return False
            self.version, self._entries = version, fresh
            subs = list(self._subs)
        for cb in subs:
            try:
                cb(self)
            except Exception:  # a subscriber's bug must not stop revocation
                pass
        return True

    def prune(self, now: Optional[float] = None) -> int:
        """Drop entries whose certificate expired; how many were dropped."""
        now = time.time() if now is None else now
        with self._lock:
            keep = {s: e for s, e in self._entries.items() if not e.not_after or e.not_after > now}
            dropped = len(self._entries) - len(keep)
            self._entries = keep
        return dropped

    def subscribe(self, callback: Callable[["Denylist"], Any]) -> Callable[[], None]:
        """Call ``callback(denylist)`` after every change; returns an unsubscribe function."""
        self._subs.append(callback)
        return lambda: self._subs.remove(callback) if callback in self._subs else None

    def to_wire(self) -> Dict[str, Any]:
        return {"version": self.version, "revoked": [e.to_wire() for e in self.entries()]}

    @staticmethod
    def parse_wire(d: Any) -> Tuple[int, List[Revoked]]:
        """(version, entries) from the wire form; ``ValueError`` if malformed."""
        if not isinstance(d, dict):
            raise ValueError("expected an object")
        version, items = d.get("version"), d.get("revoked")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative integer")
        if not isinstance(items, list) or len(items) > MAX_REVOKED:
            raise ValueError(f"revoked must be a list of at most {MAX_REVOKED} entries")
        return version, [Revoked.from_wire(e) for e in items]
