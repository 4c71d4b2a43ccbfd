"""The ACME manager: certificates for every ``tls: acme`` host, asked of the CA by one master.

Runs inside the ``Master`` (``run``), so under HA only the leader asks the CA
(followers run no ``Master``), and every write it makes is fenced by the
leader's term. One order at a time, per host name (a host whose validation
fails cannot hold back another's certificate):

1. ``acmeplan.due`` says which hosts need a certificate now (none yet: issuance
   on first deploy; renewal from 30 days before the end; failures wait with
   backoff and the CA's ``Retry-After``);
2. the cluster's account: one per cluster and directory, its key made once and
   sealed by the vault in the store's meta ``acme_account``;
3. in a thread (``acmeclient``): a new key and CSR for the host, a new order,
   its http-01 challenge;
4. on the loop: the token to every node's ingress and the master's
   (``edgepush.challenges``), waiting until each that is up answers it; only
   then, in a thread, the CA is told to validate — so whichever node it
   connects to answers; the order is finalized and the chain fetched;
5. the certificate and its sealed key are stored with an event (``issued`` or
   ``renewed``) in one commit, the failure state cleared, and the edge update
   goes to every node; the tokens are withdrawn whatever happened.

A failure becomes the host's state (meta ``acme/<host>``: failures in a row,
the next attempt, the CA's reason) and one keyed event, ``failed ... (N times
in a row): <what the CA said>; next attempt in ...``; plain HTTP, the other
hosts and the certificate already served (if any) are untouched. Nothing is
asked while no directory is set (``swarmlet edge config --acme-directory``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from ..shipped.exceptions import ConfigError, SwarmletError, UsageError
from . import acmeplan
from .certbook import ACME
from .reconcile import Event
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master.acme")
ACCOUNT_KEY = "acme_account"
STATE_PREFIX = "acme/"
PURPOSE = "acme-account"


class AcmeManager:
    def __init__(self, m: "Master", backoff: acmeplan.Backoff = acmeplan.Backoff(),
                 interval: float = 60.0, order_timeout: float = 90.0) -> None:
        self.m = m
        self.backoff = backoff
        self.interval = interval
        self.order_timeout = order_timeout
        self.states: Dict[str, acmeplan.HostState] = {}
        self.working: Optional[str] = None        # the host being ordered now
        self.orders = {"issued": 0, "renewed": 0, "failed": 0}
        self.forced: set = set()                  # hosts to renew now (``cert renew``)
        self._wake = asyncio.Event()
        self._session: Any = None
        self._session_for: Tuple[str, str] = ("", "")

    def load(self, meta: Dict[str, Any]) -> None:
        self.states = {k[len(STATE_PREFIX):]: acmeplan.from_meta(v) for k, v in meta.items()
                       if k.startswith(STATE_PREFIX) and v is not None}

    def force(self, host: str) -> None:
        """Renew ``host``'s certificate now, whatever its expiry or backoff (``cert renew``)."""
        from ..shipped.exceptions import APIError
        if host not in self.m.certbook.acme_hosts():
            raise APIError(f"no service has tls: acme for {host!r}", status=404)
        self.forced.add(host)
        self.states.pop(host, None)
        self.kick()

    def kick(self) -> None:
        self._wake.set()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # --- the loop ------------------------------------------------------------------------------

    def _certs(self) -> Dict[str, Tuple[float, float]]:
        return {name: (c.not_before, c.not_after) for (src, name), c in self.m.certbook.certs.items()
                if src == ACME}

    async def run(self) -> None:
        while True:
            now = self.m.clock()
            hosts = self.m.certbook.acme_hosts()
            wake = acmeplan.next_wake(hosts, self._certs(), self.states, now,
                                      self.m.edge.settings.renew_before_days)
            wait = min(self.interval, max(0.0, wake - now))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end certificate renewal
                log.exception("ACME pass failed")
                await asyncio.sleep(1.0)

    async def pass_once(self) -> int:
        """Order what is due now (one at a time); how many orders were tried."""
        m = self.m
        if not m.leading():
            return 0
        hosts = m.certbook.acme_hosts()
        todo = acmeplan.due(hosts, self._certs(), self.states, m.clock(),
                            m.edge.settings.renew_before_days)
        todo += [(h, "renew") for h in sorted(self.forced) if h in hosts
                 and h not in {t[0] for t in todo}]
        self.forced.clear()
        for host, kind in todo:
            if not m.leading() or host not in m.certbook.acme_hosts():
                break
            await self.obtain(host, kind)
        return len(todo)

    # --- one order -------------------------------------------------------------------------------

    async def obtain(self, host: str, kind: str) -> bool:
        from .acmeclient import AcmeFailure    # the acme library: only where ACME is used
        m = self.m
        s = m.edge.settings
        if not s.acme_directory:
            await self._failed(host, AcmeFailure(
                "no ACME directory is set (swarmlet edge config --acme-directory URL)"),
                asked=False)
            return False
        self.working = host
        sent = False
        try:
            session = await self._account()
            pending = await asyncio.to_thread(session.begin, host)
            if pending.tokens:
                sent = True
                answered, missing = await m.edge.challenges(dict(pending.tokens))
                if not answered:
                    raise AcmeFailure("no ingress took the challenge token (every node and "
                                      "the master's edge failed to answer)")
                if missing:
                    log.info("ACME %s: %s did not take the token (down?); %s answer it", host,
                             ", ".join(missing), ", ".join(answered))
            chain = await asyncio.to_thread(session.finish, pending, self.order_timeout)
            await self._stored(host, kind, chain, pending.key_pem.decode())
            return True
        except AcmeFailure as exc:
            await self._failed(host, exc)
            return False
        except (ConfigError, UsageError) as exc:   # no vault key; the CA sent a bad pair
            await self._failed(host, AcmeFailure(str(exc)))
            return False
        finally:
            self.working = None
            if sent:
                try:
                    await m.edge.challenges({})
                except Exception:  # withdrawing tokens is best effort; the next order replaces them
                    log.exception("withdrawing ACME tokens failed")

    async def _account(self) -> Any:
        """The session with the cluster's account for the current directory (made and sealed
        on first use; registered with the CA at the first order)."""
        from .acmeclient import AcmeSession, new_account_key_pem
        m = self.m
        s = m.edge.settings
        vault = m.certbook._vault()
        held = m.meta.get(ACCOUNT_KEY) or {}
        if not held.get("key"):
            key_pem = await asyncio.to_thread(new_account_key_pem)
            held = {"key": vault.seal(PURPOSE, "account", 1, key_pem), "uri": "",
                    "directory": s.acme_directory, "created_at": m.clock()}
            await m.write(Batch.of(meta={ACCOUNT_KEY: held}, events=[
                Event("cert", "acme", "ACME account key made for the cluster")], now=m.clock()))
        key_pem = vault.open(PURPOSE, "account", 1, held["key"])
        uri = held.get("uri", "") if held.get("directory") == s.acme_directory else ""
        want = (s.acme_directory, s.acme_ca_bundle + s.acme_email)
        if self._session is None or self._session_for != want:
            self.close()
            self._session = AcmeSession(s.acme_directory, key_pem, uri, s.acme_ca_bundle,
                                        s.acme_email)
            self._session_for = want
        session = self._session
        if not session.account_uri:
            uri = await asyncio.to_thread(session.ensure_account)
            await m.write(Batch.of(meta={ACCOUNT_KEY: {**held, "uri": uri,
                                                       "directory": s.acme_directory}},
                                   events=[Event("cert", "acme", f"ACME account registered at "
                                                                 f"{s.acme_directory}")],
                                   now=m.clock()))
        return session

    async def _stored(self, host: str, kind: str, chain: str, key_pem: str) -> None:
        m = self.m
        book = m.certbook
        c, info = book.stage(ACME, host, chain, key_pem, (host,))
        verb = "renewed" if kind == "renew" and book.get(ACME, host) is not None else "issued"
        ev = Event("cert", host, f"certificate {verb} for {host} by {info.issuer}, valid until "
                                 f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(info.not_after))}")
        batch = book.batch_for(c, [ev])
        batch.meta[STATE_PREFIX + host] = None
        await m.write(batch)
        book.applied(c)
        self.states.pop(host, None)
        self.orders[verb] += 1
        log.info("%s", ev.message)
        m.obs.touch()
        m.edge.changed()

    async def _failed(self, host: str, exc: Any, asked: bool = True) -> None:
        m = self.m
        now = m.clock()
        st = acmeplan.after_failure(self.states.get(host, acmeplan.HostState()), now, exc.reason,
                                    self.backoff, exc.retry_after, exc.rate_limited)
        self.states[host] = st
        if asked:
            self.orders["failed"] += 1
        wait = st.next_attempt - now
        times = f" ({st.failures} times in a row)" if st.failures > 1 else ""
        ev = Event("cert", host, f"certificate for {host} failed{times}: {exc.reason}; next "
                                 f"attempt in {_human(wait)}", key=f"acme-failed:{host}")
        try:
            await m.write(Batch.of(meta={STATE_PREFIX + host: acmeplan.to_meta(st)}, events=[ev],
                                   now=now))
        except SwarmletError as werr:   # a deposed leader: the next one will try again
            log.warning("ACME state for %s not stored: %s", host, werr)
        log.warning("%s", ev.message)
        m.obs.touch()

    # --- views -----------------------------------------------------------------------------------

    def host_rows(self) -> Dict[str, Dict[str, Any]]:
        """Per ACME host: its order state, for ``cert ls``."""
        now = self.m.clock()
        out = {}
        for host in self.m.certbook.acme_hosts():
            st = self.states.get(host, acmeplan.HostState())
            have = self.m.certbook.get(ACME, host)
            if self.working == host:
                status = "ordering"
            elif st.failures:
                status = "failed"
            elif have is None:
                status = "pending"
            elif have.not_after <= now:
                status = "expired"
            else:
                status = "valid"
            out[host] = {"status": status, "failures": st.failures,
                         "last_error": st.last_error,
                         "next_attempt": st.next_attempt if st.failures else None}
        return out


def _human(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


__all__ = ["AcmeManager"]
