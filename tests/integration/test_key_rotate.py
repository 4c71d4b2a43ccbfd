"""``swarmlet key rotate`` against real in-process agents gossiping on 127.0.0.x UDP:
real mutual TLS to ``PUT /v1/gossip/keys``, real key files, real gossip.

While the rotation runs, every agent's gossip counters are sampled: no packet may be
refused (dropped_auth) and nobody suspected. A registered node that cannot be reached
is reported alone, with what to do; the others finish. Then ``--sync`` brings a node
that missed a rotation back into the mesh, and an interrupted rotation resumes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

from swarmlet import cluster as clusterlib
from swarmlet import images as imagelib
from swarmlet import keyrotate
from swarmlet_agent.config import AgentConfig
from swarmlet_agent.daemon import Agent
from swarmlet_agent.gossipkeys import fingerprint

pytestmark = pytest.mark.integration


def _udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Mesh:
    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700)
        self.c = clusterlib.init(name="krtest", home=home)
        self.tag = uuid.uuid4().hex[:6]
        self.agents: List[Agent] = []
        self.port = _udp_port("127.0.0.1")

    async def agent(self, i: int, keys_text: str = "") -> Agent:
        name = f"k{self.tag}-{i}"
        d = self.c.home / "agents" / name
        d.mkdir(parents=True, exist_ok=True)
        kp = self.c.issue_agent(name, ["127.0.0.1"])
        (d / "agent.crt").write_bytes(kp.cert_pem)
        (d / "agent.key").write_bytes(kp.key_pem)
        (d / "gossip.keys").write_text(keys_text or self.c.gossip_keys_text())
        os.chmod(d / "gossip.keys", 0o600)
        host = f"127.0.0.{i + 1}"
        seeds = (f"127.0.0.1:{self.port}",) if i else ()
        a = Agent(AgentConfig(
            name=name, address=host, api_port=0, api_bind="127.0.0.1", gossip=True,
            gossip_bind=host, gossip_port=self.port, seeds=seeds, ingress=False,
            discovery=False, cluster_id=self.c.id, state_dir=str(d / "state"),
            cert=str(d / "agent.crt"), key=str(d / "agent.key"), ca=str(self.c.path("ca.crt")),
            gossip_keys=str(d / "gossip.keys"), stats_interval=1.0, resync_interval=5.0,
            stop_timeout=1))
        await a.start()
        self.agents.append(a)
        return a

    def targets(self, agents=None) -> List[imagelib.Node]:
        return [imagelib.Node(a.config.name, "127.0.0.1", a.api_port) for a in agents or self.agents]

    def alive_everywhere(self, agents=None) -> bool:
        agents = agents or self.agents
        names = {a.config.name for a in agents}
        return all({m["name"] for m in a.members.members() if m["state"] == "alive"} >= names
                   for a in agents)

    async def close(self) -> None:
        for a in self.agents:
            try:
                await a.stop()
            except Exception:  # already stopped by the test
                pass


@pytest.fixture
async def mesh(tmp_path, docker_client):
    m = Mesh(tmp_path / "home")
    yield m
    await m.close()


async def _until(cond, timeout: float) -> None:
    for _ in range(int(timeout / 0.1)):
        if cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def _counters(agents) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for a in agents:
        s = a.members.stats()
        for k in ("dropped_auth", "suspicions", "deaths", "dropped_unknown_sender"):
            out[k] = out.get(k, 0) + int(s.get(k, 0))
    return out


async def test_rotation_refuses_no_packet_and_reports_an_unreachable_node(mesh):
    agents = [await mesh.agent(i) for i in range(3)]
    await _until(mesh.alive_everywhere, 20)
    old = mesh.c.gossip_keys()
    before = _counters(agents)
    samples: List[Dict[str, int]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            samples.append(_counters(agents))
            assert mesh.alive_everywhere(), "someone stopped being alive during the rotation"
            await asyncio.sleep(0.05)

    gone = imagelib.Node("k-gone", "127.0.0.1", _udp_port("127.0.0.1"))  # nothing listens
    events: List[keyrotate.StepEvent] = []
    w = asyncio.create_task(watch())
    report = await keyrotate.rotate(mesh.targets() + [gone], cluster=mesh.c,
                                    progress=events.append, grace=2.0)
    await asyncio.sleep(3.0)                   # the mesh keeps gossiping on the new key only
    stop.set()
    await w
    after = _counters(agents)
    assert after == before and all(s == before for s in samples), (before, after)
    # Every reachable agent: the new key only, in its file (0600) and live.
    new = report.new
    for a in agents:
        assert [fingerprint(k) for k in a.members.keyring.keys] == [new]
        f = Path(a.config.gossip_keys)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert [fingerprint(base64.b64decode(k))
                for k in json.loads(f.read_text())] == [new]
    assert [fingerprint(k) for k in mesh.c.gossip_keys()] == [new]
    assert new not in [fingerprint(k) for k in old] and report.old == [fingerprint(old[0])]
    assert not mesh.c.path("rotation.json").exists()
    # The unreachable one alone failed, at the first step; every step was tried on the others.
    assert [r.node for r in report.failed] == ["k-gone"]
    assert report.failed[0].failed_step == "add"
    ok = {(e.node, e.step) for e in events if e.ok}
    assert ok == {(a.config.name, s) for a in agents for s in keyrotate.STEPS}
    text = json.dumps(report.to_dict())
    for k in old + mesh.c.gossip_keys():
        assert base64.b64encode(k).decode() not in text   # fingerprints only


async def test_a_node_that_missed_a_rotation_comes_back_with_sync(mesh):
    agents = [await mesh.agent(i) for i in range(3)]
    await _until(mesh.alive_everywhere, 20)
    late = agents[2]
    await keyrotate.rotate(mesh.targets(agents[:2]), cluster=mesh.c, grace=0.5)
    # The node left out keeps the old key: the others stop hearing it.
    await _until(lambda: all(m["state"] != "alive" for m in agents[0].members.members()
                             if m["name"] == late.config.name), 40)
    report = await keyrotate.sync(mesh.targets([late]), cluster=mesh.c)
    assert not report.failed
    await _until(mesh.alive_everywhere, 40)


async def test_an_interrupted_rotation_is_resumed_not_restarted(mesh):
    agents = [await mesh.agent(i) for i in range(2)]
    await _until(mesh.alive_everywhere, 20)
    old = mesh.c.gossip_keys()
    new = os.urandom(32)

    class Boom(Exception):
        pass

    def stop_after_use(ev: keyrotate.StepEvent) -> None:
        if ev.step == "use" and ev.node == agents[-1].config.name:
            raise Boom()

    with pytest.raises(Boom):
        await keyrotate.rotate(mesh.targets(), cluster=mesh.c, new_key=new,
                               progress=stop_after_use, grace=0)
    assert mesh.c.path("rotation.json").exists()
    report = await keyrotate.rotate(mesh.targets(), cluster=mesh.c, grace=0.5)
    assert report.resumed and report.new == fingerprint(new)
    assert report.old == [fingerprint(old[0])] and not report.failed
    assert all(a.members.keyring.keys == [new] for a in agents)
    await asyncio.sleep(2.0)
    assert mesh.alive_everywhere()
