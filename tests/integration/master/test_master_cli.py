"""The real ``swarmlet`` CLI (subprocess) against a real master and agent."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.runner import run_master
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.master.test_master_daemon import FAST, Env
from tests.support import CLI
from tests.conftest import free_port

pytestmark = pytest.mark.integration


async def test_cli_commands(tmp_path, docker_client, agent_image):
    env = Env(tmp_path / "home", docker_client)
    try:
        # the CLI finds the master through cluster.json: give it a free port
        data = json.loads(env.c.path("cluster.json").read_text())
        data["master_port"] = free_port()
        env.c.path("cluster.json").write_text(json.dumps(data))
        env.c = clusterlib.load(env.c.home)
        a = await env.agent("a")
        env.master = await run_master(env.c.home, bind="127.0.0.1", config=FAST)
        await env.register(a)
        cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})

        async def sw(*args: str, code: int = 0):
            p = await asyncio.to_thread(cli, *args, timeout=60)
            assert p.returncode == code, (args, p.stdout, p.stderr)
            return p

        async def ps_json():
            return json.loads((await sw("ps", "web", "-o", "json")).stdout)

        await sw("run", "web", "--image", agent_image, "--replicas", "2", "-p", "18080:8080",
                 "--health-path", "/health", "-e", "A=1")
        deadline = time.monotonic() + 30
        while True:
            rows = await ps_json()
            if len(rows) == 2 and all(r["state"] == "running" and r["health"] == "healthy" for r in rows):
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.3)
        assert set(rows[0]) >= {"service", "task", "node", "state", "health", "reason", "revision"}
        assert {r["node"] for r in rows} == {a.config.name}
        table = (await sw("ps")).stdout
        assert table.splitlines()[0].split() == ["SERVICE", "TASK", "NODE", "STATE", "HEALTH", "REV",
                                                 "REASON"]
        (svc,) = json.loads((await sw("services", "-o", "json")).stdout)
        assert svc["name"] == "web" and svc["replicas"] == 2 and svc["ports"] == "18080:8080/tcp"
        p = await sw("run", "web", "--image", agent_image, code=1)
        assert "exists" in p.stderr
        await sw("run", "bad", "--image", "x", "--constraint", "zone=a", code=2)
        await sw("scale", "web=3")
        assert len(await ps_json()) == 3
        st = json.loads((await sw("status", "-o", "json")).stdout)
        assert st["nodes"]["total"] == 1 and st["services"] == 1 and st["tasks"]["desired"] == 3
        assert "1 ready" in (await sw("status")).stdout
        assert "draining" in (await sw("node", "drain", a.config.name)).stdout
        # start-first: nowhere to go, so successors wait (explained) and the old ones keep running
        deadline = time.monotonic() + 15
        while True:
            rows = await ps_json()
            pending = [r for r in rows if r["state"] == "pending"]
            if pending:
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.3)
        assert all(f"1 node not ready ({a.config.name} draining)" == r["reason"] for r in pending)
        assert sum(1 for r in rows if r["node"] == a.config.name) == 3
        await sw("node", "activate", a.config.name)
        assert (await sw("rebalance")).stdout.strip() == "already balanced"
        assert "off" in (await sw("rebalance", "--auto", "off")).stdout
        assert json.loads((await sw("status", "-o", "json")).stdout)["auto_rebalance"] is False
        p = await sw("ps", "nosuch", code=1)
        assert "no service 'nosuch'" in p.stderr
        await sw("rm", "web")
        assert json.loads((await sw("services", "-o", "json")).stdout) == []
    finally:
        await env.close()
