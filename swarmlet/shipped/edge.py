"""The edge: every service routed by host name, served on the shared ports 80 and 443.

``Edge`` is the part of a node's ingress (``ingress.Ingress`` holds one) that
serves the routes with ``hosts``: one *site* (a ``LoadBalancer`` listening on
nothing) per service, the table of hosts and path prefixes that picks a site
(``lb/sites.py``), the two listeners (``lb/edge.py``: plain HTTP on
``http_port``, TLS on ``https_port``), the certificates by SNI name
(``lb/tls.py``) and the ACME http-01 tokens. It is fed three things, each
whole and idempotent, all by the agent (or the master for its own LBs):

- ``apply(routes, graceful)``: the edge routes (as ``Ingress.apply``: new backends at
  once, removed ones drain or are cut when dead, a changed service option makes a
  new site);
- ``configure(update)``: ``models.EdgeUpdate`` (ports, the default service, the
  certificates); a port change rebinds;
- ``set_challenges(tokens)``: the http-01 answers every node must give while an
  order is being validated.

The listeners are bound while at least one route has hosts; a port that cannot
be bound is in ``errors`` and tried again at the next ``apply`` (the worker
retries every 2 s).

Shipped to agents: Python 3.9, no click/asyncssh.
"""

from __future__ import annotations

import logging
from typing import AbstractSet, Any, Dict, Iterable, List, Optional, Tuple

from .lb import LBConfig, LoadBalancer, LoadBalancerError
from .lb.edge import EdgeListener
from .lb.sites import Entry, EdgeTable
from .lb.tls import CertStore
from .models import EdgeCert, EdgeUpdate, Route
from .routeconfig import backends, lb_config

log = logging.getLogger("swarmlet.shipped.edge")


class Edge:
    def __init__(self, bind_host: str = "0.0.0.0", sticky_key: bytes = b"",
                 limits: Optional[Dict[str, int]] = None, reuse_port: bool = False,
                 drain_grace: float = 5.0, http_port: int = 80, https_port: int = 443,
                 handshake: Optional[Dict[str, float]] = None) -> None:
        self.bind_host = bind_host
        self.sticky_key = sticky_key
        self.limits = dict(limits or {})
        self.reuse_port = reuse_port
        self.drain_grace = drain_grace
        self.handshake = dict(handshake or {})
        self.http_port = http_port
        self.https_port = https_port
        self.table = EdgeTable()
        self.table.https_port = https_port
        self.sites: Dict[str, LoadBalancer] = {}
        self.routes: Dict[str, Route] = {}
        self.certs: Optional[CertStore] = None
        self.cert_list: Tuple[EdgeCert, ...] = ()
        self.default_service = ""
        self.http: Optional[EdgeListener] = None
        self.https: Optional[EdgeListener] = None
        self.errors: Dict[int, str] = {}

    # --- feeds ---------------------------------------------------------------------------

    async def apply(self, routes: Iterable[Route], graceful: AbstractSet[str] = frozenset()) -> None:
        wanted: Dict[str, Route] = {}
        for r in routes:
            if r.hosts:
                wanted.setdefault(r.service, r)
        for name in [n for n in self.sites if n not in wanted]:
            await self._stop_site(name)
        for name, route in wanted.items():
            old = self.routes.get(name)
            site = self.sites.get(name)
            if site is not None and old is not None and (
                    old.lb != route.lb or (old.health_path is None) != (route.health_path is None)):
                await self._stop_site(name)
                site = None
            if site is None:
                site = LoadBalancer(self.bind_host, None,
                                    lb_config(route.lb, self.sticky_key,
                                              route.health_path is not None, **self.limits),
                                    name=f"{name}@edge")
                site.set_backends(backends(route))
                await site.start()
                self.sites[name] = site
            elif old is None or old.backends != route.backends or old.health_path != route.health_path:
                site.set_backends(backends(route))
                if old is not None:
                    for b in set(old.backends) - set(route.backends):
                        if b.task_id not in graceful:
                            site.cut_backend(b.host, b.port)
            self.routes[name] = route
        self.table.set_entries({name: (r.hosts, r.path, Entry(name, self.sites[name], r.tls,
                                                               r.redirect, r.hsts))
                                for name, r in self.routes.items()})
        await self._listeners()

    async def configure(self, update: EdgeUpdate) -> None:
        """Ports, default service and certificates (``EdgeUpdate``), all at once."""
        self.cert_list = tuple(update.certs)
        self.default_service = update.default_service
        self.table.set_default(update.default_service)
        if self.certs is not None:
            self.certs.update(self.cert_list, self.default_service)
        if (update.http_port, update.https_port) != (self.http_port, self.https_port):
            self.http_port, self.https_port = update.http_port, update.https_port
            self.table.https_port = update.https_port
            await self._close_listeners()
        await self._listeners()

    def set_challenges(self, tokens: Dict[str, str]) -> None:
        self.table.set_tokens(tokens)

    async def close(self) -> None:
        await self._close_listeners()
        for name in list(self.sites):
            await self._stop_site(name)

    # --- listeners -------------------------------------------------------------------------

    async def _listeners(self) -> None:
        if not self.routes:
            await self._close_listeners()
            return
        if self.http is None:
            self.http = await self._listen(self.http_port, None)
        if self.https is None:
            if self.certs is None:
                self.certs = CertStore()
                self.certs.update(self.cert_list, self.default_service)
            self.https = await self._listen(self.https_port, self.certs)

    async def _listen(self, port: int, certs: Optional[CertStore]) -> Optional[EdgeListener]:
        listener = EdgeListener(self.table, self.bind_host, port, LBConfig(**self.limits),
                                certs=certs, reuse_port=self.reuse_port,
                                handshake=self.handshake if certs is not None else None)
        try:
            await listener.start()
        except LoadBalancerError as exc:
            if self.errors.get(port) != str(exc):
                log.warning("edge port %d: %s", port, exc)
            self.errors[port] = str(exc)
            return None
        self.errors.pop(port, None)
        return listener

    async def _close_listeners(self) -> None:
        for attr in ("http", "https"):
            listener = getattr(self, attr)
            setattr(self, attr, None)
            if listener is not None:
                await listener.stop(grace=self.drain_grace)
        self.errors.clear()

    async def _stop_site(self, name: str) -> None:
        site = self.sites.pop(name, None)
        self.routes.pop(name, None)
        if site is not None:
            await site.stop(grace=self.drain_grace)

    # --- status ------------------------------------------------------------------------------

    def bound(self) -> Dict[str, Optional[int]]:
        """The ports the listeners hold (``http``/``https``), None when not listening."""
        return {"http": self.http.port if self.http else None,
                "https": self.https.port if self.https else None}

    def snapshot(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, site in self.sites.items():
            r = self.routes[name]
            out[f"edge/{name}"] = {"service": name, **site.snapshot(), "hosts": list(r.hosts),
                                   "path": r.path, "tls": r.tls}
        return out

    def status(self) -> Dict[str, Any]:
        """The listeners and certificates (the worker's ``status`` carries it as ``edge``)."""
        return {"listeners": [lst.snapshot() for lst in (self.http, self.https) if lst],
                "certs": self.certs.describe() if self.certs is not None else {},
                "tokens": len(self.table.tokens), "errors": {str(k): v for k, v in self.errors.items()}}

    def lbs(self) -> List[Any]:
        """For ``render_metrics``: the sites and the listeners."""
        return list(self.sites.values()) + [lst for lst in (self.http, self.https) if lst]
