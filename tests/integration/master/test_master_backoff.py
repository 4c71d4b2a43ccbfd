"""A task that cannot start, against a real master, a real agent and dockerd (issue 20, item 2).

The image's registry is 127.0.0.1:9, where nothing listens: every pull fails at once
(no traffic leaves loopback). The times are the defaults divided by ten (restart
delay 0.05 s, cap 3 s, reset 1 s) so 15 s here is 2.5 minutes of ``bench/backoff/run``
(which runs 5) with the same logic: 6 attempts in the first 3.2 s, then one every 3 s,
about 10 in all. Without backoff the master replaced the task on every poll (0.2 s here:
75 attempts in 15 s) with three events each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.backoff import Backoff
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import RestartPolicy, ServiceSpec, to_wire
from tests.conftest import free_port
from tests.integration.master.test_master_daemon import FAST, Env
from tests.support import CLI

pytestmark = pytest.mark.integration

IMAGE = "127.0.0.1:9/does-not-exist:1"
TENTH = dataclasses.replace(FAST, backoff=Backoff(max_delay=3.0, reset_after=1.0))


async def test_a_failing_pull_backs_off_with_one_event_and_ps_shows_why(tmp_path, docker_client):
    env = Env(tmp_path / "home", docker_client)
    try:
        data = json.loads(env.c.path("cluster.json").read_text())
        data["master_port"] = free_port()
        env.c.path("cluster.json").write_text(json.dumps(data))
        env.c = clusterlib.load(env.c.home)
        a = await env.agent("a")
        env.master = await run_master(env.c.home, bind="127.0.0.1", config=TENTH)
        await env.register(a)
        await env.call("POST", "/v1/services", to_wire(ServiceSpec(
            "bad", IMAGE, restart=RestartPolicy(delay=0.05))))
        t0 = time.monotonic()
        seen = set()
        while time.monotonic() - t0 < 15:
            rows = await env.call("GET", "/v1/tasks?service=bad&all=1")
            seen |= {r["task"] for r in rows if r["node"]}
            await asyncio.sleep(0.2)
        events = [e for e in await env.call("GET", "/v1/events?limit=10000")
                  if e["subject"] == "bad" or e["subject"].startswith("bad.")]
        print(f"15 s: {len(seen)} attempts, {len(events)} events:",
              *[e["message"] for e in events], sep="\n  ")
        assert 5 <= len(seen) < 18, (len(seen), sorted(seen))
        assert len(events) < 30, [e["message"] for e in events]
        failed = [e["message"] for e in events if "failed on" in e["message"]]
        assert len(failed) == 1 and "times in a row)" in failed[0], failed
        assert f"pull {IMAGE} failed" in failed[0]

        cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})
        p = await asyncio.to_thread(cli, "ps", "bad", timeout=60)
        assert p.returncode == 0, p.stderr
        (row,) = p.stdout.splitlines()[1:]
        print(p.stdout)
        assert f"pull {IMAGE} failed" in row, p.stdout       # the REASON column
        (task,) = json.loads((await asyncio.to_thread(cli, "ps", "bad", "-o", "json")).stdout)
        assert task["reason"].startswith(f"pull {IMAGE} failed"), task
        assert task["failures"] >= 5
    finally:
        await env.close()
