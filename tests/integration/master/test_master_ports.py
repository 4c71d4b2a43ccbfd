"""Two services never publish the same port: the real CLI against a real master (issue 20, item 1).

``run``, ``update`` and ``deploy`` each meet the master's refusal, one line naming the
service that holds the port; a stack file's clash is reported at its ``file:line:col``
and nothing of the stack is applied. 18080/udp is another port than 18080/tcp.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.runner import run_master
from tests.conftest import free_port
from tests.integration.master.test_master_daemon import FAST, Env
from tests.support import CLI

pytestmark = pytest.mark.integration

LINE = "port 18080/tcp is published by service 'hello'"

STACK = """\
services:
  api:
    image: swarmlet-hello:2
    ports:
      - "18081:8080"
  other:
    image: swarmlet-hello:2
    ports:
      - "18082:8080"
      - "18080:8080"
"""


async def test_a_published_port_is_refused_at_run_update_and_deploy(tmp_path, docker_client):
    env = Env(tmp_path / "home", docker_client)
    try:
        data = json.loads(env.c.path("cluster.json").read_text())
        data["master_port"] = free_port()
        env.c.path("cluster.json").write_text(json.dumps(data))
        env.c = clusterlib.load(env.c.home)
        env.master = await run_master(env.c.home, bind="127.0.0.1", config=FAST)
        cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})

        async def sw(*args: str, code: int = 0):
            p = await asyncio.to_thread(cli, *args, timeout=60)
            assert p.returncode == code, (args, p.stdout, p.stderr)
            return p

        async def services():
            return {s["name"]: s for s in json.loads((await sw("services", "-o", "json")).stdout)}

        await sw("run", "hello", "--image", "swarmlet-hello:2", "-p", "18080:8080", "--no-push")
        p = await sw("run", "other", "--image", "swarmlet-hello:2", "-p", "18080:8080", "--no-push",
                     code=1)
        assert p.stderr == f"error: {LINE}\n", p.stderr       # the reason alone (item 4)
        # udp on the same number is another port
        await sw("run", "dns", "--image", "swarmlet-hello:2", "-p", "18080:53/udp", "--no-push")
        await sw("run", "other", "--image", "swarmlet-hello:2", "-p", "18081:8080", "--no-push")
        p = await sw("update", "other", "--publish-add", "18080:8080", "-d", code=1)
        assert p.stderr == f"error: {LINE}\n", p.stderr
        assert (await services())["other"]["ports"] == "18081:8080/tcp"
        # a service may change its own ports
        await sw("update", "other", "--publish-rm", "18081", "--publish-add", "18083:8080", "-d")
        assert (await services())["other"]["ports"] == "18083:8080/tcp"
        before = await services()

        stack = tmp_path / "stack.yml"
        stack.write_text(STACK)
        p = await sw("deploy", "-f", str(stack), "--no-push", "-d", code=1)
        assert p.stderr.strip() == f"error: {stack}:10:9: {LINE}", p.stderr
        p = await sw("deploy", "-f", str(stack), "--dry-run", code=1)
        assert f"{stack}:10:9: {LINE}" in p.stderr
        after = await services()
        assert after.keys() == before.keys() and "api" not in after      # nothing applied
        assert {n: s["revision"] for n, s in after.items()} == {n: s["revision"] for n, s in before.items()}

        # the master refuses by itself too (a request that skips the CLI's check)
        spec = dict(after["other"]["spec"], ports=[{"target": 8080, "published": 18080}])
        with pytest.raises(Exception, match=LINE):
            await env.call("POST", "/v1/services", spec)
    finally:
        await env.close()
