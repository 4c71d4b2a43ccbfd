"""The load balancer's vocabulary: backends, its configuration, its error.

``Backend`` is what the master (or an agent in ingress mode) feeds to
``LoadBalancer.set_backends``: one healthy replica, reachable at a node address
and a host port, with the path its active health check GETs (``None`` for a
plain TCP connect check). Its identity is ``(host, port)``: feeding the same
pair again with another ``name`` or ``health_path`` updates it in place.

Defaults follow the references in ARCHITECTURE.md: HAProxy's active checks
(inter 2 s, rise 2, fall 3), Envoy's outlier detection (5 consecutive 5xx,
30 s × number of ejections, capped), nginx's retry rule (idempotent requests,
or nothing sent yet).

Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..exceptions import LoadBalancerError  # noqa: F401 (re-exported by lb)


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    health_path: Optional[str] = "/"   # None: TCP connect check
    name: str = ""                     # e.g. the task id, shown in status/metrics

    @property
    def key(self) -> Tuple[str, int]:
        return (self.host, self.port)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class HealthConfig:
    """Active checks, HAProxy's defaults. ``enabled=False`` trusts the feed."""

    enabled: bool = True
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    # A new backend comes from a task the agent already reported healthy,
    # so it starts up (as HAProxy servers do) rather than waiting rise×interval.
    initial_healthy: bool = True


@dataclass(frozen=True)
class OutlierConfig:
    """Passive checks (Envoy-style outlier detection)."""

    consecutive_5xx: int = 5           # 0 disables 5xx ejection
    base_ejection: float = 30.0        # seconds × number of recent ejections
    max_ejection: float = 300.0
    eject_on_connect_error: bool = True


@dataclass(frozen=True)
class LBConfig:
    policy: str = "round_robin"        # round_robin | least_conn
    sticky_cookie: Optional[str] = None  # cookie name, e.g. "SWARMLET_STICKY"
    connect_timeout: float = 3.0
    response_timeout: float = 60.0     # request sent → response head, and idle gaps in bodies
    client_timeout: float = 60.0       # idle keep-alive client / slow request head
    tunnel_timeout: float = 3600.0     # idle websocket / upgraded connection
    drain_timeout: float = 30.0        # a removed backend's in-flight requests get this long
    max_attempts: int = 3              # tries per request, on distinct backends when possible
    #                                    (a pooled connection closed under one is not counted)
    retry_buffer: int = 64 * 1024      # request body kept to replay a retry
    # An answer to a retryable request is held back from the client until it is
    # complete, up to hold_bytes and hold_time: a backend dying mid-answer (head
    # sent, body cut) is then retried elsewhere instead of truncating the answer.
    # Larger or slower answers are committed (streamed) past either bound.
    hold_bytes: int = 16 * 1024        # 0: never hold (commit at the response head)
    hold_time: float = 0.2
    upstream_idle_timeout: float = 4.0  # below common backend keep-alive timeouts (5 s)
    max_idle_per_backend: int = 128
    # Limits, enforced as bytes arrive (nginx: large_client_header_buffers 4 8k;
    # HAProxy: tune.bufsize 16k). Over them: 414 (request target), 431 (head).
    max_head_size: int = 16 * 1024     # request line + headers, CRLFs included
    max_uri_size: int = 8 * 1024       # the request target
    max_headers: int = 100             # header lines per request (HAProxy: 101)
    max_response_head_size: int = 32 * 1024   # a backend's head; over it: 502
    max_connections: int = 4096        # open client connections; more get 503 and close
    max_pipeline: int = 16             # parsed requests queued per connection
    # Sticky cookie values are HMAC(sticky_key, backend address), so a cookie
    # names a backend without revealing it. Empty: a random key per process.
    # The master and agents pass one derived from the cluster's gossip key
    # (``sticky_key_from``), so every node's ingress honours every cookie.
    sticky_key: bytes = b""
    forwarded_proto: str = "http"      # X-Forwarded-Proto / Forwarded proto=
    panic_threshold: float = 0.0       # route to all when eligible share <= this (0: only when none)
    health: HealthConfig = field(default_factory=HealthConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)

    def __post_init__(self) -> None:
        if self.policy not in ("round_robin", "least_conn"):
            raise LoadBalancerError(f"unknown balancing policy {self.policy!r}",
                                    hint="use round_robin or least_conn")
        if self.max_attempts < 1:
            raise LoadBalancerError("max_attempts must be at least 1")
        if not 0 < self.max_uri_size <= self.max_head_size:
            raise LoadBalancerError("max_uri_size must be positive and at most max_head_size")
        for name in ("max_headers", "max_response_head_size", "max_connections", "max_pipeline"):
            if getattr(self, name) < 1:
                raise LoadBalancerError(f"{name} must be at least 1")


def sticky_key_from(secret: bytes) -> bytes:
    """The sticky-cookie key derived from a cluster secret (the gossip key): one
    HMAC with a label of its own, so the cookie key reveals nothing of the secret."""
    return hmac.new(secret, b"swarmlet lb sticky cookie v1", hashlib.sha256).digest()
