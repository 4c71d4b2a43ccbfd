"""swarmlet's load balancer: an HTTP/1.1 reverse proxy for one published port.

Layout (pure core, thin I/O shells):

- ``config.py``   Backend, LBConfig (+ HealthConfig, OutlierConfig), LoadBalancerError
- ``routing.py``  pure: backend choice, rise/fall, ejection, panic, draining
- ``framing.py``  pure: the framing/Host/target rules (RFC 9112), where to cut input
- ``headers.py``  pure: head rewriting (hop-by-hop, X-Forwarded-*, Forwarded), error bodies
- ``metrics.py``  pure: counters, histogram, req/s meter, Prometheus text
- ``health.py``   active checks (HTTP GET or TCP connect)
- ``upstream.py`` backend connections (asyncio Protocol) and their keep-alive pool
- ``downstream.py`` client connections (asyncio Protocol): the proxy's fast path
- ``proxy.py``    LoadBalancer: start/stop/set_backends/snapshot, sweeper, admin port
- ``__main__.py`` ``python -m swarmlet.shipped.lb``: a standalone proxy (bench, debugging)

Importable by agents (ingress mode): Python 3.9, no click/asyncssh. Needs
``httptools``; aiohttp only for the optional admin port.
"""

from .config import (Backend, HealthConfig, LBConfig, LoadBalancerError, OutlierConfig,
                     sticky_key_from)
from .proxy import LoadBalancer, render_metrics

__all__ = ["Backend", "HealthConfig", "LBConfig", "LoadBalancer", "LoadBalancerError",
           "OutlierConfig", "render_metrics", "sticky_key_from"]
