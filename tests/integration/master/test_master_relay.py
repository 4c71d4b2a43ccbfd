"""Relayed routes: the master sends a signed delta to a few seeds and agents relay it.

A real master (in-process, real store, real mutual TLS, its own certificate
signing) and simulated agents on loopback addresses that relay as the real
agent does (``shipped/relaytree.relay``, over mutual TLS with each node's own
certificate, from the fleet's gossip view):

- a replica's health flip reaches every node, and the master sends only the
  seeds a request (``relay_seeds``), no direct ``PUT /v1/routes``; the agents
  send each other the rest;
- a seed that refuses to relay (a forwarder down) leaves its range unreached:
  the master's backstop pushes directly to exactly those nodes, and every node
  holds the new table;
- with the relay off (``relay_threshold`` 0), or for a delta bigger than ``relay_max_bytes``
  (a deploy's), every node is pushed directly, as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.master.daemon import MasterConfig
from swarmlet.shipped.models import HealthCheck, PortSpec, ServiceSpec, to_wire
from swarmlet.shipped.relaytree import seeds
from tests.integration.master.test_master_fanout import _close, _cluster, _until

pytestmark = pytest.mark.integration

N, SEEDS = 24, 3
RELAY = "PUT /v1/routes/relay"


def _cfg(threshold: int = 8, max_bytes: int = 4096) -> MasterConfig:
    return MasterConfig(long_poll=2.0, relay_threshold=threshold, relay_seeds=SEEDS,
                        relay_fanout=3, relay_gap=0.1, relay_max_bytes=max_bytes)


async def _deploy(call, fleet, m, nodes):
    spec = ServiceSpec("web", "sim:1", replicas=N, ports=(PortSpec(8080),),
                       health=HealthCheck(kind="http", path="/health"))
    await call("POST", "/v1/services", to_wire(spec))

    async def healthy() -> bool:
        t = (await call("GET", "/v1/status"))["tasks"]
        return t["healthy"] == N and t["total"] == N
    await _until("every replica healthy", healthy)
    await _until("every node holding the routes", lambda: _converged(fleet, m, nodes))


def _converged(fleet, m, nodes) -> bool:
    return all(fleet.nodes[n["name"]].routes_version == m.pusher.version
               and m.pusher._nodes[n["name"]].routes_acked == m.pusher.version
               and not m.pusher._nodes[n["name"]].routes_pushing for n in nodes)


def _snap(fleet):
    return (dict(fleet.requests), dict(fleet.peer_requests), fleet.bytes_in.get("PUT", 0),
            {name: len(n.routes_log) for name, n in fleet.nodes.items()})


async def _flip(fleet, m, nodes, health: str):
    v = m.pusher.version
    node = nodes[5]["name"]
    task = next(iter(fleet.nodes[node].tasks))
    fleet.set_health(node, task, health)
    await _until(f"the master seeing {health}", lambda: m.pusher.version > v)
    await _until("every node holding the new routes", lambda: _converged(fleet, m, nodes))


def _delta(before, after, key):
    return after.get(key, 0) - before.get(key, 0)


async def test_a_relayed_update_reaches_every_node_from_the_seeds(tmp_path: Path) -> None:
    running, fleet, client, call, nodes = await _cluster(tmp_path, N, "y", "127.106", _cfg())
    m = running.master
    try:
        await _deploy(call, fleet, m, nodes)
        waves = m.counters.get("relay_waves", 0)
        req0, peer0, bytes0, _ = _snap(fleet)
        await _flip(fleet, m, nodes, "unhealthy")
        req1, peer1, bytes1, _ = _snap(fleet)
        n_waves = m.counters["relay_waves"] - waves
        assert n_waves >= 1
        assert _delta(req0, req1, "PUT /v1/routes") == 0, "a node was pushed directly"
        assert _delta(req0, req1, RELAY) == SEEDS * n_waves      # the master: seeds only
        assert _delta(peer0, peer1, RELAY) == (N - SEEDS) * n_waves   # agents: the rest
        assert bytes1 - bytes0 < 1000 * SEEDS * n_waves
        assert fleet.relay_counters.get("relay_refused", 0) == 0
    finally:
        await _close(running, fleet, client)


async def test_nodes_a_refusing_forwarder_leaves_out_get_the_backstop(tmp_path: Path) -> None:
    running, fleet, client, call, nodes = await _cluster(tmp_path, N, "z", "127.107", _cfg())
    m = running.master
    try:
        await _deploy(call, fleet, m, nodes)
        names = sorted(n["name"] for n in nodes)
        seed, lo, hi = seeds(names, SEEDS)[1]
        fleet.no_relay.add(seed)                # this seed's range is not reached by the relay
        left_out = {n for n in names if lo <= n <= hi}
        backstop = m.counters.get("relay_backstop", 0)
        req0, _, _, logs0 = _snap(fleet)
        await _flip(fleet, m, nodes, "unhealthy")
        req1, _, _, logs1 = _snap(fleet)
        direct = {name for name in names if logs1[name] > logs0[name]
                  and fleet.nodes[name].routes_log[-1][1] != 0}
        # every node holds the new table; the direct pushes went to the left-out range alone
        pushed = _delta(req0, req1, "PUT /v1/routes")
        assert pushed >= len(left_out) and m.counters["relay_backstop"] - backstop >= len(left_out)
        assert direct == set(names)          # all got a delta (relayed or pushed), none the table
        assert pushed <= len(left_out) * (m.counters["relay_waves"] or 1)
    finally:
        await _close(running, fleet, client)


async def test_a_seed_that_never_answers_holds_back_its_own_range_alone(tmp_path: Path) -> None:
    """A seed that accepts the relay and never answers: the other ranges' nodes are settled as
    their seeds answer, while the master still waits for that one (its timeout is relay_budget
    + 1 s); its range then gets the backstop. Before, every node of the wave waited for it."""
    running, fleet, client, call, nodes = await _cluster(tmp_path, N, "w", "127.109", _cfg())
    m = running.master
    try:
        await _deploy(call, fleet, m, nodes)
        names = sorted(n["name"] for n in nodes)
        seed, lo, hi = seeds(names, SEEDS)[0]
        fleet.hang_relay.add(seed)
        held = {n for n in names if lo <= n <= hi}
        others = set(names) - held
        p = m.pusher
        v, waves = p.version, m.counters.get("relay_waves", 0)
        node = nodes[5]["name"]
        fleet.set_health(node, next(iter(fleet.nodes[node].tasks)), "unhealthy")
        await _until("the master seeing it", lambda: p.version > v)
        await _until("the other ranges settled", lambda: all(
            fleet.nodes[n].routes_version == p.version and p._nodes[n].routes_acked == p.version
            and not p._nodes[n].routes_pushing for n in others))
        # ... while the wave is still waiting for the hung seed: its range alone is held
        assert m.counters.get("relay_waves", 0) == waves and fleet.relays_hanging == 1
        assert all(p._nodes[n].routes_pushing and fleet.nodes[n].routes_version < p.version
                   for n in held)
        await _until("every node holding the new routes (the hung range by the backstop)",
                     lambda: _converged(fleet, m, nodes))
        assert m.counters["relay_waves"] == waves + 1
        assert m.counters["relay_backstop"] >= len(held)
    finally:
        fleet.relay_release.set()
        await _close(running, fleet, client)


@pytest.mark.parametrize("threshold,max_bytes", [(0, 4096), (8, 100)])
async def test_with_the_relay_off_every_node_is_pushed_directly(tmp_path: Path, threshold: int,
                                                                max_bytes: int) -> None:
    running, fleet, client, call, nodes = await _cluster(tmp_path, N, "x", "127.108",
                                                         _cfg(threshold, max_bytes))
    m = running.master
    try:
        await _deploy(call, fleet, m, nodes)
        req0, peer0, _, _ = _snap(fleet)
        await _flip(fleet, m, nodes, "unhealthy")
        req1, peer1, _, _ = _snap(fleet)
        assert _delta(req0, req1, RELAY) == 0 and _delta(peer0, peer1, RELAY) == 0
        assert _delta(req0, req1, "PUT /v1/routes") >= N
        assert "relay_waves" not in m.counters
    finally:
        await _close(running, fleet, client)
