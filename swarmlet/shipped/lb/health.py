"""Active health checks: one small loop per backend, results into the Router.

A check is an HTTP ``GET <health_path>`` (2xx and 3xx pass, as in HAProxy's
``option httpchk``) or, when the backend has no health path, a TCP connect.
Each runs on its own short-lived connection with ``Connection: close``, so a
check never borrows or poisons the proxy's keep-alive pool, and is bounded by
``timeout``. Checks keep running with a single backend (its only chance to be
marked down and then up again). The first check of each backend is delayed by
a random share of the interval so a hundred backends do not fire together.

The verdicts (rise/fall, ending a network ejection) are the Router's, pure;
this module only does the I/O and reports transitions to ``on_change``.

Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable, Dict, Optional, Tuple

from .config import Backend, HealthConfig
from .routing import BackendState, Key, Router

OnChange = Callable[[BackendState, str], None]


def parse_status_line(line: bytes) -> int:
    """``HTTP/1.1 200 OK`` → 200; anything else → 0 (a failed check)."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0
    return int(parts[1])


def status_ok(status: int) -> bool:
    return 200 <= status < 400


async def check_backend(backend: Backend, timeout: float) -> Tuple[bool, str]:
    """Run one check; (passed, why not)."""
    try:
        return await asyncio.wait_for(_check(backend), timeout)
    except asyncio.TimeoutError:
        return False, f"health check timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"health check could not connect ({exc.strerror or type(exc).__name__})"


async def _check(backend: Backend) -> Tuple[bool, str]:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    try:
        if backend.health_path is None:
            return True, ""
        writer.write(b"GET " + backend.health_path.encode() + b" HTTP/1.1\r\nHost: "
                     + backend.address.encode() + b"\r\nUser-Agent: swarmlet-lb-health"
                     b"\r\nConnection: close\r\n\r\n")
        line = await reader.readline()
        status = parse_status_line(line)
        if status_ok(status):
            return True, ""
        if status:
            return False, f"health check answered {status}"
        return False, "health check got no valid HTTP answer"
    finally:
        writer.close()


class HealthChecker:
    def __init__(self, router: Router, config: HealthConfig,
                 on_change: Optional[OnChange] = None) -> None:
        self.router = router
        self.config = config
        self.on_change = on_change
        self.tasks: Dict[Key, asyncio.Task] = {}
        self.checks = 0
        self.closed = False

    def sync(self) -> None:
        """Check every live backend, and only those."""
        if not self.config.enabled:
            return
        live = {k for k, st in self.router.states.items() if not st.draining}
        for key in list(self.tasks):
            if key not in live:
                self.tasks.pop(key).cancel()
        for key in live - self.tasks.keys():
            self.tasks[key] = asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        await asyncio.sleep(random.uniform(0, interval))
        # checked each round too: Python 3.11's wait_for can swallow a cancel
        while not self.closed:
            st = self.router.states.get(key)
            if st is None:
                return
            ok, error = await check_backend(st.backend, self.config.timeout)
            self.checks += 1
            if self.router.states.get(key) is not st:
                return                       # removed while we checked
            change = self.router.record_check(st, ok, loop.time(), error)
            if change and self.on_change is not None:
                self.on_change(st, change)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.timeout + 1.0)
