"""``LoadBalancer``: one listening port, its backends, checks, sweeper and admin.

The public face of ``swarmlet.shipped.lb``::

    lb = LoadBalancer("0.0.0.0", 8080, LBConfig(), admin_port=9180)
    await lb.start()
    lb.set_backends([Backend("10.0.0.5", 32768, "/healthz", name="web.1"), ...])
    lb.snapshot()          # status: per-backend health, ejections, req/s
    lb.metrics_text()      # Prometheus text (also GET /metrics on the admin port)
    await lb.stop()

``set_backends`` is synchronous and cheap: call it with the full desired list
whenever task status changes. New backends are routed to at once, removed ones
drain (no new requests, in-flight ones finish, ``drain_timeout`` at most).

Admin endpoints live on a **separate admin port** (``/metrics``, ``/status``),
never on the published one: every path of a published port belongs to the
application, and internals should not be public. Callers that already serve
``/metrics`` (the agent's API) use ``render_metrics([lb, ...])`` instead.

One sweeper task per balancer (``tick``) enforces every timeout by deadline,
ages out idle upstream connections and collects drained backends.

Runs on any asyncio loop; uvloop makes it about twice as fast (see
``__main__.py`` and ``bench/lb``). No master-specific imports: the agent runs
the same class in ingress mode. Python 3.9, no click/asyncssh.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, Iterable, List, Optional, Set

from .config import Backend, LBConfig, LoadBalancerError
from .downstream import Downstream
from .health import HealthChecker
from .metrics import LBMetrics, render
from .routing import BackendState, Router
from .upstream import Pool


class LoadBalancer:
    def __init__(self, listen_host: str = "0.0.0.0", listen_port: Optional[int] = 0,
                 config: Optional[LBConfig] = None, *, name: Optional[str] = None,
                 admin_host: str = "127.0.0.1", admin_port: Optional[int] = None,
                 reuse_port: bool = False) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.config = config or LBConfig()
        self.name = name or f"{listen_host}:{listen_port}"
        self.admin_host = admin_host
        self.admin_port = admin_port
        self.reuse_port = reuse_port     # several worker processes share the port (SO_REUSEPORT)
        self.router = Router(self.config)
        self.pool = Pool(self.config)
        self.metrics = LBMetrics()
        self.clients: Set[Downstream] = set()
        self.proto = self.config.forwarded_proto
        cookie = self.config.sticky_cookie
        self.sticky_name: Optional[bytes] = cookie.encode() if cookie else None
        self.loop: Any = None
        self.health: Optional[HealthChecker] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._sweeper: Optional[asyncio.Task] = None
        self._admin: Any = None
        self._pending_backends: Optional[List[Backend]] = None
        self.stopping = False        # answers in flight end with Connection: close

    @property
    def port(self) -> int:
        """The bound port (useful with ``listen_port=0``)."""
        if self._server is None or not self._server.sockets:
            return self.listen_port
        return self._server.sockets[0].getsockname()[1]

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.health = HealthChecker(self.router, self.config.health, self._health_changed)
        if self.listen_port is not None:   # None: a site of the edge (``edge.py``), whose
            await self._listen()           # listeners are shared by every routed service
        if self.name.endswith(":0"):
            self.name = f"{self.listen_host}:{self.port}"
        if self._pending_backends is not None:
            self.set_backends(self._pending_backends)
            self._pending_backends = None
        self._sweeper = self.loop.create_task(self._sweep_loop())
        if self.admin_port is not None:
            await self._start_admin()

    async def _listen(self) -> None:
        try:
            self._server = await self.loop.create_server(
                lambda: Downstream(self), self.listen_host, self.listen_port,
                reuse_address=True, reuse_port=self.reuse_port or None, backlog=1024)
        except OSError as exc:
            raise LoadBalancerError(
                f"cannot listen on {self.listen_host}:{self.listen_port}: {exc.strerror or exc}",
                hint="is another process using this port?") from exc

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (``grace`` s), close all."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace if self.loop else 0.0
        for c in list(self.clients):
            if c.cur is None and not c.queue:
                c.transport.close()          # idle keep-alive
        while self.clients and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.clients):
            c.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self.health is not None:
            await self.health.close()
        self.pool.close_all()
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # --- backends -----------------------------------------------------------------------

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """Replace the backend set, live. Removed backends drain gracefully."""
        backends = list(backends)
        if self.loop is None:                # before start(): apply on start
            self._pending_backends = backends
            return
        _, drained = self.router.set_backends(backends, self.loop.time())
        for st in drained:
            self.pool.close_idle(st.key)
        if self.health is not None:
            self.health.sync()
        self._collect()

    def cut_backend(self, host: str, port: int) -> None:
        """Cut every connection to a backend now (it is dead, not draining):
        requests in flight to it are retried elsewhere where the rules allow,
        instead of hanging until a timeout."""
        self.pool.abort_backend((host, port))

    def backend_idle(self, st: BackendState) -> None:
        """A draining backend has no request in flight any more."""
        self.loop.call_soon(self._collect)

    def _collect(self) -> None:
        for st in self.router.collect_drained(self.loop.time()):
            self.pool.abort_backend(st.key)  # only past the deadline is anything still open

    def _health_changed(self, st: BackendState, change: str) -> None:
        if change == "down":
            self.pool.close_idle(st.key)

    # --- sweeper ------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        cfg = self.config
        tick = max(0.02, min(0.5, cfg.connect_timeout / 4, cfg.response_timeout / 4,
                             cfg.client_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            self.sweep(self.loop.time())

    def sweep(self, now: float) -> None:
        for c in [c for c in self.clients if c.deadline <= now]:
            c.on_deadline(now)
        self.pool.sweep(now)
        self._collect()

    # --- status ------------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        now = self.loop.time() if self.loop else 0.0
        m = self.metrics
        return {
            "listener": self.name,
            "port": self.port,
            "policy": self.config.policy,
            "panic": self.router.panic,
            "requests_per_second": m.rate.rate(now),
            "requests": sum(m.requests.values()),
            "by_status": {str(k): v for k, v in sorted(m.requests.items())},
            "duration_counts": list(m.duration.counts),   # per metrics.BUCKETS, the last is +Inf
            "retries": m.retries,
            "upstream_errors": dict(m.upstream_errors),
            "connections_open": m.open_connections,
            "backends": [st.describe(now) for st in self.router.states.values()],
        }

    def metrics_text(self) -> str:
        return render_metrics([self])

    async def _start_admin(self) -> None:
        from aiohttp import web        # only the admin endpoint uses aiohttp

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.metrics_text().encode(), headers={
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

        async def status(_: web.Request) -> web.Response:
            return web.Response(text=json.dumps(self.snapshot(), indent=1),
                                content_type="application/json")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/status", status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.admin_host, self.admin_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise LoadBalancerError(f"cannot serve admin on {self.admin_host}:"
                                    f"{self.admin_port}: {exc.strerror or exc}") from exc
        self._admin = runner

    @property
    def admin_bound_port(self) -> Optional[int]:
        if self._admin is None:
            return None
        for site in self._admin.sites:
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                return server.sockets[0].getsockname()[1]
        return self.admin_port


def render_metrics(lbs: Iterable[LoadBalancer]) -> str:
    """One Prometheus exposition for several balancers (one per published port)."""
    lbs = list(lbs)
    loop_time = lbs[0].loop.time() if lbs and lbs[0].loop else 0.0
    return render(lbs, loop_time)
