"""PUT /v1/routes/relay on real agents over mutual TLS: a master-signed delta relayed by
another agent is applied and forwarded to the next agent; forged ones are refused and counted.

Two real agents (their own certificates, CN = node name; no Docker: routes need
none, and the agent runs on without it), the first one's gossip
view naming the second (gossip itself is off in these in-process agents). Both
learn the master's certificate from the master's own mTLS calls (a whole table
pushed to each). Then:

- an agent relays the master's signed delta to the first agent, which applies it
  and forwards it to the second: both hold the new version, the answer names both;
- refused with 4xx, counted (``swarmlet_agent_relay_refused_total``), and the table
  unchanged: a flipped byte in the update, a signature made by an agent's key (known
  or with its certificate along), a master of another cluster, a revoked master,
  garbled bytes, a whole table; and a caller whose certificate is not from the
  cluster's CA fails the TLS handshake.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from swarmlet import pki
from swarmlet.shipped.gossip.identity import Identity
from swarmlet.shipped.models import Route, RouteBackend, RouteChange, RoutesUpdate, to_wire
from swarmlet.shipped.relayenvelope import MAX_UPDATE, seal
from swarmlet.shipped.relaytree import PATH
from swarmlet_agent.config import AgentConfig
from swarmlet_agent.daemon import Agent
from swarmlet_agent.membership import LocalOnly
from tests.integration.agent.conftest import Api, api_for, pki_files  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def relay_agent(tmp_path, pki_files):
    started = []

    async def make(name: str, cert: str, key: str) -> Agent:
        agent = Agent(AgentConfig(
            name=name, address="127.0.0.1", api_port=0, api_bind="127.0.0.1", gossip=False,
            ingress=False, discovery=False, state_dir=str(tmp_path / name), cert=cert, key=key,
            ca=pki_files["ca"], docker_url=f"unix://{tmp_path}/no-docker.sock",
            secrets_dir=str(tmp_path / name / "secrets")))
        await agent.start()
        started.append(agent)
        return agent
    yield make
    for a in started:
        await a.stop()


class _View(LocalOnly):
    """This node and the peers its gossip would know (gossip is off in-process)."""

    def __init__(self, name: str, peers: dict) -> None:
        super().__init__(name, "127.0.0.1", 0, {})
        self.peers = peers

    def members(self):
        return super().members() + [
            {"name": n, "address": "127.0.0.1", "port": 0, "state": "alive", "incarnation": 1,
             "meta": {"address": "127.0.0.1", "api_port": p}} for n, p in self.peers.items()]


def _issue(pki_files, d: Path, name: str, role: str, ca_pem: bytes = b"", ca_key: bytes = b""):
    ca = pki.KeyPair(ca_key or Path(pki_files["ca_key"]).read_bytes(),
                     ca_pem or Path(pki_files["ca"]).read_bytes())
    kp = pki.issue(ca, name, role, sans=["127.0.0.1"])
    (d / f"{name}.crt").write_bytes(kp.cert_pem)
    (d / f"{name}.key").write_bytes(kp.key_pem)
    (d / f"{name}.key").chmod(0o600)
    return kp, str(d / name)


def _tail(u: RoutesUpdate) -> bytes:
    wire = to_wire(u)
    del wire["node"]
    return json.dumps(wire, separators=(",", ":")).encode()


async def _metric(api: Api, name: str) -> int:
    s, text = await api.request("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


async def test_relay_applies_forwards_and_refuses_forgeries(relay_agent, api_for, pki_files,
                                                            tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    _, a_files = _issue(pki_files, d, "relay-a", "agent")
    _, b_files = _issue(pki_files, d, "relay-b", "agent")
    a = await relay_agent("relay-a", a_files + ".crt", a_files + ".key")
    b = await relay_agent("relay-b", b_files + ".crt", b_files + ".key")
    a.members = _View("relay-a", {"relay-b": b.api_port})
    master_a, master_b = api_for(a), api_for(b)
    peer_a, peer_b = api_for(a, "peer"), api_for(b, "peer")    # role agent, another node

    route = Route("web", 18080, 8080, "/", backends=(RouteBackend("web.1", "n", "127.0.0.1", 20001),))
    for api, node in ((master_a, "relay-a"), (master_b, "relay-b")):
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(
            RoutesUpdate(node, 1, epoch=7, routes=(route,))))
        assert s == 200 and out["applied"] is True
    delta = RoutesUpdate("", 2, epoch=7, base=1, changes=(RouteChange("web/18080/8080", add=(
        RouteBackend("web.2", "n", "127.0.0.1", 20002),)),))
    master = Identity.load(pki_files["master"] + ".crt", pki_files["master"] + ".key")
    env = dict(seal(_tail(delta), master), lo="relay-a", hi="relay-b", fanout=8, budget=3.0)

    async def versions():
        out = []
        for api in (master_a, master_b):
            s, table = await api.request("GET", "/v1/routes")
            out.append(table["version"])
        return out

    # refused, counted, nothing changes: on the agent that would forward it, too
    forged = []
    forged.append((403, dict(env, update=env["update"].replace('"20002"', '"20003"')
                             .replace("20002", "20003"))))
    agent_key = Identity.load(a_files + ".crt", a_files + ".key")
    forged.append((403, dict(env, **seal(_tail(delta), agent_key))))
    forged.append((403, dict(env, **seal(_tail(delta), agent_key, with_cert=True))))
    other = pki.create_ca("other-cluster")
    _, f_files = _issue(pki_files, d, "evil-master", "master", other.cert_pem, other.key_pem)
    forged.append((403, dict(env, **seal(_tail(delta), Identity.load(f_files + ".crt",
                                                                        f_files + ".key"),
                                         with_cert=True))))
    m2_kp, m2_files = _issue(pki_files, d, "master-2", "master")
    whole = RoutesUpdate("", 9, epoch=7, base=0, routes=(route,))
    forged.append((400, dict(env, **seal(_tail(whole), master))))
    forged.append((400, dict(env, lo="", hi="relay-b")))
    for status, body in forged:
        s, out = await peer_a.request("PUT", PATH, json=body)
        assert s == status, (s, out)
    s, out = await peer_a.request("PUT", PATH, data=b"\x00\xffnot json",
                                  headers={"Content-Type": "application/json"})
    assert s == 400
    assert await versions() == [1, 1]
    assert await _metric(master_a, "swarmlet_agent_relay_refused_total") == len(forged) + 1
    assert await _metric(master_b, "swarmlet_agent_relay_refused_total") == 0   # never forwarded

    # a revoked master: refused (with its certificate along, or once known)
    by_m2 = dict(env, **seal(_tail(delta), Identity.load(m2_files + ".crt", m2_files + ".key"),
                             with_cert=True))
    info = pki.cert_info(m2_kp.cert_pem)
    s, _ = await master_b.request("PUT", "/v1/revocations", json={"version": 1, "revoked": [
        {"serial": f"{info.serial:X}", "name": "master-2", "role": "master",
         "not_after": info.not_after}]})
    assert s == 200
    s, out = await peer_b.request("PUT", PATH, json=dict(by_m2, lo="relay-b", hi="relay-b"))
    assert s == 403 and "revoked" in out["error"]

    # a caller from another cluster: the TLS handshake fails
    foreign = Api(b.api_port, pki_files["foreign"], pki_files["ca"])
    try:
        with pytest.raises((aiohttp.ClientError, OSError)):
            await foreign.request("PUT", PATH, json=env)
    finally:
        await foreign.close()
    assert await versions() == [1, 1]

    # the master's delta, relayed by another agent: applied on a, forwarded to b
    s, out = await peer_a.request("PUT", PATH, json=env)
    assert s == 200, out
    assert sorted(out["acked"]) == ["relay-a", "relay-b"] and out["refused"] == {}
    assert out["version"] == 2 and await versions() == [2, 2]
    s, table = await master_b.request("GET", "/v1/routes")
    assert [x["task_id"] for x in table["routes"][0]["backends"]] == ["web.1", "web.2"]
    # again: held already (acknowledged, not applied twice); an older base: refused per node
    s, out = await peer_a.request("PUT", PATH, json=env)
    assert s == 200 and sorted(out["acked"]) == ["relay-a", "relay-b"]
    assert await _metric(master_a, "swarmlet_agent_relay_received_total") == 2


async def test_an_envelope_arriving_in_pieces_is_read_whole(relay_agent, api_for, pki_files, tmp_path):
    """A body in several segments (chunked, with pauses) is applied; one past the cap is
    refused with 413 as it arrives. (One read() returned the first segment: 400.)"""
    d = tmp_path / "certs"
    d.mkdir()
    _, a_files = _issue(pki_files, d, "relay-a", "agent")
    a = await relay_agent("relay-a", a_files + ".crt", a_files + ".key")
    a.members = _View("relay-a", {})
    master_a, peer_a = api_for(a), api_for(a, "peer")
    route = Route("web", 18080, 8080, "/", backends=(RouteBackend("web.1", "n", "127.0.0.1", 20001),))
    s, out = await master_a.request("PUT", "/v1/routes", json=to_wire(
        RoutesUpdate("relay-a", 1, epoch=7, routes=(route,))))
    assert s == 200
    delta = RoutesUpdate("", 2, epoch=7, base=1, changes=(RouteChange("web/18080/8080", add=(
        RouteBackend("web.2", "n", "127.0.0.1", 20002),)),))
    master = Identity.load(pki_files["master"] + ".crt", pki_files["master"] + ".key")
    raw = json.dumps(dict(seal(_tail(delta), master), lo="relay-a", hi="relay-a", fanout=8,
                          budget=3.0)).encode()

    async def pieces(data: bytes, n: int):
        step = -(-len(data) // n)
        for i in range(0, len(data), step):
            yield data[i:i + step]
            await asyncio.sleep(0.05)

    s, out = await peer_a.request("PUT", PATH, data=pieces(raw, 4),
                                  headers={"Content-Type": "application/json"})
    assert s == 200, out
    assert out["acked"] == ["relay-a"] and out["version"] == 2
    s, table = await master_a.request("GET", "/v1/routes")
    assert table["version"] == 2

    async def endless():
        chunk = b" " * 65536
        for _ in range(2 * MAX_UPDATE // len(chunk) + 8):
            yield chunk
    before = await _metric(master_a, "swarmlet_agent_relay_refused_total")
    try:
        s, out = await peer_a.request("PUT", PATH, data=endless(),
                                      headers={"Content-Type": "application/json"})
        assert s == 413, (s, out)
    except aiohttp.ClientError:
        pass     # the agent may close the connection before the body is all sent
    assert await _metric(master_a, "swarmlet_agent_relay_refused_total") == before + 1
