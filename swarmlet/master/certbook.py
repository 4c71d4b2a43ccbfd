"""The master's web certificates: stored in the store's meta, each key sealed by the vault.

Owns every certificate the edge serves: a user's (``tls: {cert, key}``,
``swarmlet run --tls-cert``, ``swarmlet cert add``: *manual*) and those the ACME
manager obtains (one per host name: *acme*). Each is one meta key,
``webcert/<source>/<name>``, holding in clear what anyone may see (the chain,
the names it covers, its validity, fingerprint and issuer) and the private key
sealed by the cluster's vault (``vault.Vault``: AES-256-GCM under the data key,
the associated data binding it to ``webcert/<source>/<name>`` and its version),
so a store copy, a backup or an etcd snapshot holds no usable key, and a
sealed key moved to another name does not open. Stored as null when removed.

A pair is judged before it is stored (``webcerts.check_pair``: a key that is
not the certificate's, a chain that does not parse, an expired certificate,
one that does not cover its service's hosts: ``UsageError``, 400, nothing
stored). ``edge_certs`` opens the keys of the certificates that current
services use, for the nodes (``edgepush.py``, over mutual TLS); ``rows`` is
what ``swarmlet cert ls`` shows (never a key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from ..shipped.exceptions import APIError, ConfigError, ProtocolError, UsageError
from ..shipped.models import EdgeCert, from_wire, to_wire
from ..shipped.validate import CERT_NAME
from ..webcerts import PairInfo, check_pair, covers
from .reconcile import Event
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

PREFIX = "webcert/"
PURPOSE = "webcert"
MANUAL, ACME = "manual", "acme"


@dataclass(frozen=True)
class StoredCert:
    name: str
    source: str                        # manual | acme
    hosts: Tuple[str, ...]             # the DNS names of the certificate
    cert: str                          # PEM chain, leaf first
    key: str                           # sealed by the vault (never a PEM here)
    version: int = 1                   # bumped by every replacement (part of the sealing AAD)
    not_before: float = 0.0
    not_after: float = 0.0
    fingerprint: str = ""
    issuer: str = ""
    stored_at: float = 0.0

    @property
    def meta_key(self) -> str:
        return f"{PREFIX}{self.source}/{self.name}"

    @property
    def edge_name(self) -> str:
        return f"acme:{self.name}" if self.source == ACME else self.name


def meta_key(source: str, name: str) -> str:
    return f"{PREFIX}{source}/{name}"


class CertBook:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self.certs: Dict[Tuple[str, str], StoredCert] = {}

    def load(self, meta: Mapping[str, Any]) -> None:
        self.certs = {}
        for key, value in meta.items():
            if not key.startswith(PREFIX) or value is None:
                continue
            try:
                c = from_wire(StoredCert, value)
            except ProtocolError:
                continue
            self.certs[(c.source, c.name)] = c

    def _vault(self) -> Any:
        vault = self.m.secretbook.vault
        if vault is None:
            raise ConfigError(self.m.secretbook.missing_key
                              or "this master cannot seal keys (no vault key)")
        return vault

    # --- writes ------------------------------------------------------------------------------

    def stage(self, source: str, name: str, cert_pem: str, key_pem: str,
              hosts: Tuple[str, ...] = (), now: Optional[float] = None
              ) -> Tuple[StoredCert, PairInfo]:
        """A pair judged and sealed, ready to be stored (``batch_for``); ``UsageError`` if bad."""
        if source == MANUAL and not CERT_NAME.fullmatch(name or ""):
            raise UsageError(f"expected a certificate name like a service name, got {name!r}")
        now = self.m.clock() if now is None else now
        info = check_pair(cert_pem.encode(), key_pem.encode(), hosts,
                          what=f"certificate {name!r}", now=now)
        old = self.certs.get((source, name))
        version = old.version + 1 if old is not None else 1
        sealed = self._vault().seal(PURPOSE, f"{source}/{name}", version, key_pem.encode())
        return StoredCert(name, source, info.names, cert_pem, sealed, version, info.not_before,
                          info.not_after, info.fingerprint, info.issuer, now), info

    def batch_for(self, c: StoredCert, events: List[Event] = ()) -> Batch:  # type: ignore[assignment]
        return Batch.of(meta={c.meta_key: to_wire(c)}, events=list(events), now=c.stored_at)

    def applied(self, c: StoredCert) -> None:
        self.certs[(c.source, c.name)] = c

    async def put_manual(self, name: str, cert_pem: str, key_pem: str) -> Dict[str, Any]:
        """``PUT /v1/certs/NAME``: store (or replace) a user's certificate."""
        users = self.users(MANUAL, name)
        hosts = tuple(sorted({h for svc in users for h in self.m.services[svc].spec.edge.hosts}))
        c, info = self.stage(MANUAL, name, cert_pem, key_pem, hosts)
        old = self.certs.get((MANUAL, name))
        if old is not None and old.fingerprint == c.fingerprint:
            return self.row(old)            # the same certificate again: nothing to do
        verb = "replaced" if old is not None else "stored"
        event = Event("cert", name, f"certificate {name} {verb}: {', '.join(info.names)}, "
                                    f"expires {_day(info.not_after)}")
        await self.m.write(self.batch_for(c, [event]))
        self.applied(c)
        self.m.edge.changed()
        return self.row(c)

    async def remove(self, name: str) -> None:
        users = self.users(MANUAL, name)
        if users:
            raise APIError(f"certificate {name!r} is used by {', '.join(users)}; change their "
                           f"tls first", status=409)
        if (MANUAL, name) not in self.certs:
            raise APIError(f"no certificate {name!r}", status=404)
        await self.m.write(Batch.of(meta={meta_key(MANUAL, name): None},
                                    events=[Event("cert", name, f"certificate {name} removed")],
                                    now=self.m.clock()))
        del self.certs[(MANUAL, name)]
        self.m.edge.changed()

    def check_refs(self, spec: Any, staged: Mapping[str, StoredCert] = {}) -> None:
        """A ``tls: manual`` spec names a stored (or ``staged``) certificate that covers its
        hosts; ``UsageError`` otherwise (400, nothing stored)."""
        e = spec.edge
        if e.tls != MANUAL:
            return
        c = staged.get(e.cert) or self.certs.get((MANUAL, e.cert))
        if c is None:
            raise UsageError(f"service {spec.name!r}: certificate {e.cert!r} is not stored "
                             f"(swarmlet cert add {e.cert} --cert FILE --key FILE)")
        missing = [h for h in e.hosts if not covers(c.hosts, h)]
        if missing:
            raise UsageError(f"service {spec.name!r}: certificate {e.cert!r} is for "
                             f"{', '.join(c.hosts)}, not for {', '.join(missing)}")

    # --- reads ---------------------------------------------------------------------------------

    def users(self, source: str, name: str) -> List[str]:
        out = []
        for svc in self.m.services.values():
            e = svc.spec.edge
            if source == MANUAL and e.tls == MANUAL and e.cert == name:
                out.append(svc.name)
            elif source == ACME and e.tls == ACME and name in e.hosts:
                out.append(svc.name)
        return sorted(out)

    def acme_hosts(self) -> List[str]:
        return sorted({h for svc in self.m.services.values() if svc.spec.edge.tls == ACME
                       for h in svc.spec.edge.hosts})

    def in_use(self) -> List[StoredCert]:
        """The certificates current services name (manual) or need (acme, per host)."""
        out = []
        for (source, name), c in sorted(self.certs.items()):
            if self.users(source, name):
                out.append(c)
        return out

    def edge_certs(self) -> List[EdgeCert]:
        """What every node's edge serves: the certificates in use, keys opened. An ACME
        certificate serves its host; a manual one every host of the services naming it that
        it covers."""
        vault = self._vault() if self.certs else None
        out = []
        for c in self.in_use():
            key = vault.open(PURPOSE, f"{c.source}/{c.name}", c.version, c.key).decode()
            if c.source == ACME:
                hosts: Tuple[str, ...] = (c.name,)
            else:
                wanted = {h for svc in self.users(MANUAL, c.name)
                          for h in self.m.services[svc].spec.edge.hosts}
                hosts = tuple(sorted(h for h in wanted if covers(c.hosts, h))) or c.hosts
            out.append(EdgeCert(c.edge_name, hosts, c.cert, key, c.not_after, c.fingerprint))
        return out

    def row(self, c: StoredCert, now: Optional[float] = None) -> Dict[str, Any]:
        now = self.m.clock() if now is None else now
        return {"name": c.name, "source": c.source, "hosts": list(c.hosts),
                "not_before": c.not_before, "not_after": c.not_after,
                "days_left": round((c.not_after - now) / 86400, 3), "issuer": c.issuer,
                "fingerprint": c.fingerprint, "version": c.version, "stored_at": c.stored_at,
                "services": self.users(c.source, c.name)}

    def rows(self) -> List[Dict[str, Any]]:
        now = self.m.clock()
        return [self.row(c, now) for _, c in sorted(self.certs.items())]

    def get(self, source: str, name: str) -> Optional[StoredCert]:
        return self.certs.get((source, name))


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


__all__ = ["CertBook", "StoredCert", "MANUAL", "ACME", "meta_key"]
