"""No acknowledged write lost, none applied twice (Jepsen style), on three real HA masters.

Two real CLI clients (``swarmlet scale``, ``swarmlet update``) write one service while the
leader is killed every 10 s (restarted 3 s later), for 40 s; then the history checker
(``tests/tools/history.py``) walks every stored revision against every request and its
answer. ``bench/ha/run`` runs the issue's 2 minutes with a kill every 20 s.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from swarmlet.client import call_master
from swarmlet.shipped.models import ServiceSpec, to_wire
from tests.conftest import free_port
from tests.tools.hahistory import Clients, cli_env, killer
from tests.tools.hamasters import HAMasters
from tests.tools.history import check
from tests.tools.simagents import SimFleet, roster

pytestmark = pytest.mark.integration
DURATION, KILL_EVERY = 40.0, 10.0


async def test_two_cli_clients_across_leader_kills_lose_nothing_and_double_nothing(tmp_path):
    ha = HAMasters(tmp_path, 3)
    ha.start()
    fleet = None
    try:

        async def call(method, path, body=None):
            return await call_master(ha.cluster, method, path, body, timeout=10)
        deadline = time.monotonic() + 30
        while ha.leader() is None:
            assert time.monotonic() < deadline, "no leader"
            await asyncio.sleep(0.2)
        port = free_port()
        nodes = roster(4, prefix=f"j{port}", base="127.104")
        fleet = SimFleet(ha.admin, nodes, port, run_delay=0.1, suspect_after=0.5, dead_after=1.5)
        await fleet.start()
        for n in nodes:
            await call("POST", "/v1/nodes", {"name": n["name"], "address": n["address"],
                                             "api_port": port, "labels": n["labels"]})
        body = to_wire(ServiceSpec("web", "sim:1", replicas=3, env={"MARK": "u0"}))
        body["update"]["monitor"] = 0.3      # simulated replicas: a short rolling update
        await call("POST", "/v1/services", body)
        clients = Clients(cli_env(str(ha.admin)), "web", DURATION)
        kills = []

        def kill():
            name = ha.leader()
            if name:
                ha.kill(name)
            return name
        kt = threading.Thread(target=lambda: kills.extend(
            killer(kill, lambda n: ha.start([n]), KILL_EVERY, DURATION)), daemon=True)
        kt.start()
        ops = await asyncio.to_thread(clients.run)
        await asyncio.to_thread(kt.join, 60)
        revisions = await call("GET", "/v1/services/web/revisions")
        result = check(ops, revisions, 3, "u0")
        print(result.summary(), f"; {len(kills)} leaders killed")
        if not result.ok:
            import json
            (tmp_path / "history.json").write_text(json.dumps(
                {"ops": [o.__dict__ for o in ops], "kills": kills,
                 "revisions": [{"revision": r["revision"], "created_at": r["created_at"],
                                "replicas": r["spec"]["replicas"],
                                "mark": r["spec"]["env"].get("MARK")} for r in revisions]}, indent=1))
            print("history in", tmp_path / "history.json")
        assert result.ok, "\n".join(result.problems[:20])
        assert len(kills) >= 3
        assert result.counts.get("ok", 0) >= 20
        final = revisions[-1]["spec"]["replicas"]

        async def settled():
            row = await call("GET", "/v1/services/web")
            return (row["replicas"] == final and row["tasks"] == final and row["running"] == final
                    and (row.get("update") or {}).get("status") in (None, "completed"))
        deadline = time.monotonic() + 30
        while not await settled():
            assert time.monotonic() < deadline, f"the service never settled: {await call('GET', '/v1/services/web')}"
            await asyncio.sleep(0.3)
        placed = [tid for n in fleet.nodes.values() for tid in n.tasks]
        assert len(placed) == len(set(placed))
        slots = sorted(t["slot"] for t in await call("GET", "/v1/tasks?service=web")
                       if t["desired"] == "running")
        assert slots == list(range(1, final + 1))       # nothing duplicated, nothing lost
    finally:
        if fleet is not None:
            await fleet.close()
        ha.stop()
