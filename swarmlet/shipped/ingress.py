"""Ingress: one load balancer per published port, kept in step with the routes.

The master runs one ``Ingress`` (the cluster's front door); every agent runs
another (ingress mode), fed the same routing table inside its assignment, so
any node answers on any published port and traffic keeps flowing while the
master is down. ``apply(routes)`` is idempotent: it starts proxies for new
ports, feeds live backend changes (no restart, no dropped connection), and
drains and stops proxies for ports no longer published.

A backend can leave in two ways. Drained: its task is being stopped on
purpose (scale-down, update, drain) and still runs, so in-flight requests
finish. Dead: its container crashed or its node is gone; in-flight requests
to it would hang (the host's docker-proxy keeps the client side open), so its
connections are cut at once and those requests are retried elsewhere.

A port that cannot be bound (taken by another process) is reported in
``errors`` and retried on the next ``apply``; the other ports go on.

Routes with ``hosts`` are also served by host name and path on the shared edge
ports (``edge.Edge``: 80 and 443, TLS with a certificate per SNI name);
``configure_edge`` and ``set_challenges`` feed it its settings, certificates
and ACME tokens.

Shipped to agents: Python 3.9, no click/asyncssh.
"""

from __future__ import annotations

import logging
import os
from typing import AbstractSet, Dict, Iterable, Optional

from .edge import Edge
from .lb import LoadBalancer, LoadBalancerError
from .routeconfig import backends, lb_config
from .routes import Route, by_port, edge_routes

log = logging.getLogger("swarmlet.shipped.ingress")


class Ingress:
    def __init__(self, bind_host: str = "0.0.0.0", drain_grace: float = 5.0,
                 sticky_key: bytes = b"", limits: Optional[Dict[str, int]] = None,
                 reuse_port: bool = False, edge: Optional[Dict[str, object]] = None) -> None:
        """``edge``: ``Edge``'s keywords (``http_port``, ``https_port``, ``handshake``)."""
        self.bind_host = bind_host
        self.reuse_port = reuse_port     # one of several workers sharing each port
        self.drain_grace = drain_grace
        # one key for every port and node (derived from the cluster secret), so a
        # sticky cookie from any node's ingress is honoured by all of them
        self.sticky_key = sticky_key or os.urandom(32)
        self.limits = dict(limits or {})
        self.proxies: Dict[int, LoadBalancer] = {}
        self.routes: Dict[int, Route] = {}
        self.port_errors: Dict[int, str] = {}
        # the services routed by host name, on the shared edge ports (edge.py)
        self.edge = Edge(bind_host, self.sticky_key, self.limits, reuse_port, drain_grace,
                         **(edge or {}))  # type: ignore[arg-type]

    @property
    def errors(self) -> Dict[int, str]:
        """Port -> why it is not served (it could not be bound), published and edge ports."""
        return {**self.port_errors, **self.edge.errors}

    async def apply(self, routes: Iterable[Route], graceful: AbstractSet[str] = frozenset()) -> None:
        """Make the proxies match ``routes``. A removed backend whose task id is
        not in ``graceful`` is dead: its connections are cut (see above)."""
        routes = list(routes)
        wanted = by_port(routes)
        for port in [p for p in self.proxies if p not in wanted]:
            await self._stop(port)
        for port in [p for p in self.port_errors if p not in wanted]:
            del self.port_errors[port]
        for port, route in wanted.items():
            old = self.routes.get(port)
            lb = self.proxies.get(port)
            if lb is not None and old is not None and (
                    old.lb != route.lb or old.service != route.service
                    or (old.health_path is None) != (route.health_path is None)):
                await self._stop(port)       # options changed: a new proxy with the new config
                lb = None
            if lb is None:
                try:
                    lb = LoadBalancer(self.bind_host, port,
                                      lb_config(route.lb, self.sticky_key,
                                                route.health_path is not None, **self.limits),
                                      name=f"{route.service}:{port}", reuse_port=self.reuse_port)
                    lb.set_backends(backends(route))
                    await lb.start()
                except LoadBalancerError as exc:
                    if self.port_errors.get(port) != str(exc):
                        log.warning("ingress for %s on port %d: %s", route.service, port, exc)
                    self.port_errors[port] = str(exc)
                    continue
                self.port_errors.pop(port, None)
                self.proxies[port] = lb
            elif old is None or old.backends != route.backends or old.health_path != route.health_path:
                lb.set_backends(backends(route))
                if old is not None:
                    for b in set(old.backends) - set(route.backends):
                        if b.task_id not in graceful:
                            lb.cut_backend(b.host, b.port)
            self.routes[port] = route
        await self.edge.apply(edge_routes(routes), graceful)

    async def _stop(self, port: int) -> None:
        lb = self.proxies.pop(port, None)
        self.routes.pop(port, None)
        if lb is not None:
            await lb.stop(grace=self.drain_grace)

    async def close(self) -> None:
        for port in list(self.proxies):
            await self._stop(port)
        await self.edge.close()

    def snapshot(self) -> Dict[str, object]:
        """Published port (as text) -> its LB's snapshot; ``edge/<service>`` -> an edge site's."""
        out: Dict[str, object] = {str(port): {"service": self.routes[port].service, **lb.snapshot()}
                                  for port, lb in self.proxies.items()}
        out.update(self.edge.snapshot())
        return out

    def metrics_text(self) -> str:
        from .lb import render_metrics
        return render_metrics(list(self.proxies.values()) + self.edge.lbs())

    async def configure_edge(self, update: object) -> bool:
        """The edge's settings and certificates (``models.EdgeUpdate``); True: applied."""
        await self.edge.configure(update)  # type: ignore[arg-type]
        return True

    async def set_challenges(self, tokens: Dict[str, str]) -> bool:
        """ACME http-01 tokens to answer from now on; True: they are answered."""
        self.edge.set_challenges(tokens)
        return True

    def edge_status(self) -> Dict[str, object]:
        return self.edge.status()

    def port_of(self, published: int) -> Optional[int]:
        lb = self.proxies.get(published)
        return lb.port if lb is not None else None
