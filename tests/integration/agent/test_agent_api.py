"""The agent's HTTPS API over real loopback TLS: who may call, versions, logs, stats, members."""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest

from swarmlet.shipped.models import TaskState
from swarmlet.shipped.tlsutil import client_context
from tests.integration.agent.conftest import Api, assignment, wait_for, web_task

pytestmark = pytest.mark.integration


async def test_master_and_cli_are_allowed_other_roles_refused(make_agent, api_for):
    agent = await make_agent()
    for who in ("master", "cli"):
        status, body = await api_for(agent, who).request("GET", "/v1/info")
        assert status == 200 and body["name"] == agent.config.name and body["api_port"] == agent.api_port
    status, body = await api_for(agent, "peer").request("GET", "/v1/info")  # an agent certificate
    assert status == 403 and "agent" in body["error"]
    status, _ = await api_for(agent, "peer").request("PUT", "/v1/assignment",
                                                     json=assignment(agent.config.name, 1))
    assert status == 403 and agent.version == 0


async def test_no_or_foreign_certificate_fails_the_handshake(make_agent, pki_files):
    agent = await make_agent()
    url = f"https://127.0.0.1:{agent.api_port}/v1/info"
    no_cert = ssl.create_default_context(cafile=pki_files["ca"])
    foreign = client_context(pki_files["foreign"] + ".crt", pki_files["foreign"] + ".key",
                             pki_files["ca"])
    async with aiohttp.ClientSession() as s:
        for ctx in (no_cert, foreign):
            with pytest.raises(aiohttp.ClientError):
                async with s.get(url, ssl=ctx) as r:
                    await r.read()
    # plain HTTP on the TLS port gets nothing useful either
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"http://127.0.0.1:{agent.api_port}/v1/info") as r:
                await r.read()


async def test_stale_assignment_is_ignored_and_same_version_is_idempotent(make_agent, api_for,
                                                                          agent_image):
    agent = await make_agent()
    api = api_for(agent)
    node = agent.config.name
    t1, t2 = web_task(agent_image, slot=1), web_task(agent_image, slot=2)
    assert (await api.request("PUT", "/v1/assignment", json=assignment(node, 5, t1)))[1] == \
        {"version": 5, "applied": True}
    status, body = await api.request("PUT", "/v1/assignment", json=assignment(node, 4, t2))
    assert (status, body) == (409, {"error": "stale assignment", "current": 5, "term": 0})
    status, body = await api.request("PUT", "/v1/assignment", json=assignment(node, 5, t2))
    assert (status, body) == (200, {"version": 5, "applied": False})
    stored = (await api.request("GET", "/v1/assignment"))[1]
    assert [t["task_id"] for t in stored["tasks"]] == [t1.task_id]
    rows = await wait_for(api, lambda r: r.get(t1.task_id, {}).get("state") == TaskState.RUNNING)
    assert set(rows) == {t1.task_id}
    on_disk = json.loads(open(agent.store.path).read())
    assert on_disk["version"] == 5


async def test_bad_assignments_are_rejected(make_agent, api_for):
    agent = await make_agent()
    api = api_for(agent)
    status, body = await api.request("PUT", "/v1/assignment", json=assignment("someone-else", 1))
    assert status == 400 and "someone-else" in body["error"]
    status, body = await api.request("PUT", "/v1/assignment", json={"node": agent.config.name,
                                                                    "version": "one"})
    assert status == 400 and "version" in body["error"]
    status, _ = await api.request("PUT", "/v1/assignment", data=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert status == 400
    assert (await api.request("GET", "/v1/assignment"))[0] == 404


async def test_logs_tail_and_follow(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    t = web_task(agent_image, ports=(), command=(
        "sh", "-c", "echo first; echo second; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"))
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    await wait_for(api, lambda r: r.get(t.task_id, {}).get("state") == TaskState.RUNNING)
    await asyncio.sleep(0.3)
    status, text = await api.request("GET", f"/v1/tasks/{t.task_id}/logs?tail=100")
    assert status == 200 and text.startswith("first\nsecond\n")

    got = b""
    async with api.session.get(f"{api.base}/v1/tasks/{t.task_id}/logs?follow=1&tail=0",
                               ssl=api.ssl) as r:
        assert r.status == 200
        async def read_until_two_ticks() -> None:
            nonlocal got
            async for chunk in r.content.iter_any():
                got += chunk
                if got.count(b"tick") >= 2:
                    return
        await asyncio.wait_for(read_until_two_ticks(), 10)
    assert b"first" not in got and got.count(b"tick") >= 2  # only new lines, as they come
    assert (await api.request("GET", "/v1/tasks/nope/logs"))[0] == 404
    assert agent.lag.max_own_lag < 0.1, agent.lag.max_lag


async def test_stats_members_metrics_leave(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    t = web_task(agent_image, command=("sh", "-c", "while true; do :; done"), ports=())
    await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    await wait_for(api, lambda r: r.get(t.task_id, {}).get("state") == TaskState.RUNNING)
    for _ in range(60):  # stats are sampled every second; a busy loop shows up as CPU
        stats = (await api.request("GET", "/v1/stats"))[1]
        if stats["tasks"].get(t.task_id, {}).get("cpu_percent", 0) > 20:
            break
        await asyncio.sleep(0.2)
    node = stats["node"]
    assert set(node) == {"cpu_percent", "mem_used", "mem_total", "load1", "cpus", "tasks"}
    assert node["tasks"] == 1 and 0 < node["mem_used"] < node["mem_total"]
    assert stats["tasks"][t.task_id]["cpu_percent"] > 20
    assert stats["tasks"][t.task_id]["mem_used"] > 0

    members = (await api.request("GET", "/v1/members"))[1]
    me = [m for m in members if m["name"] == agent.config.name]
    assert me and me[0]["meta"]["address"] == "127.0.0.1" and me[0]["meta"]["api_port"] == agent.api_port
    brief = (await api.request("GET", "/v1/members?brief=1"))[1]
    assert [set(m) for m in brief] == [{"name", "state", "incarnation"}] * len(members)
    assert [(m["name"], m["state"]) for m in brief] == [(m["name"], m["state"]) for m in members]

    status, text = await api.request("GET", "/metrics")
    assert status == 200 and "swarmlet_agent_assignment_version 1" in text
    assert 'swarmlet_agent_tasks{state="running"} 1' in text
    assert (await api.request("POST", "/v1/leave"))[1] == {"left": True}


async def test_agent_serves_and_keeps_assignments_while_docker_is_unreachable(make_agent, api_for,
                                                                              tmp_path, agent_image):
    agent = await make_agent(docker_url=f"unix://{tmp_path}/no-docker.sock")
    api = api_for(agent)
    t = web_task(agent_image)
    status, body = await api.request("PUT", "/v1/assignment", json=assignment(agent.config.name, 1, t))
    assert (status, body["applied"]) == (200, True)
    for _ in range(50):
        text = (await api.request("GET", "/metrics"))[1]
        if "swarmlet_agent_docker_errors_total 0" not in text:
            break
        await asyncio.sleep(0.1)
    assert "swarmlet_agent_docker_up 0" in text
    assert "swarmlet_agent_docker_errors_total 0" not in text
    assert (await api.request("GET", "/v1/info"))[0] == 200
    assert agent.store.current.version == 1


async def test_tasks_long_poll_answers_on_a_change_or_after_the_wait(make_agent, api_for, agent_image):
    agent = await make_agent()
    api = api_for(agent)
    node = agent.config.name
    status, body = await api.request("GET", "/v1/tasks")
    assert status == 200 and isinstance(body["seq"], int)
    seq = body["seq"]
    # nothing changes: held for the wait, then the same report
    t0 = asyncio.get_running_loop().time()
    status, body = await api.request("GET", f"/v1/tasks?since={seq}&wait=0.6")
    held = asyncio.get_running_loop().time() - t0
    assert status == 200 and body["seq"] == seq and 0.55 <= held < 5, held
    # an older seq: at once
    t0 = asyncio.get_running_loop().time()
    status, body = await api.request("GET", f"/v1/tasks?since={seq - 1}&wait=30")
    assert status == 200 and asyncio.get_running_loop().time() - t0 < 2
    # a new assignment wakes a held poll long before its wait is over
    poll = asyncio.create_task(api.request("GET", f"/v1/tasks?since={seq}&wait=30"))
    await asyncio.sleep(0.2)
    assert not poll.done()
    t = web_task(agent_image)
    t0 = asyncio.get_running_loop().time()
    assert (await api.request("PUT", "/v1/assignment", json=assignment(node, 1, t)))[0] == 200
    status, body = await asyncio.wait_for(poll, 10)
    assert status == 200 and body["seq"] > seq and body["version"] == 1
    assert asyncio.get_running_loop().time() - t0 < 5
    # and so does the task turning running, later
    seq = body["seq"]
    while not any(r["state"] == TaskState.RUNNING for r in body["tasks"]):
        status, body = await api.request("GET", f"/v1/tasks?since={seq}&wait=20")
        assert status == 200 and body["seq"] > seq   # answered because something changed
        seq = body["seq"]
    for bad in ("since=x&wait=1", "since=1&wait=-1", "since=1&wait=3600", "since=1&wait=nan"):
        status, body = await api.request("GET", f"/v1/tasks?{bad}")
        assert status == 400, (bad, body)
