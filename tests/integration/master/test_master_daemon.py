"""The master with real agents (in-process), real dockerd, real mutual TLS.

Each test makes a cluster home with ``swarmlet.cluster.init``, starts agents
of that cluster (gossip off: liveness then rests on the master's own polls),
starts the master on an ephemeral port and drives it through its HTTPS API
with the ``cli`` certificate, as the CLI does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.daemon import MasterConfig
from swarmlet.master.liveness import LivenessConfig
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from swarmlet.client import MASTER, Client, Peer
from swarmlet.shipped.exceptions import APIError
from swarmlet_agent.config import AgentConfig
from swarmlet_agent.daemon import Agent
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

FAST = MasterConfig(poll_interval=0.2, tick_interval=0.2, reconcile_interval=1.0, stats_interval=1.0,
                    request_timeout=1.0, liveness=LivenessConfig(down_after=1.0, restart_grace=2.0))
# (compressed time: an agent stopped here leaves its host up, so its connections are refused
# and the node is down after restart_grace, 15 s by default)


class Env:
    def __init__(self, home: Path, docker_client) -> None:
        home.mkdir(mode=0o700)
        self.c = clusterlib.init(name="mtest", home=home)
        self.docker = docker_client
        self.tag = uuid.uuid4().hex[:6]
        self.agents: Dict[str, Agent] = {}
        self.names: List[str] = []
        self.master: Any = None
        self.client = Client.for_cluster(self.c, timeout=10)

    async def agent(self, short: str, **over: Any) -> Agent:
        name = f"m{self.tag}-{short}"
        d = self.c.home / "agents" / name
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "agent.crt").exists():
            kp = self.c.issue_agent(name, ["127.0.0.1"])
            (d / "agent.crt").write_bytes(kp.cert_pem)
            (d / "agent.key").write_bytes(kp.key_pem)
        kw: Dict[str, Any] = dict(
            name=name, address="127.0.0.1", api_port=0, api_bind="127.0.0.1", gossip=False, ingress=False, discovery=False,
            cluster_id=self.c.id, state_dir=str(d / "state"), cert=str(d / "agent.crt"),
            key=str(d / "agent.key"), ca=str(self.c.path("ca.crt")), stats_interval=1.0,
            resync_interval=2.0, stop_timeout=1)
        kw.update(over)
        a = Agent(AgentConfig(**kw))
        await a.start()
        self.agents[name] = a
        if name not in self.names:
            self.names.append(name)
        return a

    async def start_master(self) -> None:
        self.master = await run_master(self.c.home, bind="127.0.0.1", port=0, config=FAST)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        port = int(self.master.url.rsplit(":", 1)[1])
        return await self.client.call(Peer(MASTER, "127.0.0.1", port), method, path, body, timeout=10)

    async def register(self, a: Agent, move: bool = False) -> None:
        """Register ``a`` and wait until the master has polled it ready (placement needs that)."""
        await self.call("POST", "/v1/nodes", {"name": a.config.name, "address": "127.0.0.1",
                                              "api_port": a.api_port, "change_address": move})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(n["name"] == a.config.name and n["status"] == "ready"
                   for n in await self.call("GET", "/v1/nodes")):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{a.config.name} not ready 15 s after its registration")

    async def wait(self, what: str, pred: Callable[[List[Dict[str, Any]]], bool],
                   timeout: float = 30.0, watch: Callable[[List[Dict[str, Any]]], None] = None):
        deadline = time.monotonic() + timeout
        rows: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = await self.call("GET", "/v1/tasks")
            if watch:
                watch(rows)
            if pred(rows):
                return rows
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {rows}")

    def containers(self, service: str) -> List[Any]:
        out = []
        for n in self.names:
            out += self.docker.containers.list(filters={"label": [f"io.swarmlet.node={n}",
                                                                  f"io.swarmlet.service={service}"]})
        return out

    async def close(self) -> None:
        await self.client.close()
        if self.master is not None:
            await self.master.close()
        for a in self.agents.values():
            try:
                await a.stop()
            except Exception:  # already stopped by the test
                pass
        for n in self.names:
            for c in self.docker.containers.list(all=True, filters={"label": f"io.swarmlet.node={n}"}):
                try:
                    c.remove(force=True)
                except Exception:  # gone already
                    pass


@pytest.fixture
async def env(tmp_path, docker_client):
    e = Env(tmp_path / "home", docker_client)
    yield e
    await e.close()


def web(image: str, replicas: int, **kw: Any) -> Dict[str, Any]:
    return to_wire(ServiceSpec("web", image, replicas=replicas, ports=(PortSpec(8080),),
                               health=HealthCheck(kind="http", path="/health", interval=0.5), **kw))


def healthy(rows, n: int) -> bool:
    live = [r for r in rows if r["desired"] == "running"]
    return len(live) == n and all(r["state"] == "running" and r["health"] == "healthy" for r in live)


def per_node(rows) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for r in rows:
        if r["desired"] == "running":
            out[r["node"]] = out.get(r["node"], 0) + 1
    return out


async def test_run_spread_scale_and_api(env, agent_image):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    out = await env.call("POST", "/v1/services?create=1", web(agent_image, 3))
    assert out["revision"] == 1
    with pytest.raises(APIError, match="^service 'web' exists$") as err:
        await env.call("POST", "/v1/services?create=1", web(agent_image, 3))
    assert err.value.status == 409 and err.value.request.endswith(": 409")   # shown by --debug
    rows = await env.wait("3 healthy replicas", lambda r: healthy(r, 3))
    assert sorted(per_node(rows).values()) == [1, 2]
    assert {k for k in rows[0]} >= {"service", "task", "node", "state", "health", "reason", "revision"}
    assert len(env.containers("web")) == 3
    st = await env.call("GET", "/v1/status")
    assert st["nodes"]["ready"] == 2 and st["tasks"]["healthy"] == 3
    await env.call("PATCH", "/v1/services/web", {"replicas": 1})
    await env.wait("scaled to 1", lambda r: healthy(r, 1) and len(env.containers("web")) == 1)
    svc = await env.call("GET", "/v1/services/web")
    assert svc["revision"] == 2 and svc["replicas"] == 1 and svc["running"] == 1
    # an unplaceable service is pending with the scheduler's explanation
    await env.call("POST", "/v1/services", to_wire(ServiceSpec(
        "big", agent_image, constraints=("node.labels.zone==nowhere",))))
    rows = await env.wait("pending big", lambda r: any(x["service"] == "big" and x["reason"] for x in r))
    (big,) = [r for r in rows if r["service"] == "big"]
    assert big["state"] == "pending" and big["node"] is None
    assert big["reason"] == "2 nodes fail constraint node.labels.zone==nowhere"
    await env.call("DELETE", "/v1/services/web")
    await env.wait("web removed", lambda r: not env.containers("web"))


async def test_dead_node_replaced_then_stale_task_stopped(env, agent_image):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    await env.call("POST", "/v1/services", web(agent_image, 2))
    rows = await env.wait("2 healthy", lambda r: healthy(r, 2))
    assert per_node(rows) == {a.config.name: 1, b.config.name: 1}
    await b.stop()                      # the node's agent dies; its container keeps running
    t0 = time.monotonic()
    rows = await env.wait("replaced on a", lambda r: healthy(r, 2) and per_node(r) == {a.config.name: 2})
    replaced_in = time.monotonic() - t0
    assert replaced_in < 10, replaced_in
    assert len(env.containers("web")) == 3  # b's stale one still runs: b is unreachable
    b2 = await env.agent("b")           # it comes back (new API port): registered again
    with pytest.raises(APIError, match="needs change_address"):   # a move is never implicit
        await env.register(b2)
    await env.register(b2, move=True)
    await env.wait("stale task stopped", lambda r: len(env.containers("web")) == 2, timeout=20)
    rows = await env.call("GET", "/v1/tasks")
    assert healthy(rows, 2)
    nodes = await env.call("GET", "/v1/nodes")
    assert {n["name"]: n["status"] for n in nodes} == {a.config.name: "ready", b.config.name: "ready"}


async def test_drain_moves_without_dropping_capacity(env, agent_image):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    await env.call("POST", "/v1/services", web(agent_image, 2))
    await env.wait("2 healthy", lambda r: healthy(r, 2))
    lowest = [2]

    def watch(rows):
        lowest[0] = min(lowest[0], sum(1 for r in rows if r["state"] == "running"
                                       and r["health"] == "healthy"))

    out = await env.call("POST", f"/v1/nodes/{a.config.name}/drain")
    assert out["availability"] == "drain"
    await env.wait("all on b", lambda r: healthy(r, 2) and per_node(r) == {b.config.name: 2}
                   and len(env.containers("web")) == 2, watch=watch)
    assert lowest[0] >= 2, "capacity dropped during drain"
    nodes = {n["name"]: n["status"] for n in await env.call("GET", "/v1/nodes")}
    assert nodes[a.config.name] == "draining"
    # activate + rebalance: spread again, still start-first
    await env.call("POST", f"/v1/nodes/{a.config.name}/activate")
    await env.call("POST", "/v1/rebalance")
    await env.wait("rebalanced", lambda r: healthy(r, 2) and sorted(per_node(r).values()) == [1, 1]
                   and len(env.containers("web")) == 2, watch=watch)
    assert lowest[0] >= 2, "capacity dropped during rebalance"


async def test_master_restart_adopts_running_tasks(env, agent_image):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    await env.call("POST", "/v1/services", web(agent_image, 3))
    before = await env.wait("3 healthy", lambda r: healthy(r, 3))
    containers = sorted(c.id for c in env.containers("web"))
    await env.master.close()
    env.master = None
    await env.start_master()            # same home, same state.db
    await asyncio.sleep(3)              # real agents and real polls: let it run a few passes
    after = await env.wait("3 healthy", lambda r: healthy(r, 3))
    assert sorted(r["task"] for r in after) == sorted(r["task"] for r in before)
    assert sorted(c.id for c in env.containers("web")) == containers
