"""Health checks through real containers, and the event loop under load."""

from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.shipped.models import HealthCheck, RestartPolicy, TaskState
from tests.integration.agent.conftest import assignment, wait_for, web_task

pytestmark = pytest.mark.integration

RUNNING = int(TaskState.RUNNING)


async def test_http_and_cmd_health(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    good = web_task(agent_image, slot=1, health=HealthCheck(kind="http", path="/health",
                                                             interval=0.2, retries=2))
    bad = web_task(agent_image, slot=2, health=HealthCheck(kind="http", path="/missing",
                                                            interval=0.2, retries=2))
    cmd = web_task(agent_image, slot=3, health=HealthCheck(
        kind="cmd", command=("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"),
        interval=0.5, timeout=2.0, retries=1))
    none = web_task(agent_image, slot=4)
    await api.request("PUT", "/v1/assignment",
                      json=assignment(agent.config.name, 1, good, bad, cmd, none))
    rows = await wait_for(api, lambda r: len(r) == 4 and r[good.task_id]["health"] == "healthy"
                          and r[bad.task_id]["health"] == "unhealthy"
                          and r[cmd.task_id]["health"] == "healthy", timeout=20,
                          what="health verdicts")
    assert rows[none.task_id]["health"] == "none"
    assert all(r["state"] == RUNNING for r in rows.values())  # unhealthy is still running


async def test_event_loop_never_stalls_while_the_agent_works(make_agent, api_for, agent_image,
                                                             docker_client):
    # resync every 60 s: anything faster than that is the Docker event stream at work
    agent = await make_agent(resync_interval=60.0)
    api = api_for(agent)
    node = agent.config.name
    ts = [web_task(agent_image, slot=i, restart=RestartPolicy(delay=0.05),
                   health=HealthCheck(kind="http", path="/health", interval=0.2))
          for i in range(6)]
    agent.lag.reset()
    samples0 = agent.lag.samples
    await api.request("PUT", "/v1/assignment", json=assignment(node, 1, *ts))
    rows = await wait_for(api, lambda r: len(r) == 6 and all(
        v["state"] == RUNNING and v["health"] == "healthy" for v in r.values()), timeout=30)
    # kill them all at once; Docker itself needs ~1-2 s to start six containers on two
    # cores, so the bound only proves the event stream (the resync poll is 60 s)
    t0 = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(docker_client.api.kill, r["container_id"])
                           for r in rows.values()))
    await wait_for(api, lambda r: all(v["restarts"] == 1 and v["health"] != "unhealthy"
                                      for v in r.values()), timeout=15)
    back = time.monotonic() - t0
    # and replace half of them, remove the rest
    await api.request("PUT", "/v1/assignment", json=assignment(node, 2, *ts[:3]))
    await wait_for(api, lambda r: set(r) == {t.task_id for t in ts[:3]}, timeout=20)
    assert back < 10.0, f"restarts took {back:.2f}s"
    assert agent.lag.samples - samples0 > 20  # the probe really ran meanwhile
    assert agent.lag.max_own_lag < 0.1, (f"event loop stalled {agent.lag.max_own_lag * 1000:.0f} ms "
                                         f"(of {agent.lag.max_lag * 1000:.0f} ms)")
