"""Replicas behind Docker's userland proxy (``docker-proxy``), killed under load.

This is how the master's load balancer reaches replicas: a published host
port on 127.0.0.1 is served by ``docker-proxy``, which outlives the container
for a moment. Here each replica is a real backend process behind a real
``docker-proxy`` (the binary dockerd runs, started the same way, on
loopback), so no container is needed and the kill is exact. What the proxy
does when its backend dies, and the load balancer must survive:

- connections it carried get a clean EOF (or a reset), even mid-answer;
- a new connection is *accepted*, then closed without a byte once the dial to
  the dead backend fails: that must count as "nothing received" and fail
  over, never as a request in flight waiting for its answer.

Skipped where there is no ``docker-proxy`` binary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

import aiohttp
import pytest

from tests.integration.lb.lb_support import free_port, wait_until
from swarmlet.shipped.lb import Backend, HealthConfig, LBConfig, OutlierConfig

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("lb_backend_proc.py")


def _docker_proxy() -> Optional[str]:
    for p in (shutil.which("docker-proxy"), "/usr/sbin/docker-proxy",
              "/usr/libexec/docker/docker-proxy", "/usr/bin/docker-proxy"):
        if p and os.access(p, os.X_OK):
            return p
    return None


PROXY = _docker_proxy()


@pytest.fixture
def require_proxy():
    """docker.io ships docker-proxy (scripts/bootstrap.sh): a missing one fails, never skips."""
    assert PROXY is not None, "no docker-proxy binary (apt-get install -y docker.io)"


needs_proxy = pytest.mark.usefixtures("require_proxy")


class Replica:
    """A backend process and a docker-proxy in front of it, both on 127.0.0.1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend_proc = subprocess.Popen([sys.executable, str(SCRIPT), name],
                                             stdout=subprocess.PIPE)
        self.backend_port = int(self.backend_proc.stdout.readline())
        self.port = free_port()
        # dockerd hands docker-proxy a pipe as fd 3 to hear "0" once it listens
        self.proxy = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3>&1', PROXY, "-proto", "tcp",
             "-host-ip", "127.0.0.1", "-host-port", str(self.port),
             "-container-ip", "127.0.0.1", "-container-port", str(self.backend_port)],
            stdout=subprocess.PIPE)
        ready = self.proxy.stdout.readline()
        assert ready.strip() == b"0", ready

    @property
    def backend(self) -> Backend:
        return Backend("127.0.0.1", self.port, "/", name=self.name)

    def kill_backend(self) -> None:
        """The container dies; its docker-proxy lives on until Docker cleans up."""
        self.backend_proc.send_signal(signal.SIGKILL)
        self.backend_proc.wait()

    def close(self) -> None:
        for p in (self.proxy, self.backend_proc):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture
def replicas():
    made: List[Replica] = []

    def make(n: int) -> List[Replica]:
        out = [Replica(f"r{len(made) + i}") for i in range(n)]
        made.extend(out)
        return out

    yield make
    for r in made:
        r.close()


def url(lb, path="/"):
    return f"http://127.0.0.1:{lb.port}{path}"


@needs_proxy
async def test_replica_killed_behind_docker_proxy_fails_no_request(replicas, make_lb):
    reps = replicas(3)
    cfg = LBConfig(health=HealthConfig(interval=0.5, timeout=0.5))
    lb = await make_lb(cfg, [r.backend for r in reps])
    results: Counter = Counter()
    slowest = [0.0]
    stop = asyncio.Event()

    async def worker(s):
        for _ in range(3000):                        # bounded
            if stop.is_set():
                return
            t0 = time.monotonic()
            try:
                async with s.get(url(lb)) as r:
                    results[(r.status, await r.text())] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                results[type(exc).__name__] += 1
            slowest[0] = max(slowest[0], time.monotonic() - t0)

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8),
                                     timeout=timeout) as s:
        workers = [asyncio.ensure_future(worker(s)) for _ in range(8)]
        await wait_until(lambda: sum(results.values()) >= 300)
        reps[1].kill_backend()                       # a replica crashes mid-load
        killed_at = sum(results.values())
        await wait_until(lambda: sum(results.values()) >= killed_at + 600, timeout=20)
        stop.set()
        await asyncio.gather(*workers)
    assert all(isinstance(k, tuple) and k[0] == 200 for k in results), results
    assert results[(200, "r0")] and results[(200, "r2")]
    assert slowest[0] < 2.0                          # no request waited for a dead replica
    st = lb.router.states[reps[1].backend.key]
    assert st.ejections_total >= 1 and lb.metrics.retries >= 1


@needs_proxy
async def test_accepted_then_closed_connection_fails_over_at_once(replicas, make_lb):
    dead, good = replicas(2)
    dead.kill_backend()                              # its proxy still accepts
    # no ejection time: every other request is sent to the dead replica afresh
    cfg = LBConfig(health=HealthConfig(enabled=False), response_timeout=3.0,
                   outlier=OutlierConfig(base_ejection=0.0))
    lb = await make_lb(cfg, [dead.backend, good.backend])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        for _ in range(20):
            t0 = time.monotonic()
            async with s.get(url(lb)) as r:
                assert (r.status, await r.text()) == (200, "r1")
            assert time.monotonic() - t0 < 1.0       # not a wait for response_timeout
    assert "timeout" not in lb.metrics.upstream_errors
    assert lb.metrics.upstream_errors["reset"] >= 5
    assert lb.router.states[dead.backend.key].failures >= 5
