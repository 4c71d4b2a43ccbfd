"""Concurrent PATCHes of one service never undo each other (a lost update found by the HA
history check: a scale and an env update both started from the same spec)."""

from __future__ import annotations

import asyncio

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.runner import run_master
from swarmlet.client import Client, master_at
from swarmlet.shipped.models import ServiceSpec, to_wire

pytestmark = pytest.mark.integration


async def test_concurrent_scale_and_update_both_land(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="race", home=home)
    m = await run_master(home, bind="127.0.0.1", port=0)
    client, peer = Client.for_cluster(c), master_at(m.url)
    try:
        await client.call(peer, "POST", "/v1/services",
                          to_wire(ServiceSpec("web", "img:1", replicas=1, env={"MARK": "0"})))
        for i in range(1, 21):
            await asyncio.gather(
                client.call(peer, "PATCH", "/v1/services/web", {"replicas": i + 1}),
                client.call(peer, "PATCH", "/v1/services/web", {"env": {"MARK": str(i)}}))
            spec = (await client.call(peer, "GET", "/v1/services/web"))["spec"]
            assert (spec["replicas"], spec["env"]["MARK"]) == (i + 1, str(i))
    finally:
        await client.close()
        await m.close()
