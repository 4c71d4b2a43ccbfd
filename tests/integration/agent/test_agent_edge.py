"""The agent's edge: ``PUT /v1/edge`` (certificates, ports) and ``PUT /v1/challenges`` reach
every ingress worker (two processes sharing the ports), the agent answers for the tokens only
once all of them serve them, and the edge serves again from ``edge.json`` after a restart."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat

import pytest

from swarmlet.shipped.models import (ChallengesUpdate, EdgeCert, EdgeUpdate, Route, RouteBackend,
                                     RoutesUpdate, to_wire)
from swarmlet.webcerts import chain_info, self_signed
from tests.conftest import free_port
from tests.integration.agent.conftest import api_for, make_agent, pki_files  # noqa: F401
from tests.integration.agent.test_agent_ingress import _backend
from tests.integration.lb.test_edge import client_ctx, http, https

pytestmark = pytest.mark.integration


async def _until(probe, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await probe()
            if last:
                return last
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last: {last!r}")


async def test_edge_certificates_and_tokens_reach_every_worker(make_agent, api_for, tmp_path):
    runner, port = await _backend("shop")
    http_port, https_port = free_port(), free_port()
    state = str(tmp_path / "edge-node")
    pem, key = self_signed(["shop.example.com"])
    try:
        agent = await make_agent(name="edge-node", state_dir=state, ingress=True,
                                 ingress_bind="127.0.0.1", ingress_workers=2)
        api = api_for(agent)
        edge = EdgeUpdate(1, 7, http_port=http_port, https_port=https_port, certs=(
            EdgeCert("shop", ("shop.example.com",), pem.decode(), key.decode(),
                     fingerprint=chain_info(pem).fingerprint),))
        status, body = await api.request("PUT", "/v1/edge", json=to_wire(edge))
        assert status == 200 and body["applied"], body
        route = Route("shop", None, 8080, "/", backends=(RouteBackend("shop.1", "n", "127.0.0.1", port),),
                      hosts=("shop.example.com",), tls="manual")
        status, body = await api.request("PUT", "/v1/routes", json=to_wire(
            RoutesUpdate("edge-node", 1, 1, routes=(route,))))
        assert status == 200, body
        ctx = client_ctx(pem)

        async def served():
            return (await https(https_port, "shop.example.com", ctx=ctx))[2] == b"shop"
        await _until(served)
        mode = stat.S_IMODE(os.stat(os.path.join(state, "edge.json")).st_mode)
        assert mode == 0o600

        # the key never leaves the agent in an answer
        status, body = await api.request("GET", "/v1/edge")
        assert status == 200 and "PRIVATE KEY" not in str(body)
        assert body["certs"][0]["name"] == "shop" and body["ingress"]["workers"] == 2

        # tokens: 200 only once both workers answer them; then every connection gets it
        status, body = await api.request("PUT", "/v1/challenges", json=to_wire(
            ChallengesUpdate(1, 7, tokens={"tok": "tok.thumb"})))
        assert (status, body.get("answered")) == (200, True), body
        answers = await asyncio.gather(*(http(http_port, "shop.example.com",
                                              "/.well-known/acme-challenge/tok") for _ in range(20)))
        assert {a[2] for a in answers} == {b"tok.thumb"}
        status, body = await api.request("PUT", "/v1/challenges", json=to_wire(
            ChallengesUpdate(0, 7, tokens={})))
        assert status == 409                              # an older version is refused
        # a cli certificate may read, not write
        cli = api_for(agent, "cli")
        assert (await cli.request("PUT", "/v1/edge", json=to_wire(edge)))[0] == 403

        await agent.stop()     # the master is away: the edge serves from edge.json and routes.json
        await make_agent(name="edge-node", state_dir=state, ingress=True, ingress_bind="127.0.0.1",
                         ingress_workers=2)
        await _until(served)
    finally:
        await runner.cleanup()
