"""Concurrent PATCHes of one service never undo each other (a lost update found by the HA
history check: a scale and an env update both started from the same spec)."""

from __future__ import annotations

import asyncio

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.runner import run_master
from swarmlet.provision import api
from swarmlet.shipped.models import ServiceSpec, to_wire

pytestmark = pytest.mark.integration


async def test_concurrent_scale_and_update_both_land(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="race", home=home)
    m = await run_master(home, bind="127.0.0.1", port=0)
    ctx = c.client_ssl("cli")
    try:
        await api.call("POST", m.url + "/v1/services", ctx,
                       to_wire(ServiceSpec("web", "img:1", replicas=1, env={"MARK": "0"})))
        for i in range(1, 21):
            await asyncio.gather(
                api.call("PATCH", m.url + "/v1/services/web", ctx, {"replicas": i + 1}),
                api.call("PATCH", m.url + "/v1/services/web", ctx, {"env": {"MARK": str(i)}}))
            spec = (await api.call("GET", m.url + "/v1/services/web", ctx))["spec"]
            assert (spec["replicas"], spec["env"]["MARK"]) == (i + 1, str(i))
    finally:
        await m.close()
