"""The routes channel (PUT /v1/routes): a real agent over mutual TLS applies whole tables and
deltas, refuses a delta against a table it does not hold (409: the master then sends it all),
feeds its ingress from it, and serves the stored table after a restart with no master."""

from __future__ import annotations

import pytest

from swarmlet.shipped import routediff
from swarmlet.shipped.models import Route, RouteBackend, RoutesUpdate, to_wire
from tests.conftest import free_port
from tests.integration.agent.conftest import api_for, make_agent, pki_files  # noqa: F401
from tests.integration.agent.test_agent_ingress import _backend, _wait_bodies

pytestmark = pytest.mark.integration


async def test_routes_channel_whole_delta_stale_and_restart(make_agent, api_for, tmp_path):
    (r1, p1), (r2, p2) = await _backend("one"), await _backend("two")
    port = free_port()
    state = str(tmp_path / "routes-agent")
    try:
        agent = await make_agent(name="routes-node", state_dir=state, ingress=True,
                                 ingress_bind="127.0.0.1")
        api = api_for(agent)
        both = (Route("web", port, 8080, "/", backends=(
            RouteBackend("web.1", "n", "127.0.0.1", p1), RouteBackend("web.2", "n", "127.0.0.1", p2))),)
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(
            RoutesUpdate("routes-node", 1, epoch=7, routes=both)))
        assert s == 200 and out == {"version": 1, "applied": True}
        url = f"http://127.0.0.1:{port}/"
        await _wait_bodies(url, {"one", "two"})

        # one replica leaves: a delta of one backend, against version 1
        only_two = (Route("web", port, 8080, "/", backends=(RouteBackend("web.2", "n", "127.0.0.1", p2),)),)
        whole, removed, changes = routediff.diff(both, only_two)
        assert whole == () and len(changes) == 1
        delta = RoutesUpdate("routes-node", 2, epoch=7, base=1, routes=whole, removed=removed,
                             changes=changes, draining=("web.1",))
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(delta))
        assert s == 200 and out["applied"] is True
        await _wait_bodies(url, {"two"})
        s, again = await api.request("PUT", "/v1/routes", json=to_wire(delta))
        assert s == 200 and again["applied"] is False          # the same version: idempotent

        # a delta against a version this node does not hold: refused, nothing changes
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(RoutesUpdate(
            "routes-node", 4, epoch=7, base=3, routes=both)))
        assert s == 409 and out["current"] == 2 and out["epoch"] == 7
        # nor a delta from another master run (epoch)
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(RoutesUpdate(
            "routes-node", 3, epoch=8, base=2, routes=both)))
        assert s == 409
        s, table = await api.request("GET", "/v1/routes")
        assert s == 200 and table["version"] == 2 and table["draining"] == ["web.1"]
        assert [b["task_id"] for b in table["routes"][0]["backends"]] == ["web.2"]
        s, tasks = await api.request("GET", "/v1/tasks")
        assert tasks["routes"] == {"version": 2, "epoch": 7}
        # for another node: 400
        s, _ = await api.request("PUT", "/v1/routes", json=to_wire(RoutesUpdate("other", 9)))
        assert s == 400

        await agent.stop()    # the master is nowhere: a new agent serves the stored table
        agent = await make_agent(name="routes-node", state_dir=state, ingress=True,
                                 ingress_bind="127.0.0.1")
        await _wait_bodies(url, {"two"})
        # a new master run sends its whole table (version 1 of a new epoch): it replaces ours
        api = api_for(agent)
        s, out = await api.request("PUT", "/v1/routes", json=to_wire(
            RoutesUpdate("routes-node", 1, epoch=9, routes=both)))
        assert s == 200 and out["applied"] is True
        await _wait_bodies(url, {"one", "two"})
    finally:
        await r1.cleanup()
        await r2.cleanup()
