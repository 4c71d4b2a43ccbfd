"""Two agents find each other over real loopback UDP gossip and share their meta."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import pytest

pytestmark = pytest.mark.integration



def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_cert(pki_files, tmp_path, name: str) -> dict:
    """A certificate of the agent's own name (gossip signs with it), as join issues."""
    from pathlib import Path

    from swarmlet import pki
    ca = pki.KeyPair(Path(pki_files["ca_key"]).read_bytes(), Path(pki_files["ca"]).read_bytes())
    kp = pki.issue(ca, name, "agent", sans=["127.0.0.1"])
    (tmp_path / f"{name}.crt").write_bytes(kp.cert_pem)
    (tmp_path / f"{name}.key").write_bytes(kp.key_pem)
    return {"name": name, "cert": str(tmp_path / f"{name}.crt"),
            "key": str(tmp_path / f"{name}.key")}


async def test_agents_gossip_membership_and_utilization(make_agent, api_for, tmp_path, pki_files):
    keys = tmp_path / "gossip.keys"
    keys.write_text(json.dumps([base64.b64encode(os.urandom(32)).decode()]))
    p1, p2 = _udp_port(), _udp_port()
    common = dict(gossip=True, gossip_bind="127.0.0.1", gossip_keys=str(keys), stats_interval=0.5)
    a = await make_agent(gossip_port=p1, labels={"zone": "a"},
                         **node_cert(pki_files, tmp_path, "ga"), **common)
    b = await make_agent(gossip_port=p2, seeds=(f"127.0.0.1:{p1}",), labels={"zone": "b"},
                         **node_cert(pki_files, tmp_path, "gb"), **common)
    assert a.members.available and b.members.available
    api = api_for(a)
    names = {a.config.name, b.config.name}
    members = []
    for _ in range(100):
        members = (await api.request("GET", "/v1/members"))[1]
        seen = {m["name"]: m for m in members if m["state"] == "alive"}
        if set(seen) >= names and "cpu_percent" in seen[b.config.name]["meta"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"members never converged: {members}")
    mb = seen[b.config.name]
    assert (mb["address"], mb["port"]) == ("127.0.0.1", p2)
    meta = mb["meta"]
    assert meta["api_port"] == b.api_port and meta["labels"] == {"zone": "b"}
    assert meta["address"] == "127.0.0.1" and meta["cpus"] >= 1 and meta["mem_total"] > 0

    assert (await api_for(b).request("POST", "/v1/leave"))[1] == {"left": True}
    for _ in range(100):
        members = {m["name"]: m for m in (await api.request("GET", "/v1/members"))[1]}
        if members.get(b.config.name, {}).get("state") == "left":
            break
        await asyncio.sleep(0.1)
    assert members[b.config.name]["state"] == "left"


async def test_without_gossip_keys_the_agent_runs_alone(make_agent, api_for, tmp_path):
    a = await make_agent(gossip=True, gossip_bind="127.0.0.1", gossip_port=_udp_port(),
                         gossip_keys=str(tmp_path / "missing.keys"))
    assert not a.members.available
    members = (await api_for(a).request("GET", "/v1/members"))[1]
    assert [m["name"] for m in members] == [a.config.name]


async def test_a_revoked_node_drops_out_of_the_agents_gossip(make_agent, tmp_path, pki_files):
    """The master ships a denylist (the agent's ``Denylist``): gossip refuses the node at once."""
    from swarmlet.shipped.tlsutil import Revoked
    from swarmlet_agent.certs import cert_times
    keys = tmp_path / "gossip.keys"
    keys.write_text(json.dumps([base64.b64encode(os.urandom(32)).decode()]))
    p1, p2 = _udp_port(), _udp_port()
    common = dict(gossip=True, gossip_bind="127.0.0.1", gossip_keys=str(keys))
    a = await make_agent(gossip_port=p1, **node_cert(pki_files, tmp_path, "ra"), **common)
    b = await make_agent(gossip_port=p2, seeds=(f"127.0.0.1:{p1}",),
                         **node_cert(pki_files, tmp_path, "rb"), **common)

    def state(agent, name):
        return next((m["state"] for m in agent.members.members() if m["name"] == name), None)
    for _ in range(100):
        if state(a, "rb") == "alive" and state(b, "ra") == "alive":
            break
        await asyncio.sleep(0.1)
    assert state(a, "rb") == "alive"
    serial = cert_times(b.config.cert)[0]
    a.denylist.update(a.denylist.version + 1, [Revoked(serial, "rb", "agent")])
    assert state(a, "rb") == "dead"
    await asyncio.sleep(2.0)                    # rb keeps talking: refused, still dead
    assert state(a, "rb") == "dead"
    assert a.members.stats()["dropped_revoked"] > 0
