"""Ingress mode: the agent runs a proxy for every published port from the
routing table in its assignment, follows route changes live, and keeps
serving from the stored assignment after a restart (master not needed)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.tools.loadgen import run_load
from swarmlet.shipped.models import Assignment, Route, RouteBackend
from tests.integration.agent.conftest import make_agent, pki_files  # noqa: F401  (fixtures)
from tests.conftest import free_port

pytestmark = pytest.mark.integration


async def _backend(name: str):
    async def handler(request):
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _bodies(url: str, n: int = 40):
    res = await run_load(url, concurrency=2, duration=5, max_requests=n)
    return res, {b for b in res.bodies}


async def _wait_bodies(url: str, want: set, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            res, seen = await _bodies(url)
            if seen == want and res.failed == 0:
                return
        except Exception:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"wanted {want}, saw {seen if 'seen' in dir() else None}")
        await asyncio.sleep(0.1)


async def test_agent_ingress_follows_routes_and_survives_restart(make_agent, tmp_path):
    (r1, p1), (r2, p2) = await _backend("one"), await _backend("two")
    port = free_port()
    state = str(tmp_path / "ingress-agent")
    try:
        agent = await make_agent(name="ingress-node", state_dir=state, ingress=True,
                                 ingress_bind="127.0.0.1")
        route = Route("web", port, 8080, "/", backends=(
            RouteBackend("web.1", "n", "127.0.0.1", p1), RouteBackend("web.2", "n", "127.0.0.1", p2)))
        await agent.set_assignment(Assignment("ingress-node", 1, (), (route,)))
        url = f"http://127.0.0.1:{port}/"
        await _wait_bodies(url, {"one", "two"})

        only_two = Route("web", port, 8080, "/", backends=(RouteBackend("web.2", "n", "127.0.0.1", p2),))
        await agent.set_assignment(Assignment("ingress-node", 2, (), (only_two,), ("web.1",)))
        await _wait_bodies(url, {"two"})

        await agent.stop()   # the master is nowhere: a new agent serves from the stored routes
        await make_agent(name="ingress-node", state_dir=state, ingress=True, ingress_bind="127.0.0.1")
        await _wait_bodies(url, {"two"})
    finally:
        await r1.cleanup()
        await r2.cleanup()
