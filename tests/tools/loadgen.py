"""A bounded HTTP load generator that counts every request and its outcome.

Used by e2e/chaos tests and benchmarks to prove "0 failed requests". It only
targets loopback or addresses the caller explicitly allows (the lab's
networks), and every run is bounded in both time and request count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

import aiohttp


@dataclass
class LoadResult:
    served: int = 0
    failed: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)     # first line of 2xx bodies, bounded
    timeline: List[Tuple[float, bool]] = field(default_factory=list)  # (t since start, ok)
    latencies: List[float] = field(default_factory=list)
    duration: float = 0.0

    @property
    def total(self) -> int:
        return self.served + self.failed

    def p(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def summary(self) -> Dict[str, object]:
        return {"served": self.served, "failed": self.failed, "duration_s": round(self.duration, 2),
                "rps": round(self.total / self.duration, 1) if self.duration else 0.0,
                "p50_ms": round(self.p(0.5) * 1000, 1), "p99_ms": round(self.p(0.99) * 1000, 1),
                "statuses": dict(self.statuses), "errors": dict(self.errors)}


def check_target(url: str, allowed: Iterable[str] = ()) -> None:
    """Refuse any target outside loopback and the explicitly allowed networks."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    addr = ipaddress.ip_address(host)
    if addr.is_loopback:
        return
    for net in allowed:
        if addr in ipaddress.ip_network(net, strict=False):
            return
    raise ValueError(f"refusing to send load to {host}: not loopback or an allowed lab network")


async def run_load(url: str, *, concurrency: int = 8, duration: float = 10.0,
                   max_requests: int = 100_000, timeout: float = 5.0,
                   allowed_networks: Iterable[str] = (), stop: Optional[asyncio.Event] = None,
                   ok_statuses: Tuple[int, ...] = (200,)) -> LoadResult:
    """GET ``url`` from ``concurrency`` workers until ``duration`` s, ``max_requests``
    or ``stop`` is set. A request fails on a non-OK status or any error."""
    check_target(url, allowed_networks)
    result = LoadResult()
    start = time.monotonic()
    deadline = start + duration
    budget = [max_requests]
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    tmo = aiohttp.ClientTimeout(total=timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and budget[0] > 0 and not (stop and stop.is_set()):
            budget[0] -= 1
            t0 = time.monotonic()
            ok = False
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    result.statuses[resp.status] += 1
                    ok = resp.status in ok_statuses
                    if ok and len(result.bodies) < 1000:
                        result.bodies[body.split(b"\n", 1)[0].decode(errors="replace")] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                result.errors[type(exc).__name__] += 1
            t1 = time.monotonic()
            result.latencies.append(t1 - t0)
            result.timeline.append((t1 - start, ok))
            if ok:
                result.served += 1
            else:
                result.failed += 1

    async with aiohttp.ClientSession(connector=conn, timeout=tmo) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    result.duration = time.monotonic() - start
    return result
