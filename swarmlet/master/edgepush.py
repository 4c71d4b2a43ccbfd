"""The edge channel down to every node: settings and certificates, and the ACME tokens.

``EdgePusher`` owns the cluster's ``EdgeSettings`` (meta ``edge_config``,
``edgeconfig.py``) and the ``EdgeUpdate`` every node's edge (and the master's
own) is fed: the ports, the default service and the certificates in use with
their keys, opened from the vault (``certbook.py``) only to be sent over mutual
TLS (``PUT /v1/edge``, to each node's own certificate, ``client.py``).

- ``changed()`` is cheap and called after every reconcile pass and every
  certificate or settings write: it compares a key made of the settings and the
  fingerprints in use, and only when that moved does it open the keys, bump the
  version (``epoch`` = this master run, ``term`` = the HA leader's) and push;
- a node that reports another edge version in its poll (``observed``) is sent
  the update again (it was down, or restarted without its state). A node that
  answers 404 (an agent from before the edge channel, which reports no ``edge``
  in its poll) is not sent it again until a poll of it reports one (upgraded):
  it was sent the update after every poll answer, so such a node was never
  quiet (bench/scale: 1,000 nodes whose agents had no edge channel);
- ``challenges(tokens)``: ``PUT /v1/challenges`` to every node that is up and to
  the master's own ingress, in parallel, each bounded by ``challenge_timeout``;
  returns which answered (their ingress workers all serve the tokens) and which
  did not. The ACME manager triggers the CA only after this returns, so whichever
  node the CA connects to already answers; a node that is down is not waited for.
- The master's own LBs may listen elsewhere than the nodes (``edge_ports`` of
  ``MasterConfig``: a laptop cannot always bind 80/443).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from ..client import agent_peer
from ..shipped.exceptions import APIError, ConfigError, SwarmletError
from ..shipped.models import ChallengesUpdate, EdgeUpdate, to_wire
from .edgeconfig import META_KEY, EdgeSettings, from_meta, patched, to_meta
from .nodestatus import LOST
from .reconcile import Event
from .store import Batch

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master.edge")


class EdgePusher:
    def __init__(self, m: "Master", challenge_timeout: float = 5.0) -> None:
        self.m = m
        self.settings = EdgeSettings()
        self.challenge_timeout = challenge_timeout
        self.version = 0
        self.update: Optional[EdgeUpdate] = None
        self._key: Any = None
        self._acked: Dict[str, int] = {}
        self._pushing: Set[str] = set()
        self._again: Set[str] = set()
        self._absent: Set[str] = set()        # answered 404: no edge channel (an older agent)
        self._tokens_version = 0
        self.error = ""                       # why the update could not be built (no vault key)

    @property
    def epoch(self) -> int:
        return self.m.pusher.epoch

    def load(self, meta: Dict[str, Any]) -> None:
        self.settings = from_meta(meta.get(META_KEY))

    async def set_settings(self, changes: Dict[str, Any]) -> Dict[str, Any]:
        """``PATCH /v1/edge``: validated (``UsageError``), stored, pushed; the ACME manager
        looks again (a directory may have been set)."""
        new = patched(self.settings, changes)
        if new != self.settings:
            await self.m.write(Batch.of(meta={META_KEY: to_meta(new)}, events=[
                Event("edge", "settings", "edge settings changed: " + ", ".join(sorted(changes)))],
                now=self.m.clock()))
            self.settings = new
            self.changed()
            self.m.acme.kick()
        return self.settings.view()

    # --- the update --------------------------------------------------------------------------

    def _content_key(self) -> Any:
        book = self.m.certbook
        return (self.settings, tuple((c.edge_name, c.fingerprint, c.version) for c in book.in_use()),
                tuple(sorted((s.name, s.spec.edge.hosts) for s in self.m.services.values()
                             if s.spec.edge.tls == "manual")))

    def changed(self) -> None:
        """Rebuild and push the update if what it holds changed (cheap otherwise)."""
        key = self._content_key()
        if key == self._key and self.update is not None:
            return
        try:
            certs = tuple(self.m.certbook.edge_certs())
            self.error = ""
        except (ConfigError, SwarmletError) as exc:    # no vault key: serve no certificate
            certs = ()
            if self.error != str(exc):
                log.warning("edge certificates not sent: %s", exc)
            self.error = str(exc)
        self._key = key
        self.version += 1
        s = self.settings
        self.update = EdgeUpdate(self.version, self.epoch, self.m.term, s.http_port, s.https_port,
                                 s.default_service, certs)
        self.m.spawn(self.configure_own())
        for name in list(self.m.nodes):
            if self._up(name) and name not in self._absent:
                self.push(name)

    def own_update(self) -> Optional[EdgeUpdate]:
        u = self.update
        ports = self.m.cfg.edge_ports
        if u is not None and ports is not None:
            u = replace(u, http_port=ports[0], https_port=ports[1])
        return u

    async def configure_own(self) -> None:
        ingress = self.m.ingress
        u = self.own_update()
        if ingress is not None and u is not None and hasattr(ingress, "configure_edge"):
            try:
                await ingress.configure_edge(u)
            except Exception:  # the master's front door must keep serving what it has
                log.exception("edge update of the master's ingress failed")

    def _up(self, name: str) -> bool:
        live = self.m.live.get(name)
        return live is not None and live.status not in LOST

    def observed(self, name: str, reported: Any) -> None:
        """The poller reached ``name``; ``reported``: its ``edge`` {version, epoch}."""
        if self.update is None:
            return
        if not isinstance(reported, dict):
            if name in self._absent:
                return      # no edge channel there: the poll of an upgraded agent reports one
        else:
            self._absent.discard(name)
        held = (reported or {}) if isinstance(reported, dict) else {}
        if (held.get("version"), held.get("epoch")) != (self.update.version, self.update.epoch):
            if self._acked.get(name) != self.update.version or held.get("epoch") != self.epoch:
                self.push(name)

    def forget(self, name: str) -> None:
        self._acked.pop(name, None)
        self._absent.discard(name)

    def push(self, name: str) -> None:
        if name in self._pushing:
            self._again.add(name)
            return
        self._pushing.add(name)
        self.m.spawn(self._push_task(name))

    async def _push_task(self, name: str) -> None:
        m = self.m
        try:
            for _ in range(3):
                self._again.discard(name)
                rec, u = m.nodes.get(name), self.update
                if rec is None or u is None or not m.leading():
                    return
                try:
                    await m.client.call(agent_peer(name, rec.address, rec.api_port), "PUT",
                                        "/v1/edge", to_wire(u), timeout=10.0)
                    self._acked[name] = u.version
                except APIError as exc:
                    self._acked.pop(name, None)
                    if exc.status == 404:
                        log.info("node %s has no edge channel (an older agent): not sent again "
                                 "until it reports one", name)
                        self._absent.add(name)
                    else:
                        log.debug("edge update to %s failed: %s", name, exc)
                    return
                except SwarmletError as exc:
                    self._acked.pop(name, None)
                    log.debug("edge update to %s failed: %s", name, exc)
                    return      # the poller pushes again once the node answers
                if name not in self._again and self._acked.get(name) == self.update.version:
                    return
        finally:
            self._pushing.discard(name)

    # --- ACME tokens ---------------------------------------------------------------------------

    async def challenges(self, tokens: Dict[str, str]) -> Tuple[List[str], List[str]]:
        """Every up node's ingress (and the master's) answers ``tokens`` (an empty mapping
        withdraws them): (those that said so, those that did not)."""
        m = self.m
        self._tokens_version += 1
        u = ChallengesUpdate(self._tokens_version, self.epoch, m.term, dict(tokens))

        async def one(name: str) -> bool:
            rec = m.nodes.get(name)
            if rec is None:
                return False
            try:
                await asyncio.wait_for(m.client.call(
                    agent_peer(name, rec.address, rec.api_port), "PUT", "/v1/challenges",
                    to_wire(u), timeout=self.challenge_timeout), self.challenge_timeout + 1)
                return True
            except (SwarmletError, asyncio.TimeoutError) as exc:
                log.info("ACME tokens to %s: %s", name, exc)
                return False

        async def own() -> bool:
            ingress = m.ingress
            if ingress is None or not hasattr(ingress, "set_challenges"):
                return True
            return bool(await ingress.set_challenges(dict(tokens)))

        names = [n for n in sorted(m.nodes) if self._up(n)]
        results = await asyncio.gather(own(), *(one(n) for n in names))
        answered = (["(master)"] if results[0] and m.ingress is not None else [])
        answered += [n for n, ok in zip(names, results[1:]) if ok]
        missing = ([] if results[0] else ["(master)"]) + [n for n, ok in zip(names, results[1:])
                                                          if not ok]
        return answered, missing
