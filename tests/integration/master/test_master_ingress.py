"""The master's front door: a load balancer per published port, fed live from
task health, with real agents on the local dockerd. Killing a replica under
load fails no request; scaling changes the backends without a restart."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.tools.loadgen import run_load
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.master.test_master_daemon import Env, healthy
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def env(tmp_path, docker_client):
    e = Env(tmp_path / "home", docker_client)
    yield e
    await e.close()


async def test_routes_to_every_healthy_replica_and_survives_a_kill(env, docker_client):
    image = "swarmlet-hello:1"
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    port = free_port()
    spec = ServiceSpec("front", image, replicas=3, ports=(PortSpec(8080, published=port),),
                       health=HealthCheck(kind="http", path="/health", interval=0.5, retries=2))
    await env.call("POST", "/v1/services", to_wire(spec))
    await env.wait("3 healthy", lambda r: healthy(r, 3))
    url = f"http://127.0.0.1:{port}/"
    for _ in range(50):   # the front door follows the health reports
        res = await run_load(url, concurrency=2, duration=5, max_requests=30)
        if len(res.bodies) == 3:
            break
        await asyncio.sleep(0.2)
    tasks = {json.loads(b)["task"] for b in res.bodies}
    assert len(tasks) == 3 and res.failed == 0

    load = asyncio.create_task(run_load(url, concurrency=4, duration=6, max_requests=20_000))
    await asyncio.sleep(1.5)
    victim = env.containers("front")[0]
    await asyncio.to_thread(victim.kill)
    res = await load
    assert res.total > 200
    assert res.failed == 0, res.summary()

    await env.call("PATCH", "/v1/services/front", {"replicas": 1})
    await env.wait("1 healthy", lambda r: healthy([x for x in r if x["service"] == "front"], 1))
    seen = set()
    for _ in range(50):
        res = await run_load(url, concurrency=2, duration=5, max_requests=20)
        seen = {json.loads(b)["task"] for b in res.bodies}
        if len(seen) == 1 and res.failed == 0:
            break
        await asyncio.sleep(0.2)
    assert len(seen) == 1 and res.failed == 0
