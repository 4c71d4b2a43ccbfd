"""The simulated agents of bench/scale speak the agent API well enough for the real master.

A real master (in-process, real store, real mutual TLS) and a fleet of simulated
agents on loopback addresses: nodes register and turn ready, replicas run and turn
healthy, a killed node is declared down and its replicas run elsewhere, a node
that comes back is ready again. A foreign certificate cannot call a simulated
agent, and an agent's certificate is refused (role), as on a real agent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from swarmlet import cluster as clusterlib
from swarmlet import pki
from swarmlet.master.runner import run_master
from swarmlet.client import MASTER, Client, Peer
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from tests.conftest import free_port
from tests.tools.simagents import SimFleet, roster

pytestmark = pytest.mark.integration


async def _until(what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_real_master_runs_replicas_on_simulated_agents(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="sim", home=home)
    port = free_port()
    nodes = roster(12, prefix=f"s{port}", base="127.101")
    fleet = SimFleet(home, nodes, port, run_delay=0.1, suspect_after=0.3, dead_after=1.0)
    await fleet.start()
    m = await run_master(home, bind="127.0.0.1", port=0)
    client = Client.for_cluster(c, timeout=10)
    peer = Peer(MASTER, "127.0.0.1", int(m.url.rsplit(":", 1)[1]))

    async def call(method: str, path: str, body: Any = None) -> Any:
        return await client.call(peer, method, path, body, timeout=10)
    try:
        for n in nodes:
            await call("POST", "/v1/nodes", {"name": n["name"], "address": n["address"],
                                             "api_port": port, "labels": n["labels"]})
        await _until("12 ready nodes", lambda: _ready(call, 12))
        spec = ServiceSpec("web", "sim:1", replicas=24, ports=(PortSpec(8080),),
                           health=HealthCheck(kind="http", path="/health"))
        await call("POST", "/v1/services", to_wire(spec))
        await _until("24 healthy replicas", lambda: _healthy(call, 24))
        assert fleet.counters()["running"] == 24
        assert len(fleet.log) == 24   # each replica arrived once, at one node

        victim = nodes[3]["name"]
        on_victim = [r for r in await call("GET", "/v1/tasks") if r["node"] == victim]
        assert on_victim, "spread placement puts replicas on every node"
        await fleet.kill([victim])
        await _until("the victim down", lambda: _status(call, victim, "down"))

        async def moved() -> bool:
            rows = [r for r in await call("GET", "/v1/tasks") if r["desired"] == "running"]
            return (len(rows) == 24 and all(r["node"] != victim for r in rows)
                    and all(r["health"] == "healthy" for r in rows))
        await _until("its replicas healthy elsewhere", moved)
        assert all(t[1] != victim for t in fleet.log[24:])   # replacements went to live nodes

        await fleet.revive([victim])
        await _until("the victim ready again", lambda: _status(call, victim, "ready"))
    finally:
        await m.close()
        await fleet.close()


async def test_simulated_agents_check_the_callers_certificate(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="sim", home=home)
    port = free_port()
    nodes = roster(1, prefix=f"c{port}", base="127.102")
    fleet = SimFleet(home, nodes, port)
    await fleet.start()
    url = f"https://{nodes[0]['address']}:{port}/v1/info"
    try:
        async with aiohttp.ClientSession() as s:
            master = c.client_ssl("master")
            master.check_hostname = False
            async with s.get(url, ssl=master) as r:
                assert r.status == 200 and (await r.json())["name"] == nodes[0]["name"]
            kp = pki.issue(c.ca(), "other-agent", "agent", ["127.0.0.1"])
            (tmp_path / "a.crt").write_bytes(kp.cert_pem)
            (tmp_path / "a.key").write_bytes(kp.key_pem)
            agent = ssl.create_default_context(cafile=str(c.path("ca.crt")))
            agent.check_hostname = False
            agent.load_cert_chain(str(tmp_path / "a.crt"), str(tmp_path / "a.key"))
            async with s.get(url, ssl=agent) as r:
                assert r.status == 403
            foreign = pki.create_ca("other")
            fk = pki.issue(foreign, "master", "master")
            (tmp_path / "f.crt").write_bytes(fk.cert_pem)
            (tmp_path / "f.key").write_bytes(fk.key_pem)
            bad = ssl.create_default_context(cafile=str(c.path("ca.crt")))
            bad.check_hostname = False
            bad.load_cert_chain(str(tmp_path / "f.crt"), str(tmp_path / "f.key"))
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                async with s.get(url, ssl=bad) as r:
                    await r.read()
    finally:
        await fleet.close()


async def _ready(call: Any, n: int) -> bool:
    return (await call("GET", "/v1/status"))["nodes"]["ready"] == n


async def _healthy(call: Any, n: int) -> bool:
    t = (await call("GET", "/v1/status"))["tasks"]
    return t["healthy"] == n and t["total"] == n


async def _status(call: Any, name: str, want: str) -> bool:
    return any(r["name"] == name and r["status"] == want for r in await call("GET", "/v1/nodes"))
