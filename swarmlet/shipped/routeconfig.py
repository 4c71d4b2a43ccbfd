"""A route's load-balancer configuration and backends, for a port's LB and an edge site alike.

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

from .lb import Backend, HealthConfig, LBConfig
from .models import LBOptions
from .routes import Route


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
