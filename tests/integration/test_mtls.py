"""Mutual TLS with the cluster CA on a real loopback server: the right client
is accepted with its role visible; no certificate, or one from another
cluster's CA, fails the handshake."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from swarmlet import pki
from swarmlet.shipped import tlsutil

pytestmark = pytest.mark.integration


def _write(dir: Path, name: str, kp: pki.KeyPair):
    (dir / f"{name}.crt").write_bytes(kp.cert_pem)
    (dir / f"{name}.key").write_bytes(kp.key_pem)
    return str(dir / f"{name}.crt"), str(dir / f"{name}.key")


@pytest.fixture
def certs(tmp_path):
    ca = pki.create_ca("cluster-a")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    other = pki.create_ca("cluster-b")
    return {
        "ca": str(tmp_path / "ca.crt"),
        "server": _write(tmp_path, "server", pki.issue(ca, "agent-1", "agent", sans=["127.0.0.1"])),
        "cli": _write(tmp_path, "cli", pki.issue(ca, "admin", "cli")),
        "foreign": _write(tmp_path, "foreign", pki.issue(other, "admin", "cli")),
    }


async def _serve(certs):
    roles = []

    async def handle(reader, writer):
        roles.append(tlsutil.peer_role(writer.get_extra_info("ssl_object")))
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    ctx = tlsutil.server_context(*certs["server"], certs["ca"])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], roles


async def test_cluster_client_is_accepted_with_its_role(certs):
    server, port, roles = await _serve(certs)
    async with server:
        ctx = tlsutil.client_context(*certs["cli"], certs["ca"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        assert await reader.read() == b"hi"
        writer.close()
    assert roles == ["cli"]


@pytest.mark.parametrize("who", ["none", "foreign"])
async def test_missing_or_foreign_certificate_is_refused(certs, who):
    server, port, roles = await _serve(certs)
    async with server:
        if who == "none":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(certs["ca"])
        else:
            ctx = tlsutil.client_context(*certs["foreign"], certs["ca"])
        with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            # TLS 1.3 reports the server's refusal on first read.
            data = await reader.read()
            if not data:
                raise ConnectionResetError("closed without data")
    assert roles == []
