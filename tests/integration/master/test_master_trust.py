"""Whom the master trusts (issue 13, findings 6 and 10), with a real master, real agents, real TLS.

- A node's certificate serves only as that node: a server answering for
  "ghost" with node a's certificate gets nothing, not even the first request.
- A forged member list (a compromised node's ``/v1/members``) adds no node;
  a member the admin joined (nodes.json) is registered from nodes.json's
  record, never from what gossip claims.
- ``DELETE /v1/nodes/b`` revokes b's certificate: the master's API and every
  agent refuse it within seconds, and the master refuses it as a server.
- The master renews an agent's certificate before it expires, from a CSR,
  and keeps talking to it.

Fake nodes are aiohttp servers on loopback that record every request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import stat
import time
from typing import Any, Dict, List, Optional

import pytest
from aiohttp import web

from swarmlet import cluster as clusterlib
from swarmlet import pki
from swarmlet.shipped import tlsutil
from swarmlet.client import Client, agent_peer
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import ServiceSpec, to_wire
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.master.test_master_daemon import FAST, Env

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-value-for-the-ghost-test"


class Recorder:
    """A fake agent API on loopback serving ``cert_dir``'s certificate; records what reaches it."""

    def __init__(self, env: Env, cert_dir, name: str, members: Optional[List[Dict[str, Any]]] = None):
        self.env, self.cert_dir, self.name = env, cert_dir, name
        self.members = members or []
        self.seen: List[str] = []
        self.bodies: List[str] = []
        self.port = 0
        self.runner: Any = None

    async def start(self) -> "Recorder":
        async def any_route(request: web.Request) -> web.Response:
            self.seen.append(f"{request.method} {request.path}")
            self.bodies.append(await request.text())
            if request.path == "/v1/info":
                return web.json_response({"name": self.name, "cluster_id": self.env.c.id,
                                          "version": "x", "api_port": self.port})
            if request.path == "/v1/tasks":
                return web.json_response({"version": 0, "tasks": []})
            if request.path == "/v1/members":
                return web.json_response(self.members)
            return web.json_response({"version": 1, "applied": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_route)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        ctx = tlsutil.server_context(str(self.cert_dir / "agent.crt"), str(self.cert_dir / "agent.key"),
                                     str(self.env.c.path("ca.crt")))
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def tls_probe(port: int, cert_dir, ca: str) -> str:
    """"http NNN" if a server on ``port`` answers a request made with ``cert_dir``'s cert, else "refused".

    With TLS 1.3 the client's handshake completes before the server has judged
    the client's certificate, so the answer (or its absence) is what tells.
    """
    ctx = tlsutil.client_context(str(cert_dir / "agent.crt"), str(cert_dir / "agent.key"), ca,
                                 check_hostname=False)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 3)
        w.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 3)
        w.close()
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
        return "refused"
    return f"http {line.split()[1].decode()}" if line.startswith(b"HTTP/") else "refused"


def secret_service(image: str, **kw: Any) -> Dict[str, Any]:
    return to_wire(ServiceSpec("vault", image, env={"DB_PASSWORD": SECRET}, **kw))


async def wait_ready(env: Env, names: List[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = await _nodes(env)
        if all(nodes.get(n, {}).get("status") == "ready" for n in names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ready: {names}: {nodes}")


@pytest.fixture
async def env(tmp_path, docker_client):
    e = Env(tmp_path / "home", docker_client)
    fakes: List[Recorder] = []
    e.fakes = fakes
    yield e
    for f in fakes:
        await f.close()
    await e.close()


async def _nodes(env: Env) -> Dict[str, Dict[str, Any]]:
    return {n["name"]: n for n in await env.call("GET", "/v1/nodes")}


async def test_a_node_certificate_serves_only_as_that_node(env, agent_image):
    a = await env.agent("a")
    await env.start_master()
    await env.register(a)
    # "ghost" is registered (say, by a mistake) at a server holding a's certificate.
    ghost = await Recorder(env, env.c.home / "agents" / a.config.name, "ghost").start()
    env.fakes.append(ghost)
    await env.call("POST", "/v1/nodes", {"name": "ghost", "address": "127.0.0.1", "api_port": ghost.port})
    await env.call("POST", "/v1/services", secret_service(agent_image, mode="global"))
    await asyncio.sleep(3.0)
    assert ghost.seen == [], ghost.seen          # refused in the handshake: no request at all
    assert not any(SECRET in b for b in ghost.bodies)
    nodes = await _nodes(env)
    assert nodes["ghost"]["status"] != "ready" and nodes[a.config.name]["status"] == "ready"


async def test_forged_member_list_adds_no_node_and_gossip_never_names_the_address(env, agent_image):
    a = await env.agent("a")
    c = await env.agent("c")              # joined by the admin (nodes.json) while the master was away
    b_dir = env.c.home / "agents" / f"m{env.tag}-b"
    b_dir.mkdir(parents=True)
    kp = env.c.issue_agent(f"m{env.tag}-b", ["127.0.0.1"])   # b is a compromised node: its own cert
    (b_dir / "agent.crt").write_bytes(kp.cert_pem)
    (b_dir / "agent.key").write_bytes(kp.key_pem)
    ghost = await Recorder(env, b_dir, "ghost").start()
    env.fakes.append(ghost)
    forged = [
        {"name": f"m{env.tag}-b", "state": "alive", "meta": {"address": "127.0.0.1"}},
        {"name": "ghost", "address": "127.0.0.1", "port": 7946, "state": "alive", "incarnation": 1,
         "meta": {"address": "127.0.0.1", "api_port": ghost.port, "labels": {"zone": "secret"}}},
        # c is real, but gossip lies about where it is: the master must use nodes.json's address
        {"name": c.config.name, "state": "alive",
         "meta": {"address": "127.0.0.1", "api_port": ghost.port, "labels": {"zone": "secret"}}},
    ]
    b = await Recorder(env, b_dir, f"m{env.tag}-b", members=forged).start()
    env.fakes.append(b)
    await env.start_master()
    await env.register(a)
    await env.call("POST", "/v1/nodes", {"name": f"m{env.tag}-b", "address": "127.0.0.1", "api_port": b.port})
    clusterlib.save_node(env.c, clusterlib.NodeRecord(name=c.config.name, address="127.0.0.1",
                                                      ssh_host="127.0.0.1", api_port=c.api_port))
    await env.call("POST", "/v1/services", secret_service(agent_image,
                                                          constraints=("node.labels.zone==secret",)))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        nodes = await _nodes(env)
        if nodes.get(c.config.name, {}).get("status") == "ready":
            break
        await asyncio.sleep(0.2)
    assert any(s == "GET /v1/members" for s in b.seen), b.seen   # the forged list was read
    nodes = await _nodes(env)
    assert "ghost" not in nodes, nodes
    assert nodes[c.config.name]["status"] == "ready"
    assert nodes[c.config.name]["api_port"] == c.api_port and nodes[c.config.name]["labels"] == {}
    assert ghost.seen == [], ghost.seen
    events = await env.call("GET", "/v1/events?limit=1000")
    assert not any(e["subject"] == "ghost" for e in events)


async def test_node_removal_revokes_its_certificate_everywhere_within_seconds(env):
    a, b = await env.agent("a"), await env.agent("b")
    await env.start_master()
    await env.register(a)
    await env.register(b)
    ca = str(env.c.path("ca.crt"))
    b_dir = env.c.home / "agents" / b.config.name
    mport = env.master.runner.addresses[0][1]
    await wait_ready(env, [a.config.name, b.config.name])
    # Before: b's certificate passes TLS everywhere (and is then refused by role).
    assert await tls_probe(mport, b_dir, ca) == "http 403"
    assert await tls_probe(a.api_port, b_dir, ca) == "http 403"
    t0 = time.monotonic()
    await env.call("DELETE", f"/v1/nodes/{b.config.name}")
    took: Dict[str, float] = {}
    while time.monotonic() - t0 < 5.0 and len(took) < 2:
        for what, port in (("master", mport), ("agent a", a.api_port)):
            if what not in took and await tls_probe(port, b_dir, ca) == "refused":
                took[what] = time.monotonic() - t0
        await asyncio.sleep(0.05)
    assert set(took) == {"master", "agent a"}, took
    print(f"revoked certificate refused after: {took}")
    serial = pki.cert_info((b_dir / "agent.crt").read_bytes()).serial
    with open(a.denylist_file.path) as fh:
        saved = json.load(fh)
    assert f"{serial:X}" in {e["serial"] for e in saved["revoked"]}
    # The master refuses it as a server too: b re-registered as is never becomes ready.
    await env.call("POST", "/v1/nodes", {"name": b.config.name, "address": "127.0.0.1",
                                         "api_port": b.api_port})
    await asyncio.sleep(2.0)
    assert (await _nodes(env))[b.config.name]["status"] != "ready"
    # A restarted agent refuses it from its saved list, with no master around.
    await env.master.close()
    env.master = None
    await a.stop()
    a2 = await env.agent("a")
    assert await tls_probe(a2.api_port, b_dir, ca) == "refused"


async def test_master_renews_agent_certificates_before_they_expire(env):
    a = await env.agent("a")
    a_dir = env.c.home / "agents" / a.config.name
    first = pki.cert_info((a_dir / "agent.crt").read_bytes())
    key0 = (a_dir / "agent.key").read_bytes()
    life = 8.0   # seconds: renewed at half-life, so twice within the test
    cfg = dataclasses.replace(FAST, agent_cert_days=life / 86400, cert_interval=0.2)
    env.master = await run_master(env.c.home, bind="127.0.0.1", port=0, config=cfg)
    await env.register(a)
    infos = [first]
    deadline = time.monotonic() + 3 * life
    while time.monotonic() < deadline and len(infos) < 3:
        info = pki.cert_info((a_dir / "agent.crt").read_bytes())
        if info.serial != infos[-1].serial:
            infos.append(info)
        await asyncio.sleep(0.1)
    assert len(infos) == 3, "expected two renewals"
    now = infos[-1]
    assert now.name == a.config.name and now.role == "agent" and abs(now.lifetime - life) < 2
    assert (a_dir / "agent.key").read_bytes() != key0
    assert stat.S_IMODE(os.stat(a_dir / "agent.key").st_mode) == 0o600
    # After the first renewed certificate expired, a fresh connection still works.
    await asyncio.sleep(max(0.0, infos[1].not_after - time.time() + 0.5))
    async with Client.for_cluster(env.c) as client:
        served = await client.info(agent_peer(a.config.name, "127.0.0.1", a.api_port))
    assert served["name"] == a.config.name
    assert (await _nodes(env))[a.config.name]["status"] == "ready"
    assert env.master.master.certs.counters["renewals"] >= 2


async def test_image_push_and_logs_reach_a_node_only_through_its_own_certificate(env):
    """The CLI side of finding 6: image push and logs check each agent too."""
    from swarmlet import images as imagelib
    from swarmlet.cli.logs import LogFollower
    from swarmlet.shipped.exceptions import PeerRefused

    a = await env.agent("a")
    fake = await Recorder(env, env.c.home / "agents" / a.config.name, "b").start()   # a's cert
    env.fakes.append(fake)
    node_b = imagelib.Node("b", "127.0.0.1", fake.port)
    (p,) = await imagelib.check("img:1", [node_b], local_id="sha256:x", cluster=env.c)
    assert p.state == "unreachable"
    assert p.error == f"its certificate is agent {a.config.name!r}, expected agent 'b'"
    async with Client.for_cluster(env.c) as client:
        with pytest.raises(PeerRefused, match="expected agent 'b'"):
            await client.call(node_b.peer, "GET", "/v1/info")
        # the real node at the same place passes
        assert (await client.info(agent_peer(a.config.name, "127.0.0.1", a.api_port)))["name"] == \
            a.config.name

    async def master(method: str, path: str, body: Any = None) -> Any:
        if path.startswith("/v1/nodes"):
            return [{"name": "b", "address": "127.0.0.1", "api_port": fake.port}]
        return [{"task": "web.1.x", "node": "b", "state": "running", "container_id": "c",
                 "desired": "running"}]

    lines: List[str] = []
    lf = LogFollower("web", master, Client.for_cluster(env.c), lines.append, follow=False, tail=None,
                     since=None, timestamps=False, color=False)
    await lf.run()
    assert fake.seen == [] and lines == []
