"""The agent against the real local dockerd: assign, run, crash, restart, adopt, remove.

Each test runs its own agent (unique node name) in the test's event loop; the
agent's loop-lag probe therefore also watches everything these tests do.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest

from swarmlet.shipped.models import (HealthCheck, PortSpec, Resources, RestartPolicy, TaskState,
                             VolumeMount)
from tests.integration.agent.conftest import assignment, wait_for, web_task

pytestmark = pytest.mark.integration

RUNNING, FAILED = int(TaskState.RUNNING), int(TaskState.FAILED)


def _running(tid):
    return lambda ts: tid in ts and ts[tid]["state"] == RUNNING and ts[tid]["health"] != "unhealthy"


def _get(port: int, path: str = "/") -> bytes:
    """GET, allowing the just-started server a few seconds to listen (running != listening)."""
    import http.client
    import time
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.read()
        except (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_assignment_runs_the_task_with_its_contract(make_agent, api_for, agent_image,
                                                          docker_client):
    agent = await make_agent()
    api = api_for(agent)
    node = agent.config.name
    vol = f"swarmlet-test-{node}"
    t = web_task(agent_image, env={"GREETING": "hi"}, volumes=(VolumeMount(vol, "/data"),),
                 limits=Resources(cpus=0.5, memory=64 * 1024 * 1024),
                 health=HealthCheck(kind="http", path="/health", interval=0.2, retries=2))
    status, body = await api.request("PUT", "/v1/assignment", json=assignment(node, 1, t))
    assert (status, body) == (200, {"version": 1, "applied": True})
    tasks = await wait_for(api, lambda ts: ts.get(t.task_id, {}).get("health") == "healthy",
                           what="healthy task")
    row = tasks[t.task_id]
    assert row["state"] == RUNNING and row["reason"] == ""
    port = row["host_ports"]["8080/tcp"]
    assert b"hello from the agent test image" in await asyncio.to_thread(_get, port)

    info = docker_client.api.inspect_container(row["container_id"])
    labels = info["Config"]["Labels"]
    assert labels["io.swarmlet.managed"] == "1" and labels["io.swarmlet.node"] == node
    assert (labels["io.swarmlet.task"], labels["io.swarmlet.revision"], labels["io.swarmlet.slot"]) \
        == (t.task_id, "1", "1")
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["SWARMLET_SERVICE"] == "web" and env["SWARMLET_TASK"] == t.task_id
    assert env["SWARMLET_NODE"] == node and env["GREETING"] == "hi"
    assert [(m["Type"], m["Name"], m["Destination"]) for m in info["Mounts"]] == [("volume", vol, "/data")]
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")
    assert (await api.request("GET", "/v1/assignment"))[1]["version"] == 1
    assert agent.lag.max_own_lag < 0.1, (f"event loop stalled {agent.lag.max_own_lag * 1000:.0f} ms "
                                         f"(of {agent.lag.max_lag * 1000:.0f} ms)")
    await agent.stop()
    docker_client.containers.get(row["container_id"]).remove(force=True)
    docker_client.volumes.get(vol).remove(force=True)


async def test_crashed_task_restarts_with_backoff(make_agent, api_for, agent_image, docker_client):
    agent = await make_agent()
    api = api_for(agent)
    t = web_task(agent_image, restart=RestartPolicy(delay=0.3))
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    row = (await wait_for(api, _running(t.task_id)))[t.task_id]
    cid = row["container_id"]
    agent.lag.reset()

    gaps = []
    for n in (1, 2, 3):
        killed = time.monotonic()
        await asyncio.to_thread(docker_client.api.kill, cid)
        await wait_for(api, lambda ts: ts[t.task_id]["restarts"] == n and
                       ts[t.task_id]["health"] != "unhealthy", timeout=10, what=f"restart {n}")
        gaps.append(time.monotonic() - killed)
    # reacts to the event stream (the resync poll is 5 s) and the backoff doubles: 0.3, 0.6, 1.2
    assert gaps[0] < 0.3 + 1.0, gaps
    assert gaps[1] >= 0.6 and gaps[2] >= 1.2, gaps
    row = (await api.request("GET", "/v1/tasks"))[1]["tasks"][0]
    assert row["state"] == RUNNING and row["container_id"] == cid  # the same container, restarted
    assert agent.lag.max_own_lag < 0.1, (f"event loop stalled {agent.lag.max_own_lag * 1000:.0f} ms "
                                         f"(of {agent.lag.max_lag * 1000:.0f} ms)")


async def test_crash_shows_unhealthy_until_back(make_agent, api_for, agent_image, docker_client):
    agent = await make_agent(max_backoff=30.0)
    api = api_for(agent)
    t = web_task(agent_image, restart=RestartPolicy(delay=5.0))
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    cid = (await wait_for(api, _running(t.task_id)))[t.task_id]["container_id"]
    await asyncio.to_thread(docker_client.api.kill, cid)
    row = (await wait_for(api, lambda ts: ts[t.task_id]["health"] == "unhealthy", timeout=3))[t.task_id]
    assert row["state"] == RUNNING  # states never go backwards
    assert "exited with code 137" in row["reason"] and "restarting in" in row["reason"]


async def test_restart_policy_none_leaves_it_failed(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    t = web_task(agent_image, command=("sh", "-c", "exit 3"), restart=RestartPolicy(condition="none"))
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    row = (await wait_for(api, lambda ts: ts.get(t.task_id, {}).get("state") == FAILED))[t.task_id]
    assert "exited with code 3" in row["reason"] and row["restarts"] == 0


async def test_image_that_cannot_be_had_fails_with_the_pull_error(make_agent, api_for):
    agent = await make_agent()
    api = api_for(agent)
    # A registry on a closed loopback port: the pull fails fast and never leaves the machine.
    t = web_task("127.0.0.1:9/swarmlet/missing:1")
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    row = (await wait_for(api, lambda ts: ts.get(t.task_id, {}).get("state") == FAILED,
                          timeout=30))[t.task_id]
    assert row["reason"].startswith("pull 127.0.0.1:9/swarmlet/missing:1 failed")
    assert row["container_id"] is None
    await asyncio.sleep(0.3)  # give a wrong retry a chance to show
    assert agent.counters["actions"] == 1


async def test_agent_restart_adopts_without_duplicates(make_agent, api_for, agent_image,
                                                       docker_client, tmp_path):
    agent = await make_agent()
    node, state_dir = agent.config.name, agent.config.state_dir
    api = api_for(agent)
    ts = [web_task(agent_image, slot=i) for i in (1, 2)]
    await api.request("PUT", "/v1/assignment", json=assignment(node, 4, *ts))
    before = await wait_for(api, lambda r: all(_running(t.task_id)(r) for t in ts))
    await agent.stop()

    again = await make_agent(name=node, state_dir=state_dir)  # the stored assignment is reloaded
    api2 = api_for(again)
    assert again.version == 4
    after = await wait_for(api2, lambda r: all(_running(t.task_id)(r) for t in ts))
    assert {k: v["container_id"] for k, v in after.items()} == \
           {k: v["container_id"] for k, v in before.items()}
    await asyncio.sleep(0.5)
    mine = docker_client.containers.list(all=True, filters={"label": f"io.swarmlet.node={node}"})
    assert len(mine) == 2
    assert again.counters["actions"] == 0


async def test_unassigned_tasks_are_removed_and_foreign_containers_kept(make_agent, api_for,
                                                                        agent_image, docker_client):
    agent = await make_agent()
    node = agent.config.name
    api = api_for(agent)
    # Look-alikes the agent must never touch: no managed label, and another node's.
    foreign = [docker_client.containers.create(agent_image, labels=labels, name=f"{node}-{i}")
               for i, labels in enumerate([
                   {"io.swarmlet.node": node, "io.swarmlet.task": "x"},
                   {"io.swarmlet.managed": "1", "io.swarmlet.node": node + "-other",
                    "io.swarmlet.task": "y"}])]
    try:
        a, b = web_task(agent_image, slot=1), web_task(agent_image, slot=2)
        await api.request("PUT", "/v1/assignment", json=assignment(node, 1, a, b))
        rows = await wait_for(api, lambda r: _running(a.task_id)(r) and _running(b.task_id)(r))
        status, body = await api.request("PUT", "/v1/assignment", json=assignment(node, 2, a))
        assert (status, body["applied"]) == (200, True)
        gone = rows[b.task_id]["container_id"]

        def removed() -> bool:
            return not docker_client.containers.list(all=True, filters={"id": gone})
        deadline = time.monotonic() + 15
        while not removed() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert removed()
        rows = await wait_for(api, lambda r: set(r) == {a.task_id})
        assert rows[a.task_id]["state"] == RUNNING
        for f in foreign:
            f.reload()
            assert f.status == "created"
    finally:
        for f in foreign:
            f.remove(force=True)


async def test_new_revision_replaces_the_container(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    node = agent.config.name
    v1 = web_task(agent_image, tid="web-rev")
    await api.request("PUT", "/v1/assignment", json=assignment(node, 1, v1))
    old = (await wait_for(api, _running("web-rev")))["web-rev"]["container_id"]
    v2 = web_task(agent_image, tid="web-rev", revision=2, env={"V": "2"})
    await api.request("PUT", "/v1/assignment", json=assignment(node, 2, v2))
    rows = await wait_for(api, lambda r: _running("web-rev")(r) and r["web-rev"]["container_id"] != old
                          and r["web-rev"]["revision"] == 2)
    assert rows["web-rev"]["container_id"] != old


async def test_fixed_host_port_is_used(make_agent, api_for, agent_image):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    agent = await make_agent()
    api = api_for(agent)
    t = web_task(agent_image, ports=(PortSpec(target=8080, host_port=free),))
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    rows = await wait_for(api, _running(t.task_id))
    assert rows[t.task_id]["host_ports"] == {"8080/tcp": free}
    assert b"hello" in await asyncio.to_thread(_get, free)
