"""Service discovery's node-local forwarders, on real sockets: a VIP added to
the loopback interface forwards TCP to the replicas, skips a dead one, and is
removed with its service."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from swarmlet.shipped.discovery import Discovery
from swarmlet.shipped.models import Route, RouteBackend

pytestmark = pytest.mark.integration

VIP = "127.0.0.77"   # on lo already; `ip addr add` still exercises the real path


async def _echo_server(tag: bytes):
    async def handle(r, w):
        data = await r.read(100)
        w.write(tag + b":" + data)
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(port: int) -> bytes:
    r, w = await asyncio.open_connection(VIP, port)
    w.write(b"hi")
    w.write_eof()
    data = await asyncio.wait_for(r.read(), 5)
    w.close()
    return data


def _has_vip() -> bool:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    return f"{VIP}/32" in out


async def test_forwards_by_vip_skips_dead_replicas_and_cleans_up():
    (s1, p1), (s2, p2) = await _echo_server(b"one"), await _echo_server(b"two")
    d = Discovery()
    try:
        route = Route("store", None, 18977, None, backends=(
            RouteBackend("a", "n", "127.0.0.1", p1), RouteBackend("b", "n", "127.0.0.1", p2),
            RouteBackend("dead", "n", "127.0.0.1", 9)), vip=VIP)
        await d.apply([route])
        assert _has_vip()
        answers = {await _ask(18977) for _ in range(9)}
        assert answers == {b"one:hi", b"two:hi"}          # the dead replica is skipped
        await d.apply([])
        assert not _has_vip()
        with pytest.raises(OSError):
            await _ask(18977)
    finally:
        await d.close(remove_vips=True)
        s1.close()
        s2.close()
