"""VIP allocation is stable and collision-free; routes carry VIPs for every
declared TCP port, published or not."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.discovery import assign_vips, hosts_for
from swarmlet.shipped.models import Health, PortSpec, ServiceSpec, TaskState
from swarmlet.shipped.routes import ReplicaView, build_routes, by_port

pytestmark = pytest.mark.unit

names = st.lists(st.text("abcdefghij-", min_size=1, max_size=12), unique=True, max_size=60)


@given(names)
def test_vips_are_unique_and_in_range(ns):
    vips = assign_vips(ns)
    assert len(set(vips.values())) == len(ns)
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network("10.254.0.0/16") for v in vips.values())


@given(names, names)
def test_existing_vips_never_move(first, later):
    before = assign_vips(first)
    after = assign_vips(first + [n for n in later if n not in first], before)
    assert all(after[n] == before[n] for n in first)


def test_collisions_probe_to_the_next_free_address():
    vips = assign_vips([f"s{i}" for i in range(14)], vip_range="10.254.0.0/28")
    assert len(set(vips.values())) == 14          # a /28 has 14 usable addresses: all used


def test_routes_cover_unpublished_ports_and_carry_vips():
    specs = [ServiceSpec("web", "i", ports=(PortSpec(8080, published=80),)),
             ServiceSpec("store", "i", ports=(PortSpec(8080),))]
    reps = [ReplicaView("web.1", "web", "n1", TaskState.RUNNING, Health.HEALTHY, {"8080/tcp": 3001}),
            ReplicaView("store.1", "store", "n2", TaskState.RUNNING, Health.NONE, {"8080/tcp": 3002}),
            ReplicaView("store.2", "store", "n2", TaskState.RUNNING, Health.UNHEALTHY, {"8080/tcp": 3003})]
    vips = assign_vips(["web", "store"])
    routes = build_routes(specs, reps, {"n1": "10.0.0.1", "n2": "10.0.0.2"}, vips)
    by = {r.service: r for r in routes}
    assert by["store"].published is None and by["store"].vip == vips["store"]
    assert [(b.host, b.port) for b in by["store"].backends] == [("10.0.0.2", 3002)]
    assert list(by_port(routes)) == [80]
    assert hosts_for(routes) == vips
