"""The master watches agents with long polls: idle nodes cost almost nothing, changes arrive
at once, deaths are still seen (a closed connection at once, a silent hang through gossip).

Simulated agents (``tests/tools/simagents.py``) over real mutual TLS against a real master
in this process; one fleet answers long polls, one is an agent of an earlier version
(polled on a timer, as before).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.daemon import MasterConfig
from swarmlet.master.liveness import LivenessConfig
from swarmlet.master.runner import run_master
from swarmlet.client import MASTER, Client, Peer
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from tests.conftest import free_port
from tests.tools.simagents import SimFleet, roster

pytestmark = pytest.mark.integration

CONFIG = MasterConfig(poll_interval=0.2, tick_interval=0.2, reconcile_interval=1.0, stats_interval=1.0,
                      request_timeout=1.0, long_poll=20.0,
                      liveness=LivenessConfig(down_after=1.0, restart_grace=3.0))


async def _until(what: str, pred: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic() - t0
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _polls(fleet: SimFleet) -> int:
    return fleet.requests.get("GET /v1/tasks", 0)


async def test_watches_instead_of_polls_and_deaths_still_seen(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="watch", home=home)
    port = free_port()
    nodes = roster(4, prefix=f"w{port}", base="127.104")
    everyone = nodes
    new = SimFleet(home, nodes[:3], port, run_delay=0.1, suspect_after=0.5, dead_after=30.0,
                   everyone=everyone)
    old = SimFleet(home, nodes[3:], port, run_delay=0.1, everyone=everyone, legacy=True)
    await new.start()
    await old.start()
    m = await run_master(home, bind="127.0.0.1", port=0, config=CONFIG)
    client = Client.for_cluster(c, timeout=10)
    peer = Peer(MASTER, "127.0.0.1", int(m.url.rsplit(":", 1)[1]))

    async def call(method: str, path: str, body: Any = None) -> Any:
        return await client.call(peer, method, path, body, timeout=10)

    async def status(name: str) -> str:
        return next(r["status"] for r in await call("GET", "/v1/nodes") if r["name"] == name)
    try:
        for n in nodes:
            await call("POST", "/v1/nodes", {"name": n["name"], "address": n["address"], "api_port": port})
        spec = ServiceSpec("web", "sim:1", replicas=8, ports=(PortSpec(8080),),
                           health=HealthCheck(kind="http", path="/health"))
        await call("POST", "/v1/services", to_wire(spec))

        async def healthy() -> bool:
            t = (await call("GET", "/v1/status"))["tasks"]
            return t["healthy"] == 8
        await _until("8 healthy replicas", healthy)
        await asyncio.sleep(1.0)

        # idle: three watched nodes ask about once per long poll, the old agent 5 times a second
        p_new, p_old = _polls(new), _polls(old)
        await asyncio.sleep(3.0)
        assert _polls(new) - p_new <= 3, _polls(new) - p_new
        assert _polls(old) - p_old >= 8, _polls(old) - p_old

        # a change on a watched node reaches the master at once, not at the next poll
        a = nodes[0]["name"]
        task = next(iter(new.nodes[a].tasks))
        new.set_health(a, task, "unhealthy")

        async def seen() -> bool:
            return any(r["task"] == task and r["health"] == "unhealthy"
                       for r in await call("GET", "/v1/tasks?service=web"))
        assert await _until("the health change", seen, 5) < 1.0

        # a dead host: the watch's connection is cut, down after down_after
        await new.kill([a])
        assert await _until("the killed node down", lambda: _is(status, a, "down"), 10) < 5.0

        # a hung host: the watch would wait 20 s; gossip suspects it and the master probes
        b = nodes[1]["name"]
        new.freeze([b])
        old.set_gossip(b, "suspect")   # every fleet's view, as gossip spreads
        assert await _until("the hung node down", lambda: _is(status, b, "down"), 15) < 8.0
        new.thaw([b])
        old.set_gossip(b, "alive")
        await _until("the thawed node ready", lambda: _is(status, b, "ready"), 15)

        # an agent crashed on a host that is up (connections refused): suspect, not down,
        # until restart_grace (3 s here), though down_after (1 s) is out and gossip suspects it
        c = nodes[2]["name"]
        t0 = time.monotonic()
        await new.crash([c])
        await asyncio.sleep(2.0)
        assert await status(c) == "suspect", await status(c)
        await _until("the crashed node down", lambda: _is(status, c, "down"), 10)
        assert 2.5 <= time.monotonic() - t0 < 6.0, time.monotonic() - t0
    finally:
        await client.close()
        await m.close()
        await new.close()
        await old.close()


async def _is(status: Any, name: str, want: str) -> bool:
    return await status(name) == want
