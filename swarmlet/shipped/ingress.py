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

Shipped to agents: Python 3.9, no click/asyncssh.
"""

from __future__ import annotations

import logging
import os
from typing import AbstractSet, Dict, Iterable, Optional

from .lb import Backend, HealthConfig, LBConfig, LoadBalancer, LoadBalancerError
from .models import LBOptions
from .routes import Route, by_port

log = logging.getLogger("swarmlet.shipped.ingress")


def lb_config(opts: LBOptions, sticky_key: bytes = b"", checked: bool = False,
              **limits: int) -> LBConfig:
    """``limits``: LBConfig's limits (``max_connections``...) set by the node's config.

    ``checked``: the service has an HTTP health check. Then the replica's own agent runs it
    (it decides restarts and rollouts on it), and the routes hold only replicas it found
    healthy; every load balancer trusts that feed instead of probing each replica itself
    (one check per replica, not one per node and master), and keeps its passive checks
    (connect errors, resets, 5xx) for what happens between two reports. Without an HTTP
    check there is nothing to trust, so the load balancers keep their TCP connect checks."""
    health = HealthConfig(enabled=False) if checked else HealthConfig()
    return LBConfig(policy="least_conn" if opts.algorithm == "least_conn" else "round_robin",
                    sticky_cookie="SWARMLET_STICKY" if opts.sticky else None,
                    connect_timeout=opts.connect_timeout, response_timeout=opts.timeout,
                    sticky_key=sticky_key, health=health, **limits)


def backends(route: Route) -> list:
    return [Backend(b.host, b.port, route.health_path, name=b.task_id) for b in route.backends]


class Ingress:
    def __init__(self, bind_host: str = "0.0.0.0", drain_grace: float = 5.0,
                 sticky_key: bytes = b"", limits: Optional[Dict[str, int]] = None,
                 reuse_port: bool = False) -> None:
        self.bind_host = bind_host
        self.reuse_port = reuse_port     # one of several workers sharing each port
        self.drain_grace = drain_grace
        # one key for every port and node (derived from the cluster secret), so a
        # sticky cookie from any node's ingress is honoured by all of them
        self.sticky_key = sticky_key or os.urandom(32)
        self.limits = dict(limits or {})
        self.proxies: Dict[int, LoadBalancer] = {}
        self.routes: Dict[int, Route] = {}
        self.errors: Dict[int, str] = {}

    async def apply(self, routes: Iterable[Route], graceful: AbstractSet[str] = frozenset()) -> None:
        """Make the proxies match ``routes``. A removed backend whose task id is
        not in ``graceful`` is dead: its connections are cut (see above)."""
        wanted = by_port(routes)
        for port in [p for p in self.proxies if p not in wanted]:
            await self._stop(port)
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
                    if self.errors.get(port) != str(exc):
                        log.warning("ingress for %s on port %d: %s", route.service, port, exc)
                    self.errors[port] = str(exc)
                    continue
                self.errors.pop(port, None)
                self.proxies[port] = lb
            elif old is None or old.backends != route.backends or old.health_path != route.health_path:
                lb.set_backends(backends(route))
                if old is not None:
                    for b in set(old.backends) - set(route.backends):
                        if b.task_id not in graceful:
                            lb.cut_backend(b.host, b.port)
            self.routes[port] = route

    async def _stop(self, port: int) -> None:
        lb = self.proxies.pop(port, None)
        self.routes.pop(port, None)
        if lb is not None:
            await lb.stop(grace=self.drain_grace)

    async def close(self) -> None:
        for port in list(self.proxies):
            await self._stop(port)

    def snapshot(self) -> Dict[str, object]:
        return {str(port): {"service": self.routes[port].service, **lb.snapshot()}
                for port, lb in self.proxies.items()}

    def metrics_text(self) -> str:
        from .lb import render_metrics
        return render_metrics(self.proxies.values())

    def port_of(self, published: int) -> Optional[int]:
        lb = self.proxies.get(published)
        return lb.port if lb is not None else None
