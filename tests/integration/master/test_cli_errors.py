"""Issue 20 item 4: errors print the reason, never the HTTP request (that is --debug's).

The real CLI (subprocess) against a real master on a free port.
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


async def test_errors_say_why_and_debug_shows_the_request(tmp_path, docker_client):
    env = Env(tmp_path / "home", docker_client)
    port = free_port()
    data = json.loads(env.c.path("cluster.json").read_text())
    data["master_port"] = port
    env.c.path("cluster.json").write_text(json.dumps(data))
    env.c = clusterlib.load(env.c.home)
    cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})
    env.master = await run_master(env.c.home, bind="127.0.0.1", config=FAST)
    try:
        p = await asyncio.to_thread(cli, "rm", "nope")
        assert (p.returncode, p.stderr) == (1, "error: no service 'nope'\n")
        p = await asyncio.to_thread(cli, "--debug", "rm", "nope")
        assert p.stderr.splitlines() == [
            "error: no service 'nope'", f"debug: DELETE https://127.0.0.1:{port}/v1/services/nope: 404"]
        # the issue's own example: a 400 from the master, said in its words alone
        p = await asyncio.to_thread(cli, "run", "hello", "--image", "swarmlet-hello:2", "--no-push")
        assert p.returncode == 0, p.stderr
        p = await asyncio.to_thread(cli, "rollback", "hello")
        assert (p.returncode, p.stderr) == (
            1, "error: service 'hello' has no earlier revision to roll back to\n")
        p = await asyncio.to_thread(cli, "--debug", "rollback", "hello")
        assert p.stderr.splitlines()[1:] == [
            f"debug: POST https://127.0.0.1:{port}/v1/services/hello/rollback: 400"], p.stderr
        p = await asyncio.to_thread(cli, "rollback", "nope")
        assert p.returncode == 1 and p.stderr.startswith("error: no service 'nope'"), p.stderr
        assert "https://" not in p.stderr and "40" not in p.stderr
    finally:
        await env.close()
    p = await asyncio.to_thread(cli, "services")
    assert (p.returncode, p.stderr) == (
        1, f"error: cannot reach the master at https://127.0.0.1:{port}: cannot connect: Connection refused\n")
