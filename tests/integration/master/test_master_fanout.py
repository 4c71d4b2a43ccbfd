"""What the master sends to every node, kept small: found by bench/scale at 1,000 nodes.

A real master (in-process, real store, real mutual TLS) and simulated agents on
loopback addresses (``tests/tools/simagents.py``):

- a routes push that got no answer (a hung host) is followed by a delta against
  the version the node acknowledged before, never the whole table (at 1,000
  nodes and 10,000 replicas a whole table is about 1 MB, and one after every
  timeout kept a busy master busy);
- a node that holds a newer table than the master believes (a push whose answer
  was lost had landed) refuses the next delta with a 409 naming the table it holds,
  and is sent a delta from that table, not the whole table;
- a node far behind (down while the routes moved on more than the 16 newest
  versions) is sent a delta against the table it holds, not the whole table;
- the update a node is sent is the same, byte for byte decoded, whether the
  pusher encodes it for that node or splices the node's name into the update
  encoded once for every node holding that version;
- an agent without the edge channel (404 to ``PUT /v1/edge``, an older agent) is
  not sent the edge update after every poll answer; once its poll reports an
  edge version (upgraded), it is sent the update again.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.client import MASTER, Client, Peer
from swarmlet.master.daemon import MasterConfig
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from tests.conftest import free_port
from tests.tools.simagents import SimFleet, roster

pytestmark = pytest.mark.integration


async def _until(what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _cluster(tmp_path: Path, n: int, prefix: str, base: str, config: MasterConfig,
                   **fleet_kw: Any) -> Any:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="fan", home=home)
    port = free_port()
    nodes = roster(n, prefix=f"{prefix}{port}", base=base)
    # gossip never buries a frozen node here: the test decides when it answers again
    fleet = SimFleet(home, nodes, port, run_delay=0.1, suspect_after=120, dead_after=240, **fleet_kw)
    await fleet.start()
    running = await run_master(home, bind="127.0.0.1", port=0, config=config)
    client = Client.for_cluster(c, timeout=10)
    peer = Peer(MASTER, "127.0.0.1", int(running.url.rsplit(":", 1)[1]))

    async def call(method: str, path: str, body: Any = None) -> Any:
        return await client.call(peer, method, path, body, timeout=10)
    for node in nodes:
        await call("POST", "/v1/nodes", {"name": node["name"], "address": node["address"],
                                         "api_port": port, "labels": node["labels"]})
    await _until("every node ready", lambda: _ready(call, n))
    return running, fleet, client, call, nodes


async def _ready(call: Any, n: int) -> bool:
    return (await call("GET", "/v1/status"))["nodes"]["ready"] == n


async def _close(running: Any, fleet: SimFleet, client: Client) -> None:
    await client.close()
    await running.close()
    await fleet.close()


async def _web_everywhere(call: Any, fleet: SimFleet, m: Any, nodes: Any) -> Callable[[], bool]:
    """3 healthy replicas of web on every node's routes; the "every node holds the current
    routes" check, for the test to wait on again."""
    spec = ServiceSpec("web", "sim:1", replicas=3, ports=(PortSpec(8080),),
                       health=HealthCheck(kind="http", path="/health"))
    await call("POST", "/v1/services", to_wire(spec))

    def converged() -> bool:
        return all(fleet.nodes[n["name"]].routes_version == m.pusher.version
                   and m.pusher._nodes[n["name"]].routes_acked == m.pusher.version for n in nodes)

    async def healthy() -> bool:
        t = (await call("GET", "/v1/status"))["tasks"]
        return t["healthy"] == 3 and t["total"] == 3
    await _until("3 healthy replicas", healthy)
    await _until("every node holding the routes", converged)
    return converged


async def test_a_routes_push_without_answer_is_followed_by_a_delta(tmp_path: Path) -> None:
    cfg = MasterConfig(request_timeout=1.0, long_poll=2.0)
    running, fleet, client, call, nodes = await _cluster(tmp_path, 3, "r", "127.103", cfg)
    m = running.master
    try:
        converged = await _web_everywhere(call, fleet, m, nodes)

        hung, other = nodes[2]["name"], nodes[0]["name"]
        sim = fleet.nodes[hung]
        sent_before = len(sim.routes_log)
        failures = m.counters["push_failures"]
        fleet.freeze([hung])
        task = next(iter(fleet.nodes[other].tasks))
        fleet.set_health(other, task, "unhealthy")      # a route change for every node
        await _until("the push to the hung node timed out",
                     lambda: m.counters["push_failures"] > failures)
        fleet.thaw([hung])
        await _until("the hung node holding the routes again", converged)
        after = sim.routes_log[sent_before:]
        assert after, "nothing sent to the node after it answered again"
        assert all(base != 0 for _version, base in after), (
            f"the whole table was sent after a push without answer: {after}")

        # the update spliced per node is the one the node would be sent on its own
        for acked in (None, m.pusher.version - 1, m.pusher.version):
            version, body = m.pusher.body_for(nodes[0]["name"], acked)
            assert version == m.pusher.version
            assert json.loads(body) == to_wire(m.pusher.update_for(nodes[0]["name"], acked))
    finally:
        await _close(running, fleet, client)


async def test_a_409_naming_a_table_we_have_is_followed_by_a_delta_from_it(tmp_path: Path) -> None:
    cfg = MasterConfig(request_timeout=1.0, long_poll=2.0)
    running, fleet, client, call, nodes = await _cluster(tmp_path, 3, "q", "127.107", cfg)
    m = running.master
    try:
        converged = await _web_everywhere(call, fleet, m, nodes)
        lost, other = nodes[2]["name"], nodes[0]["name"]
        sim = fleet.nodes[lost]
        failures = m.counters["push_failures"]
        acked = m.pusher._nodes[lost].routes_acked
        fleet.freeze([lost])
        fleet.set_health(other, next(iter(fleet.nodes[other].tasks)), "unhealthy")
        await _until("the push to the frozen node timed out",
                     lambda: m.counters["push_failures"] > failures)
        assert m.pusher._nodes[lost].routes_acked == acked       # no answer: what it had
        # ... but the push had landed before the answer was lost: the node holds the new table
        sim.routes_version = m.pusher.version
        sent_before = len(sim.routes_log)
        fleet.thaw([lost])
        fleet.set_health(other, next(iter(fleet.nodes[other].tasks)), "healthy")
        await _until("the node holding the routes again", converged)
        after = sim.routes_log[sent_before:]
        assert any(base == acked for _v, base in after), after     # the delta it refused (409)
        assert all(base != 0 for _v, base in after), (
            f"the whole table was sent after a 409 naming a table the master has: {after}")
    finally:
        await _close(running, fleet, client)


async def test_no_edge_update_after_every_poll_to_an_agent_without_the_channel(tmp_path: Path) -> None:
    cfg = MasterConfig(long_poll=0.2)     # a poll answer every 0.2 s from each node
    running, fleet, client, call, nodes = await _cluster(tmp_path, 3, "e", "127.104", cfg, edge=False)
    m = running.master
    try:
        await asyncio.sleep(2.0)          # about ten poll answers per node
        sent = fleet.requests.get("PUT /v1/edge", 0)
        assert sent <= 2 * len(nodes), f"{sent} edge updates to {len(nodes)} nodes in 2 s"
        # the agent is upgraded: its poll reports an edge version, and it is sent the update
        up = fleet.nodes[nodes[1]["name"]]
        up.edge_channel = True
        up.changed()
        await _until("the upgraded node holding the edge update",
                     lambda: up.edge[2] == m.edge.version and m.edge.version > 0)
    finally:
        await _close(running, fleet, client)


async def test_a_node_far_behind_gets_a_delta_against_the_table_it_holds(tmp_path: Path) -> None:
    cfg = MasterConfig(request_timeout=1.0, long_poll=2.0)
    running, fleet, client, call, nodes = await _cluster(tmp_path, 3, "b", "127.105", cfg)
    m = running.master
    try:
        spec = ServiceSpec("web", "sim:1", replicas=3, ports=(PortSpec(8080),),
                           health=HealthCheck(kind="http", path="/health"))
        await call("POST", "/v1/services", to_wire(spec))

        async def healthy() -> bool:
            t = (await call("GET", "/v1/status"))["tasks"]
            return t["healthy"] == 3 and t["total"] == 3
        await _until("3 healthy replicas", healthy)

        def converged() -> bool:
            return all(fleet.nodes[n["name"]].routes_version == m.pusher.version
                       and m.pusher._nodes[n["name"]].routes_acked == m.pusher.version for n in nodes)
        await _until("every node holding the routes", converged)
        away, other = nodes[2]["name"], nodes[0]["name"]
        sim = fleet.nodes[away]
        held = sim.routes_version
        await fleet.kill([away])        # refused: gossip only suspects it for minutes
        task = next(iter(fleet.nodes[other].tasks))
        for i in range(24):             # more route versions than the newest ones always kept
            v, want = m.pusher.version, "unhealthy" if i % 2 == 0 else "healthy"
            fleet.set_health(other, task, want)
            await _until(f"the master seeing {want}, routes past {v}",
                         lambda: m.tasks[task].health.value == want and m.pusher.version > v)
        assert m.pusher.version - held > 16
        sent_before = len(sim.routes_log)
        await fleet.revive([away])
        await _until("the node back and holding the routes", converged)
        after = sim.routes_log[sent_before:]
        assert after and all(base == held for _version, base in after), (
            f"the node held version {held} and was sent {after}")
    finally:
        await _close(running, fleet, client)
