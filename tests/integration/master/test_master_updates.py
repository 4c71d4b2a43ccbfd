"""Rolling updates through the master's load balancer, with real agents and
dockerd: 1 -> 2 under continuous load fails no request; an update to the
broken image is caught by its health check, never routed, and rolled back on
its own, again with no failed request; `rollback` returns to an earlier spec."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.tools.loadgen import run_load
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, UpdateConfig, to_wire
from tests.integration.master.test_master_daemon import Env, healthy
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def env(tmp_path, docker_client):
    e = Env(tmp_path / "home", docker_client)
    yield e
    await e.close()


async def _until_update(env: Env, status: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    svc: dict = {}
    while time.monotonic() < deadline:
        svc = await env.call("GET", "/v1/services/front")
        if (svc.get("update") or {}).get("status") == status:
            return svc
        await asyncio.sleep(0.2)
    raise AssertionError(f"update never reached {status}: {svc.get('update')}")


async def _live_ids(env: Env) -> set:
    rows = await env.call("GET", "/v1/tasks?service=front")
    return {r["task"] for r in rows if r["desired"] == "running"}


async def _versions(url: str) -> set:
    res = await run_load(url, concurrency=2, duration=5, max_requests=30)
    return {json.loads(b)["version"] for b in res.bodies}


async def test_update_and_automatic_rollback_under_load(env):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    spec = ServiceSpec("front", "swarmlet-hello:1", replicas=3, ports=(PortSpec(8080, published=port),),
                       health=HealthCheck(kind="http", path="/health", interval=0.5, retries=2),
                       update=UpdateConfig(monitor=1.0))
    await env.call("POST", "/v1/services", to_wire(spec))
    await env.wait("3 healthy", lambda r: healthy(r, 3))
    seen: set = set()
    for _ in range(50):
        seen = await _versions(url)
        if seen == {"1"}:
            break
        await asyncio.sleep(0.2)
    assert seen == {"1"}, f"the load balancer never served only version 1: {seen}"

    # 1 -> 2 under load
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(url, concurrency=4, duration=60, max_requests=200_000, stop=stop))
    await asyncio.sleep(0.5)
    await env.call("PATCH", "/v1/services/front", {"image": "swarmlet-hello:2"})
    await _until_update(env, "completed")
    await asyncio.sleep(0.5)
    stop.set()
    res = await load
    assert res.failed == 0, res.summary()
    assert {json.loads(b)["version"] for b in res.bodies} == {"1", "2"}
    assert await _versions(url) == {"2"}
    old_ids = await _live_ids(env)
    assert len(old_ids) == 3

    # 2 -> broken: the health check catches it, it is never routed, and it rolls back itself,
    # keeping the three replicas of revision 2 as they are (same task ids): only the failed new
    # one is removed (issue 20, item 3)
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(url, concurrency=4, duration=90, max_requests=400_000, stop=stop))
    await asyncio.sleep(0.5)
    await env.call("PATCH", "/v1/services/front", {"image": "swarmlet-hello:broken"})
    svc = await _until_update(env, "rolled_back", timeout=90)
    stop.set()
    res = await load
    assert res.failed == 0, res.summary()
    assert res.served > 100
    versions = {json.loads(b)["version"] for b in res.bodies}
    assert versions == {"2"}, versions     # "broken" answered 200 on / but was never routed
    assert svc["image"] == "swarmlet-hello:2" and svc["update"]["rollback_of"] == svc["revision"] - 1
    events = [e["message"] for e in await env.call("GET", "/v1/events?limit=50")]
    assert any("failed" in m and "unhealthy" in m and "rolling back" in m for m in events), events
    assert "revision 4: rolling back to revision 2" in events, events
    assert await _live_ids(env) == old_ids
    rows = await env.call("GET", "/v1/tasks?service=front&all=1")
    assert not [r for r in rows if r["revision"] == 4]    # the rollback started no new replica
    assert {r["revision"] for r in rows if r["task"] not in old_ids} == {1, 3}   # gone: 1 and the failed 3

    # the rollback command: back to revision 1's spec (image 1), health-gated too
    out = await env.call("POST", "/v1/services/front/rollback", {"to": 1})
    assert out["to"] == 1
    await _until_update(env, "rolled_back", timeout=60)
    assert await _versions(url) == {"1"}
