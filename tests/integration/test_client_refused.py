"""The client tells a refused connection (the host is up, nothing listens: an agent
restarting) from one that gets no answer, on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from swarmlet import pki
from swarmlet.client import Client, agent_peer
from swarmlet.shipped.exceptions import Unreachable

pytestmark = pytest.mark.integration


@pytest.fixture
def client_files(tmp_path):
    ca = pki.create_ca("cluster-a")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    kp = pki.issue(ca, "master", "master")
    (tmp_path / "m.crt").write_bytes(kp.cert_pem)
    (tmp_path / "m.key").write_bytes(kp.key_pem)
    return str(tmp_path / "m.crt"), str(tmp_path / "m.key"), str(tmp_path / "ca.crt")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                      # nothing listens there now: the kernel answers RST
    return port


async def test_a_closed_port_is_refused_and_a_silent_server_is_not(client_files):
    async with Client(*client_files, timeout=1.0) as client:
        with pytest.raises(Unreachable) as err:
            await client.info(agent_peer("node-1", "127.0.0.1", _closed_port()))
        assert err.value.refused, err.value

        async def silent(reader, writer):      # accepts, never answers the TLS handshake
            await asyncio.sleep(5)
            writer.close()
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(Unreachable) as err:
                await client.call(agent_peer("node-1", "127.0.0.1", port), "GET", "/v1/info",
                                  timeout=0.5)
            assert not err.value.refused and "timed out" in str(err.value), err.value
