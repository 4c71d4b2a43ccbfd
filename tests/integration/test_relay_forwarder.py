"""The relay's hop-to-child request (``relaytree.Forwarder``) against a real mutual-TLS
server on loopback: an answer that arrives in pieces is read whole (its JSON decoded, the
connection kept for the next wave), and one past ``MAX_ANSWER`` is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from swarmlet import pki
from swarmlet.shipped import relaytree
from swarmlet.shipped.tlsutil import server_context

pytestmark = pytest.mark.integration


def _files(d: Path, ca: pki.KeyPair, name: str) -> tuple:
    kp = pki.issue(ca, name, "agent", sans=["127.0.0.1"])
    (d / f"{name}.crt").write_bytes(kp.cert_pem)
    (d / f"{name}.key").write_bytes(kp.key_pem)
    return str(d / f"{name}.crt"), str(d / f"{name}.key")


async def test_an_answer_in_pieces_is_read_whole_and_the_connection_kept(tmp_path):
    ca = pki.create_ca("relay")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    ca_file = str(tmp_path / "ca.crt")
    answer = json.dumps({"version": 7, "acked": [f"node-{i:05d}" for i in range(400)],
                         "refused": {}}).encode()
    big = b"[" + b"0," * (relaytree.MAX_ANSWER // 2) + b"0]"
    peers = []

    async def relay(request: web.Request) -> web.StreamResponse:
        await request.read()
        peers.append(request.transport.get_extra_info("peername"))
        body = big if len(peers) > 2 else answer         # the third answer: too large
        resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Content-Length": str(len(body))})
        await resp.prepare(request)
        for i in range(0, len(body), 1000):          # in pieces, with pauses between them
            await resp.write(body[i:i + 1000])
            if i < 5000:
                await asyncio.sleep(0.02)
        return resp

    app = web.Application()
    app.add_routes([web.put(relaytree.PATH, relay)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(
        *_files(tmp_path, ca, "child"), ca_file))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fw = relaytree.Forwarder.with_identity(*_files(tmp_path, ca, "parent"), ca_file)
    try:
        target = ("child", "127.0.0.1", port)
        for _ in range(2):
            status, got = await fw.send(target, b"{}", 5.0)
            assert status == 200 and got == json.loads(answer), got
        assert peers[0] == peers[1], peers           # the second wave reused the connection
        status, got = await fw.send(target, b"{}", 10.0)
        assert status == 200 and got is None
    finally:
        await fw.close()
        await runner.cleanup()
