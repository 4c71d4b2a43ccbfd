"""Who signs the cluster's certificates, and the ledger of what was issued and revoked (admin side).

``Signer`` is the small interface the rest of swarmlet signs through: join
(a node's first certificate), the master (renewals, from a node's CSR), and
``leave``/``node rm`` (revocation). ``LocalSigner`` is the one implementation:
the CA key in the cluster home (``ca.key``, 0600) and a ledger beside it,
``ca.index.json`` (0600), like OpenSSL's ``index.txt``: every certificate
issued (serial, name, role, expiry) and when it was revoked. The denylist
agents and the master refuse is read from that ledger. Moving the signer (an
intermediate CA on HA masters, or signing only on the admin host) means
another ``Signer``, nothing else.

The CLI and the master process share the ledger on the admin host, so every
read-modify-write holds an exclusive ``flock`` on ``ca.index.lock``. Entries
whose certificate expired a day ago are dropped from the ledger on write.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence

from . import home as homedir
from . import pki
from .shipped.exceptions import ConfigError
from .shipped.tlsutil import Denylist, Revoked

INDEX = "ca.index.json"
_KEEP_EXPIRED = 86400.0


class Signer(Protocol):
    def issue(self, name: str, role: str, sans: Sequence[str] = (),
              days: Optional[float] = None) -> pki.KeyPair: ...

    def sign_csr(self, csr_pem: bytes, name: str, role: str, sans: Sequence[str] = (),
                 days: Optional[float] = None) -> bytes: ...

    def revoke(self, name: str, role: str = "agent") -> List[Revoked]: ...

    def denylist(self) -> Denylist: ...


class LocalSigner:
    """The CA key and its ledger in a cluster home (see the module docstring)."""

    def __init__(self, home: Path, clock: Any = time.time) -> None:
        self.home = Path(home)
        self.clock = clock

    # --- files ------------------------------------------------------------------------

    def _ca(self) -> pki.KeyPair:
        try:
            return pki.KeyPair((self.home / "ca.key").read_bytes(), (self.home / "ca.crt").read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(f"no CA key in {self.home}: this host cannot sign certificates",
                              hint="run this on the admin host that ran 'swarmlet init'") from exc

    @contextmanager
    def _ledger(self, write: bool) -> Iterator[Dict[str, Any]]:
        lock = self.home / "ca.index.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                data = json.loads((self.home / INDEX).read_text())
            except FileNotFoundError:
                data = {}
            except ValueError as exc:
                raise ConfigError(f"{self.home / INDEX} is not valid JSON: {exc}") from exc
            data.setdefault("version", 0)
            data.setdefault("issued", [])
            yield data
            if write:
                now = self.clock()
                data["issued"] = [e for e in data["issued"]
                                  if float(e.get("not_after", 0)) > now - _KEEP_EXPIRED]
                homedir.write_atomic(self.home / INDEX, json.dumps(data, indent=1).encode(), 0o600)
        finally:
            os.close(fd)   # releases the lock

    def _record(self, cert_pem: bytes) -> None:
        info = pki.cert_info(cert_pem)
        with self._ledger(write=True) as data:
            data["issued"].append({"serial": f"{info.serial:X}", "name": info.name, "role": info.role,
                                   "not_after": info.not_after, "issued_at": self.clock()})

    # --- Signer ---------------------------------------------------------------------------

    def issue(self, name: str, role: str, sans: Sequence[str] = (),
              days: Optional[float] = None) -> pki.KeyPair:
        kp = pki.issue(self._ca(), name, role, sans, pki.LIFETIME_DAYS[role] if days is None else days)
        self._record(kp.cert_pem)
        return kp

    def sign_csr(self, csr_pem: bytes, name: str, role: str, sans: Sequence[str] = (),
                 days: Optional[float] = None) -> bytes:
        cert = pki.sign_csr(self._ca(), csr_pem, name, role, sans,
                            pki.LIFETIME_DAYS[role] if days is None else days)
        self._record(cert)
        return cert

    def revoke(self, name: str, role: str = "agent") -> List[Revoked]:
        """Revoke every unexpired certificate of ``role`` named ``name``; those newly revoked."""
        now = self.clock()
        out: List[Revoked] = []
        with self._ledger(write=True) as data:
            for e in data["issued"]:
                if (e.get("name") == name and e.get("role") == role and not e.get("revoked_at")
                        and float(e.get("not_after", 0)) > now):
                    e["revoked_at"] = now
                    out.append(Revoked(int(e["serial"], 16), name, role, float(e["not_after"])))
            if out:
                data["version"] = int(data["version"]) + 1
        return out

    def denylist(self) -> Denylist:
        """Every revoked certificate that has not expired yet, with the ledger's version."""
        now = self.clock()
        with self._ledger(write=False) as data:
            entries = [Revoked(int(e["serial"], 16), str(e.get("name", "")), str(e.get("role", "")),
                               float(e.get("not_after", 0)))
                       for e in data["issued"]
                       if e.get("revoked_at") and float(e.get("not_after", 0)) > now]
            return Denylist(int(data["version"]), entries)
