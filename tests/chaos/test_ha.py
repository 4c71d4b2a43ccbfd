"""The HA control plane on its own 4-node lab, under counted load (issue 15's "must show").

Nodes 1-3 become the masters (``swarmlet master ha``: an etcd member and a master on each);
node 4 is a worker only. hello runs 6 replicas with a health check. In file order:

1. ``master ha`` migrates the running cluster; a second one is refused in one line;
2. the laptop closed: nothing runs on the admin host, a worker is killed: healed within 15 s;
3. leader loss: the leader's node and the worker killed at once (SIGKILL): a new leader
   within 5 s, the worker's replicas running elsewhere within 15 s, 0 failed requests
   through the surviving nodes' ingress;
4. quorum loss: 2 of 3 masters stopped: writes fail at once with the one line, reads warn
   the view may be stale, serving stays at 100 %; one back: writes resume, nothing duplicated;
5. leader partition: the leader's node cut off the network: no agent hears its term after
   its lease TTL, another master leads, 30 s after the heal nothing is over-replicated;
6. ``master single``: back to one master on the admin host with everything it had.

Figures go to the chaos report (``artifacts/chaos-report.json``) like the other scenarios.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Dict, List, Optional

import pytest

from swarmlet import cluster as clusterlib
from swarmlet import master_process
from swarmlet.client import Client, agent_peer, call_masters, master_at
from tests.chaos import support
from tests.chaos.support import Load, containers, record, wait_until
from tests.conftest import free_port
from tests.support import CLI

pytestmark = pytest.mark.chaos
REPLICAS = 6
TTL = 2


class HA:
    def __init__(self, cli: CLI, nodes: List[dict], subnet: str, port: int, docker, network: str):
        self.cli, self.nodes, self.subnet, self.port = cli, nodes, subnet, port
        self.docker, self.network = docker, network
        self.home = cli.env["SWARMLET_HOME"]

    @property
    def cluster(self) -> clusterlib.Cluster:
        return clusterlib.load(__import__("pathlib").Path(self.home))

    def node(self, name: str) -> dict:
        return next(n for n in self.nodes if n["name"] == name)

    @property
    def masters(self) -> List[str]:
        return [n["name"] for n in self.nodes[:3]]

    def call(self, method: str, path: str, body=None, urls: Optional[List[str]] = None,
             timeout: float = 5.0):
        c = self.cluster

        async def go():
            async with Client.for_cluster(c, timeout=timeout) as client:
                return await call_masters(client, [master_at(u, c.master_port)
                                                   for u in urls or c.master_urls()],
                                          method, path, body, timeout=timeout)
        return asyncio.run(go())

    def view(self, name: str) -> Optional[dict]:
        url = next(m["url"] for m in json.loads(
            (__import__("pathlib").Path(self.home) / "cluster.json").read_text())["masters"]
                   if m["name"] == name)
        c = self.cluster
        try:
            return asyncio.run(_one(c, master_at(url, c.master_port), "/v1/ha"))
        except Exception:       # a stopped or cut-off master: no view
            return None

    def leader(self, among: Optional[List[str]] = None) -> Optional[str]:
        for n in among or self.masters:
            v = self.view(n)
            if v and v.get("leading"):
                return n
        return None

    def term_of(self, name: str) -> int:
        v = self.view(name)
        return int(v["term"]) if v else 0

    def tasks(self) -> Optional[List[dict]]:
        try:
            return self.call("GET", "/v1/tasks?service=web")
        except Exception:
            return None

    def slots(self) -> Optional[List[int]]:
        """The slots of the tasks desired running, sorted (a slot twice: doubled)."""
        rows = self.tasks()
        return None if rows is None else sorted(r["slot"] for r in rows if r["desired"] == "running")

    def healthy_on(self, allowed: List[str]) -> bool:
        rows = self.tasks()
        if rows is None:
            return False
        ok = [r for r in rows if r["desired"] == "running" and r["state"] == "running"
              and r["health"] in ("healthy", "none") and r["node"] in allowed]
        return len(ok) == REPLICAS

    def ingress(self, names: List[str]) -> List[str]:
        return [f"http://{self.node(n)['address']}:{self.port}/" for n in names]

    def master_logs(self, lines: int = 25) -> str:
        out = []
        for n in self.masters:
            try:
                rc, text = self.docker.containers.get(n).exec_run(
                    ["sh", "-c", f"journalctl -u swarmlet-master -u swarmlet-etcd -n {lines} "
                                 "--no-pager -o cat 2>&1 | grep -v '^{{' | tail -n 15"])
                out.append(f"--- {n}\n{text.decode(errors='replace')}")
            except Exception as exc:      # a stopped node: no log to read
                out.append(f"--- {n}: {exc}")
        return "\n".join(out)

    def kill(self, name: str) -> None:
        self.docker.containers.get(name).kill()

    def start(self, name: str) -> None:
        self.cli("lab", "start", name, check=True, timeout=180)

    def settle(self, timeout: float = 120.0) -> None:
        names = [n["name"] for n in self.nodes]
        wait_until("every node ready", lambda: _all_ready(self), timeout, every=0.5)
        wait_until("6 healthy replicas", lambda: self.healthy_on(names), timeout, every=0.5)
        # A node back from down is rebalanced onto through start-first moves: for a while a
        # slot holds its old task and the successor. Settled: each slot held by one task.
        wait_until("each slot held once (none lost or doubled)",
                   lambda: self.slots() == list(range(1, REPLICAS + 1)), timeout, every=0.5)
        wait_until("exactly 6 containers", lambda: sum(
            len(v) for v in containers(self.docker, self.nodes, "web").values()) == REPLICAS, timeout)


async def _one(c: clusterlib.Cluster, peer, path: str):
    async with Client.for_cluster(c, timeout=3.0) as client:
        return await client.call(peer, "GET", path)


def _all_ready(h: HA) -> bool:
    try:
        return all(n["status"] == "ready" for n in h.call("GET", "/v1/nodes"))
    except Exception:
        return False


@pytest.fixture(scope="module")
def ha(tmp_path_factory, docker_client):
    env = dict(os.environ)
    env["SWARMLET_HOME"] = str(tmp_path_factory.mktemp("ha-home"))
    env["SWARMLET_LAB"] = f"swt-ha-{os.getpid()}"
    cli = CLI(env)
    try:
        cli("lab", "up", "--nodes", "4", check=True, timeout=600)
        nodes = cli.json("lab", "ls")
        cli("init", "--name", "ha", "--master-port", str(free_port()), check=True, timeout=120)
        cli("join", "-i", nodes[0]["key"], "--accept-new-host-key", *[n["ssh"] for n in nodes],
            check=True, timeout=600)
        cli("lab", "load", "swarmlet-hello:1", check=True, timeout=300)
        port = free_port()
        cli("run", "web", "--image", "swarmlet-hello:1", "--replicas", str(REPLICAS), "-p",
            f"{port}:8080", "--health-path", "/health", check=True, timeout=60)
        net = docker_client.networks.get(env["SWARMLET_LAB"])
        subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
        h = HA(cli, nodes, subnet, port, docker_client, env["SWARMLET_LAB"])
        wait_until("6 healthy replicas", lambda: h.healthy_on([n["name"] for n in nodes]), 120)
        yield h
    finally:
        cli("master", "stop", timeout=60)
        cli("lab", "down", timeout=300)


def test_1_master_ha_moves_the_running_cluster_and_a_second_is_refused(ha):
    before = ha.call("GET", "/v1/services/web/revisions")
    t0 = time.monotonic()
    out = ha.cli("master", "ha", *ha.masters, "--ttl", str(TTL), check=True, timeout=600)
    took = time.monotonic() - t0
    assert "HA on" in out.stdout and "state moved to etcd and verified" in out.stdout, out.stdout
    assert not master_process.master_running(ha.cluster)        # the laptop is a client only
    wait_until("a leader", lambda: ha.leader() is not None, 30)
    for name in ha.masters:           # any master answers (followers proxy to the leader)
        url = next(m["url"] for m in json.loads(
            (__import__("pathlib").Path(ha.home) / "cluster.json").read_text())["masters"]
                   if m["name"] == name)
        try:
            rows = ha.call("GET", "/v1/services", urls=[url])
        except Exception as exc:
            raise AssertionError(f"{name} ({url}): {exc}\n{ha.master_logs()}") from exc
        assert [r["name"] for r in rows] == ["web"]
    assert ha.call("GET", "/v1/services/web/revisions") == before      # every revision moved
    again = ha.cli("master", "ha", *ha.masters, timeout=120)
    assert again.returncode != 0
    lines = [ln for ln in again.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "HA is already on" in lines[0], again.stderr
    status = ha.cli("master", "status", timeout=60)
    assert status.returncode == 0 and "leader:" in status.stdout, status.stdout
    ha.settle()
    record("ha 1 master ha", master_ha_s=round(took, 1), outcome="ok")


def test_2_laptop_closed_a_dead_worker_is_healed(ha):
    ha.settle()
    assert not master_process.master_running(ha.cluster)
    worker = ha.nodes[3]["name"]
    t0 = time.monotonic()
    ha.kill(worker)
    others = [n["name"] for n in ha.nodes if n["name"] != worker]
    healed = wait_until("6 healthy replicas off the dead worker",
                        lambda: ha.healthy_on(others), 60, every=0.25)
    took = time.monotonic() - t0
    record("ha 2 laptop closed, worker killed", healed_s=round(took, 1), target_s=15.0,
           outcome="ok" if took <= 15 else "slow")
    ha.start(worker)
    ha.settle()
    assert took <= 15.0, took
    del healed


def test_3_leader_and_a_worker_killed_at_once(ha):
    ha.settle()
    old = ha.leader()
    assert old is not None
    old_term = ha.term_of(old)
    worker = ha.nodes[3]["name"]
    survivors = [n for n in ha.masters if n != old]
    # A request to a replica on a killed node waits for the LB's connect timeout and is then
    # retried on another: slow, not failed (timeout 15 s, as a patient client's).
    try:
        with Load(ha.ingress(survivors), [ha.subnet], timeout=15.0) as load:
            time.sleep(2.0)
            t0 = time.monotonic()
            ha.kill(old)
            ha.kill(worker)
            wait_until("a new leader", lambda: ha.leader(survivors) is not None, 10, every=0.1)
            elected = time.monotonic() - t0
            wait_until("6 healthy replicas on the survivors", lambda: ha.healthy_on(survivors), 60,
                       every=0.25)
            healed = time.monotonic() - t0
            time.sleep(2.0)
        new = ha.leader(survivors)
        record("ha 3 leader + worker killed", load, new_leader_s=round(elected, 2),
               healed_s=round(healed, 1), outcome="ok" if load.failed == 0 else "failed requests")
        assert ha.term_of(new) > old_term
        # Issue 15's bound. The leading master keeps etcd's raft leader on another machine
        # (ha/apart.py): with both on one machine its death cost two elections in a row
        # (5.3-6.4 s here).
        assert elected <= 5.0, elected
        assert healed <= 15.0, healed
        assert load.failed == 0, load.summary()
    finally:      # the next scenarios start from the whole cluster, whatever happened here
        for n in (old, worker):
            ha.start(n)
        ha.settle()


def test_4_quorum_loss_fails_writes_at_once_and_serving_goes_on(ha):
    ha.settle()
    leader = ha.leader()
    down = [n for n in ha.masters if n != leader][:1] + [leader]     # the leader and one more
    up = [n["name"] for n in ha.nodes if n["name"] not in down]
    try:
        _quorum_loss(ha, down, up)
    finally:      # the next scenarios start from the whole cluster, whatever happened here
        for n in down:
            ha.start(n)
        ha.settle()      # it waits for each slot to be held once: none lost or doubled
    assert ha.slots() == list(range(1, REPLICAS + 1))


def _quorum_loss(ha: HA, down: List[str], up: List[str]) -> None:
    # The replicas on the nodes about to stop move first, so serving can stay at 100 %.
    with Load(ha.ingress(up), [ha.subnet], timeout=15.0) as load:
        time.sleep(1.0)
        for n in down:
            ha.cli("lab", "stop", n, check=True, timeout=120)
        lost = time.monotonic()
        deadline = lost + 10

        def refused_line():
            r = ha.cli("scale", "web=7", timeout=60)
            return r if r.returncode != 0 and "no quorum" in r.stderr else None
        while True:
            r = refused_line()
            if r is not None or time.monotonic() > deadline:
                break
        assert r is not None, "writes were not refused with the no-quorum line"
        t0 = time.monotonic()
        r = ha.cli("scale", "web=8", timeout=60)
        fast = time.monotonic() - t0
        assert r.returncode != 0
        assert "no quorum: 1 of 3 masters reachable" in r.stderr, r.stderr
        read = ha.cli("services", timeout=60)
        assert read.returncode == 0 and "the view may be stale" in read.stderr, read.stderr
        time.sleep(5.0)
        ha.start(down[0])              # one master back: a majority again
        try:
            wait_until("a leader again", lambda: ha.leader() is not None, 30, every=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{ha.master_logs(60)}") from None
        wait_until("writes accepted", lambda: ha.cli("scale", "web=6", timeout=60).returncode == 0,
                   30, every=0.5)
        time.sleep(2.0)
    record("ha 4 quorum loss", load, write_refused_s=round(fast, 2),
           outcome="ok" if load.failed == 0 else "failed requests")
    assert fast <= 5.0, fast        # a whole CLI process: start, reach a master, the one line
    assert load.failed == 0, load.summary()


def _offers(ha: HA, node: dict) -> Dict[int, float]:
    c = ha.cluster
    out = asyncio.run(_one(c, agent_peer(node["name"], node["address"], c.api_port), "/v1/terms"))
    return {int(t): float(o["last"]) for t, o in (out.get("offers") or {}).items()}


def test_5_a_partitioned_leader_stops_within_its_ttl(ha):
    ha.settle()
    old = ha.leader()
    old_term = ha.term_of(old)
    net = ha.docker.networks.get(ha.network)
    ct = ha.docker.containers.get(old)
    others = [n for n in ha.nodes if n["name"] != old]
    cut_wall = time.time()
    t0 = time.monotonic()
    net.disconnect(ct)
    try:
        survivors = [n for n in ha.masters if n != old]
        wait_until("another leader", lambda: ha.leader(survivors) is not None, 15, every=0.1)
        elected = time.monotonic() - t0
        wait_until("healed without the cut-off node",
                   lambda: ha.healthy_on([n["name"] for n in others]), 60, every=0.5)
        # From the agents' view: nothing of the old term arrives after its lease could hold.
        late = {n["name"]: max((t for term, t in _offers(ha, n).items() if term <= old_term),
                               default=0.0) - cut_wall for n in others}
        time.sleep(3.0)
    finally:
        net.connect(ct)
    t_heal = time.monotonic()
    time.sleep(max(0.0, 30.0 - (time.monotonic() - t_heal)))
    per_node = containers(ha.docker, ha.nodes, "web")
    total = sum(len(v) for v in per_node.values())
    running = [t for t in ha.tasks() or [] if t["state"] == "running"]
    record("ha 5 leader partition", new_leader_s=round(elected, 2),
           old_term_last_heard_after_cut_s=round(max(late.values()), 2), containers=total,
           running_tasks=len(running),
           outcome="ok" if total == REPLICAS and len(running) == REPLICAS else "OVER-REPLICATED")
    assert max(late.values()) <= TTL + 0.5, late
    assert total == REPLICAS and len(running) == REPLICAS, (per_node, running)
    ha.settle()


def test_6_master_single_brings_everything_back(ha):
    ha.settle()
    before = ha.call("GET", "/v1/services/web/revisions")
    out = ha.cli("master", "single", check=True, timeout=600)
    assert "state moved back" in out.stdout, out.stdout
    assert master_process.master_running(ha.cluster) and not ha.cluster.masters
    assert ha.call("GET", "/v1/services/web/revisions") == before
    ha.cli("scale", "web=5", check=True, timeout=60)         # agents take the single master's term
    wait_until("5 healthy", lambda: len([t for t in ha.tasks() or [] if t["state"] == "running"
                                         and t["desired"] == "running"]) == 5, 60)
    record("ha 6 master single", outcome="ok")
