"""Task health: a pure tracker of check results, and the HTTP probe.

Semantics follow Docker's HEALTHCHECK: ``starting`` until the first success;
one success makes a task ``healthy``; ``retries`` consecutive failures make it
``unhealthy``; failures inside ``start_period`` (since the container started)
do not count. ``kind`` decides who checks:

- ``http``: the agent GETs ``path`` on the task's published host port
  (or its container IP when the port is not published); 2xx/3xx is healthy.
- ``cmd``: handed to Docker as the container's HEALTHCHECK (Docker runs it
  inside the container; the agent reads the status, no exec round-trips).
- ``image``: the image's own HEALTHCHECK, read from Docker.
- ``none``: Docker's status if the image happens to have a check, else none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Optional

from swarmlet.shipped.models import Health, HealthCheck

DOCKER_HEALTH = {"starting": Health.STARTING, "healthy": Health.HEALTHY,
                 "unhealthy": Health.UNHEALTHY}


@dataclass
class HealthTracker:
    """Consecutive-result bookkeeping for one container run. Pure: time is passed in."""

    check: HealthCheck
    started_at: float
    status: Health = Health.STARTING
    failures: int = 0

    def observe(self, ok: bool, now: float) -> Health:
        if ok:
            self.failures = 0
            self.status = Health.HEALTHY
        elif now - self.started_at >= self.check.start_period or self.status is Health.HEALTHY:
            self.failures += 1
            if self.failures >= max(1, self.check.retries):
                self.status = Health.UNHEALTHY
        return self.status


def from_docker(status: str) -> Optional[Health]:
    return DOCKER_HEALTH.get(status)


async def http_probe(host: str, port: int, path: str, timeout: float) -> bool:
    """One GET over a fresh connection; True on a 2xx/3xx status line.

    Raw asyncio streams rather than an HTTP client: one tiny request every few
    seconds per task, and no client session to keep alive or leak.
    """
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        req = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: swarmlet-agent\r\n\r\n"
        writer.write(req.encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
