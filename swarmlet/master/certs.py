"""The master's side of certificates: ship the denylist to every agent, renew agents' certificates.

Revocation. The denylist (``tlsutil.Denylist``) is one live object shared by
the master's API and dashboard TLS contexts and by its agent client, so a
revoked serial is refused by the master from the moment it is in the list.
``revoke(name)`` (called when a node is removed) revokes the node's
certificates through the ``Signer``, reloads the list and pushes it at once
to every known agent (``PUT /v1/revocations``), concurrently. Agents report
the version they hold in every ``GET /v1/tasks`` answer; one that is behind
(it was down, a push was lost) gets the list again on its next poll. The list
is also re-read from the signer every ``revocation_interval``, which picks up
revocations made by the CLI while the master was down or busy.

The list is kept in the store (meta ``denylist``), so HA masters, which hold
no CA key and so no signer, have it too: the CLI revokes with the admin
host's signer and ships the list to them (``PUT /v1/revocations`` on the
master API, ``adopt``); a new leader loads it from the store.

Renewal. Each agent reports its certificate's expiry (``cert_not_after``).
When less than half of the lifetime is left (``pki.needs_renewal``), or more
than the policy allows, the master asks the agent for a CSR, signs it with
the node's name, role ``agent`` and its registered address as the only
identity (never what the CSR asks for), and sends the certificate back. The
private key never leaves the node. A failure is retried after
``renew_retry``. Without a signer (tests), nothing is renewed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, Optional

from .. import pki
from ..client import agent_peer
from ..shipped.exceptions import APIError, ProtocolError, SwarmletError
from ..signer import Signer
from .store import Batch
from ..shipped.tlsutil import Denylist

log = logging.getLogger("swarmlet.master")
LOCAL_INTERVAL = 3600.0   # how often this host's own (90-day) certificates are checked


class CertKeeper:
    def __init__(self, master: Any, signer: Optional[Signer], denylist: Denylist,
                 agent_cert_days: float = pki.LIFETIME_DAYS["agent"], interval: float = 1.0,
                 revocation_interval: float = 5.0, renew_retry: float = 60.0) -> None:
        self.m = master
        self.signer = signer
        self.denylist = denylist
        self.agent_cert_days = agent_cert_days
        self.interval = interval
        self.revocation_interval = revocation_interval
        self.renew_retry = renew_retry
        self.held: Dict[str, int] = {}            # node -> denylist version it reported
        self.not_after: Dict[str, float] = {}     # node -> its certificate's expiry
        self._inflight: Dict[str, "asyncio.Task[Any]"] = {}
        self._retry_at: Dict[str, float] = {}
        self._reloaded = 0.0
        self._local_at = time.monotonic()   # the runner renewed them just before start
        self.counters = {"revocation_pushes": 0, "renewals": 0, "renewal_failures": 0}

    # --- from the poll loop -----------------------------------------------------------

    def observed(self, name: str, answer: Dict[str, Any]) -> None:
        """An agent's ``/v1/tasks`` extras: push what it lacks, renew what is due."""
        held = answer.get("revocations")
        if isinstance(held, int) and not isinstance(held, bool):
            self.held[name] = held
            if held < self.denylist.version:
                self._start(name, "revocations", self._push_one(name))
        na = answer.get("cert_not_after")
        if isinstance(na, (int, float)) and not isinstance(na, bool):
            self.not_after[name] = float(na)

    def forget(self, name: str) -> None:
        for d in (self.held, self.not_after, self._retry_at):
            d.pop(name, None)

    def _start(self, name: str, kind: str, coro: Any) -> None:
        key = f"{kind}:{name}"
        t = self._inflight.get(key)
        if t is not None and not t.done():
            coro.close()
            return
        self._inflight[key] = asyncio.ensure_future(coro)

    # --- revocation -------------------------------------------------------------------

    async def revoke(self, name: str) -> int:
        """Revoke ``name``'s agent certificates and ship the list to every agent now."""
        if self.signer is not None:
            revoked = await asyncio.to_thread(self.signer.revoke, name)
            if revoked:
                log.info("node %s: revoked %d certificate(s)", name, len(revoked))
        await self.reload()
        await self.push_all()
        return self.denylist.version

    async def start(self) -> None:
        """At master start: the list the store holds, then the signer's if newer."""
        stored = self.m.meta.get("denylist")
        if stored:
            try:
                version, entries = Denylist.parse_wire(stored)
                self.denylist.update(version, entries)
            except ValueError as exc:
                log.warning("the stored denylist is unreadable: %s", exc)
        await self.reload()

    async def reload(self) -> bool:
        """Take the signer's denylist if it is newer than ours (and store it)."""
        self._reloaded = time.monotonic()
        if self.signer is None:
            return False
        fresh = await asyncio.to_thread(self.signer.denylist)
        return await self._take(fresh.version, fresh.entries())

    async def adopt(self, wire: Any) -> Dict[str, Any]:
        """A denylist shipped by the admin host's CLI (``PUT /v1/revocations``); pushed on."""
        try:
            version, entries = Denylist.parse_wire(wire)
        except ValueError as exc:
            raise ProtocolError(f"bad denylist: {exc}") from exc
        changed = await self._take(version, entries)
        if changed:
            await self.push_all()
        return {"version": self.denylist.version, "changed": changed}

    async def _take(self, version: int, entries: Any) -> bool:
        if version <= self.denylist.version:
            return False
        fresh = Denylist(version, entries)
        await self.m.write(Batch.of(meta={"denylist": fresh.to_wire()}))
        return self.denylist.update(version, fresh.entries())

    async def push_all(self) -> None:
        names = [n for n in self.m.nodes if self.held.get(n, -1) < self.denylist.version]
        await asyncio.gather(*(self._push_one(n) for n in names), return_exceptions=True)

    async def _push_one(self, name: str) -> None:
        rec = self.m.nodes.get(name)
        if rec is None:
            return
        version = self.denylist.version
        try:
            out = await self.m.client.put_revocations(agent_peer(name, rec.address, rec.api_port),
                                                      self.denylist)
            self.held[name] = max(self.held.get(name, 0), int(out.get("version", version)))
            self.counters["revocation_pushes"] += 1
        except SwarmletError as exc:
            log.debug("denylist push to %s failed: %s", name, exc)   # the next poll retries

    # --- renewal ----------------------------------------------------------------------

    def _due(self, name: str, now: float) -> bool:
        na = self.not_after.get(name)
        return (na is not None and self._retry_at.get(name, 0.0) <= now
                and pki.needs_renewal(na, now, self.agent_cert_days))

    async def _renew(self, name: str) -> None:
        rec = self.m.nodes.get(name)
        if rec is None or self.signer is None:
            return
        peer = agent_peer(name, rec.address, rec.api_port)
        try:
            csr = await self.m.client.call(peer, "POST", "/v1/certificate/request", {})
            if not isinstance(csr, dict) or not isinstance(csr.get("csr"), str):
                raise APIError(f"{peer} sent no certificate request")
            cert = await asyncio.to_thread(self.signer.sign_csr, csr["csr"].encode(), name, "agent",
                                           [rec.address], self.agent_cert_days)
            out = await self.m.client.call(peer, "PUT", "/v1/certificate", {"cert": cert.decode()})
            self.not_after[name] = float(out.get("not_after", 0.0))
            self.counters["renewals"] += 1
            log.info("node %s: certificate renewed (serial %s)", name, out.get("serial"))
        except (SwarmletError, ValueError) as exc:
            self.counters["renewal_failures"] += 1
            self._retry_at[name] = time.time() + self.renew_retry
            log.warning("node %s: certificate renewal failed: %s", name, exc)

    # --- the loop -----------------------------------------------------------------------

    async def _local(self) -> None:
        """This host's master and cli certificates (they live next to the CA key)."""
        self._local_at = time.monotonic()
        renew = getattr(self.m, "local_certs", None)
        if renew is None:
            return
        try:
            renewed = await asyncio.to_thread(renew)
        except SwarmletError as exc:
            log.warning("cannot renew this host's certificates: %s", exc)
            return
        if renewed:
            log.info("renewed this host's %s certificate(s)", " and ".join(renewed))
        if "master" in renewed:
            self.m.client.reload()

    async def run(self) -> None:
        while True:
            try:
                if time.monotonic() - self._local_at >= LOCAL_INTERVAL:
                    await self._local()
                if time.monotonic() - self._reloaded >= self.revocation_interval:
                    if await self.reload():
                        await self.push_all()
                now = time.time()
                for name in list(self.m.nodes):
                    live = self.m.live.get(name)
                    if self._due(name, now) and live is not None and live.reachable:
                        self._start(name, "renew", self._renew(name))
            except Exception:   # never let the certificate loop die
                log.exception("certificate loop failed")
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
