"""The scheduler: filters, strategies, explanations, and its properties."""

from __future__ import annotations

from typing import Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet.shipped.exceptions import UsageError
from swarmlet.shipped.constraints import parse
from swarmlet.master.scheduler import Placed, Request, Scheduler, placed, schedule
from swarmlet.shipped.models import NodeInfo, NodeStatus, PortSpec, Resources, ServiceSpec

pytestmark = pytest.mark.unit

GiB = 1024 ** 3


def node(name: str, cpus: float = 4, mem: int = 8 * GiB, status=NodeStatus.READY, **kw) -> NodeInfo:
    return NodeInfo(name=name, address="10.0.0.1", cpus=cpus, mem_total=mem, status=status, **kw)


def reqs(spec: ServiceSpec, n: int) -> List[Request]:
    return [Request(f"{spec.name}.{i}", spec, i) for i in range(1, n + 1)]


def per_node(plan) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for n in plan.placements.values():
        out[n] = out.get(n, 0) + 1
    return out


def test_spread_evens_out_replicas():
    nodes = [node(f"n{i}") for i in range(3)]
    plan = schedule(nodes, reqs(ServiceSpec("web", "img"), 7))
    assert sorted(per_node(plan).values()) == [2, 2, 3]
    assert not plan.unplaced


def test_spread_prefers_least_utilized_then_counts_existing():
    nodes = [node("busy", cpu_percent=90.0), node("idle", cpu_percent=5.0)]
    plan = schedule(nodes, reqs(ServiceSpec("web", "img"), 1))
    assert plan.placements == {"web.1": "idle"}
    # an existing replica on "idle" makes "busy" the fewest-replicas node
    plan = schedule(nodes, reqs(ServiceSpec("web", "img"), 1), [Placed("web", "idle")])
    assert plan.placements == {"web.1": "busy"}


def test_single_replica_services_spread_by_task_count():
    nodes = [node("a"), node("b")]
    specs = [ServiceSpec(f"s{i}", "img") for i in range(4)]
    plan = schedule(nodes, [r for s in specs for r in reqs(s, 1)])
    assert per_node(plan) == {"a": 2, "b": 2}


def test_binpack_fills_one_node_first():
    nodes = [node("a", cpus=2), node("b", cpus=2)]
    spec = ServiceSpec("w", "img", placement="binpack", reservations=Resources(cpus=0.5))
    plan = schedule(nodes, reqs(spec, 5))
    assert sorted(per_node(plan).values()) == [1, 4]


def test_never_places_on_down_or_draining():
    nodes = [node("a", status=NodeStatus.DOWN), node("b", status=NodeStatus.DRAINING),
             node("c")]
    plan = schedule(nodes, reqs(ServiceSpec("w", "img"), 3))
    assert set(plan.placements.values()) == {"c"}


def test_memory_explanation_names_the_best_nodes():
    nodes = [node("node-1", mem=int(1.2 * GiB)), node("node-2", mem=1 * GiB)]
    spec = ServiceSpec("db", "img", reservations=Resources(memory=2 * GiB))
    plan = schedule(nodes, reqs(spec, 2))
    assert not plan.placements
    assert plan.unplaced["db.1"] == ("no node has 2 GiB of memory free: "
                                     "node-1 has 1.2 GiB, node-2 has 1 GiB")


def test_memory_reservations_fill_then_explain():
    nodes = [node("a", mem=4 * GiB)]
    spec = ServiceSpec("db", "img", reservations=Resources(memory=GiB + GiB // 2))
    plan = schedule(nodes, reqs(spec, 3))
    assert list(plan.placements) == ["db.1", "db.2"]
    assert plan.unplaced["db.3"] == "no node has 1.5 GiB of memory free: a has 1 GiB"


def test_cpu_reservation_and_mixed_reasons():
    nodes = [node("a", cpus=1), node("b", status=NodeStatus.DOWN),
             node("c", labels={"zone": "b"})]
    spec = ServiceSpec("w", "img", reservations=Resources(cpus=2),
                       constraints=("node.labels.zone!=b",))
    plan = schedule(nodes, reqs(spec, 1))
    why = plan.unplaced["w.1"]
    assert "1 node lack 2 CPUs free (a has 1)" in why
    assert "1 node fail constraint node.labels.zone!=b" in why
    assert "1 node not ready (b down)" in why


def test_constraints_on_labels_and_name():
    nodes = [node("a", labels={"zone": "x"}), node("b", labels={"zone": "y"}), node("c")]
    spec = ServiceSpec("w", "img", constraints=("node.labels.zone==y",))
    assert set(schedule(nodes, reqs(spec, 3)).placements.values()) == {"b"}
    spec = ServiceSpec("w", "img", constraints=("node.name!=a", "node.labels.zone!=y"))
    assert set(schedule(nodes, reqs(spec, 3)).placements.values()) == {"c"}
    with pytest.raises(UsageError):
        parse("zone=a")


def test_max_per_node_and_host_ports():
    nodes = [node("a"), node("b")]
    spec = ServiceSpec("w", "img", max_per_node=1)
    plan = schedule(nodes, reqs(spec, 3))
    assert len(plan.placements) == 2
    assert plan.unplaced["w.3"] == "2 nodes already run 1 (max per node)"
    spec = ServiceSpec("p", "img", ports=(PortSpec(target=80, host_port=8080),))
    plan = schedule(nodes, reqs(spec, 2), [Placed("other", "a", host_ports=((8080, "tcp"),))])
    assert plan.placements == {"p.1": "b"}
    assert plan.unplaced["p.2"] == "2 nodes already use host port 8080/tcp"


def test_no_nodes():
    assert schedule([], reqs(ServiceSpec("w", "img"), 1)).unplaced == {"w.1": "no nodes in the cluster"}


# --- properties ----------------------------------------------------------------

statuses = st.sampled_from(list(NodeStatus))
node_st = st.builds(
    lambda i, cpus, mem, status, zone, load: node(
        f"n{i}", cpus=cpus, mem=mem * GiB // 4, status=status,
        labels={"zone": zone} if zone else {}, cpu_percent=load),
    st.integers(0, 30), st.sampled_from([0.5, 1, 2, 4]), st.integers(0, 16), statuses,
    st.sampled_from(["", "a", "b"]), st.floats(0, 100))
spec_st = st.builds(
    lambda i, n, cpus, mem, maxp, port, zone, strat: ServiceSpec(
        f"s{i}", "img", replicas=n, reservations=Resources(cpus=cpus, memory=mem * GiB // 8 or None),
        max_per_node=maxp, ports=(PortSpec(80, host_port=port),) if port else (),
        constraints=(f"node.labels.zone=={zone}",) if zone else (), placement=strat),
    st.integers(0, 5), st.integers(1, 12), st.sampled_from([None, 0.25, 0.5, 1.0, 3.0]),
    st.integers(0, 12), st.sampled_from([None, 1, 2]), st.sampled_from([None, 8080, 9090]),
    st.sampled_from(["", "a"]), st.sampled_from(["spread", "binpack"]))


def _unique(items, key):
    seen = {}
    for it in items:
        seen.setdefault(key(it), it)
    return list(seen.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(node_st, max_size=8), st.lists(spec_st, max_size=4))
def test_property_never_overcommits_or_uses_unready_nodes(nodes, specs):
    nodes = _unique(nodes, lambda n: n.name)
    specs = _unique(specs, lambda s: s.name)
    requests = [r for s in specs for r in reqs(s, s.replicas)]
    plan = schedule(nodes, requests)
    by_name = {n.name: n for n in nodes}
    spec_of = {r.key: r.spec for r in requests}
    assert set(plan.placements) | set(plan.unplaced) == {r.key for r in requests}
    assert not set(plan.placements) & set(plan.unplaced)
    cpu: Dict[str, float] = {}
    mem: Dict[str, int] = {}
    ports: Dict[str, list] = {}
    count: Dict[tuple, int] = {}
    for key, n in plan.placements.items():
        info, spec = by_name[n], spec_of[key]
        assert info.status == NodeStatus.READY
        for c in spec.constraints:
            assert parse(c).matches(info.name, info.labels)
        p = placed(spec, n)
        cpu[n] = cpu.get(n, 0) + p.cpus
        mem[n] = mem.get(n, 0) + p.memory
        ports.setdefault(n, []).extend(p.host_ports)
        count[(spec.name, n)] = count.get((spec.name, n), 0) + 1
        if spec.max_per_node is not None:
            assert count[(spec.name, n)] <= spec.max_per_node
    for n in cpu:
        assert cpu[n] <= by_name[n].cpus + 1e-6
        assert mem[n] <= by_name[n].mem_total
        assert len(ports[n]) == len(set(ports[n]))
    for why in plan.unplaced.values():
        assert why  # every unplaced task is explained


@settings(max_examples=50, deadline=None)
@given(st.lists(node_st, max_size=8), st.lists(spec_st, max_size=4), st.randoms())
def test_property_deterministic_regardless_of_node_order(nodes, specs, rnd):
    nodes = _unique(nodes, lambda n: n.name)
    specs = _unique(specs, lambda s: s.name)
    requests = [r for s in specs for r in reqs(s, s.replicas)]
    a = schedule(nodes, requests)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    b = schedule(shuffled, requests)
    assert a == b


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10), st.integers(1, 60))
def test_property_spread_is_even_on_equal_nodes(n_nodes, replicas):
    plan = schedule([node(f"n{i}") for i in range(n_nodes)], reqs(ServiceSpec("w", "img"), replicas))
    counts = [per_node(plan).get(f"n{i}", 0) for i in range(n_nodes)]
    assert max(counts) - min(counts) <= 1


def test_scheduler_accounts_across_calls():
    s = Scheduler([node("a", cpus=1), node("b", cpus=1)])
    spec = ServiceSpec("w", "img", reservations=Resources(cpus=1))
    assert len(s.place(reqs(spec, 1)).placements) == 1
    assert len(s.place(reqs(spec, 1)).placements) == 1
    assert s.place(reqs(spec, 1)).unplaced


def test_spread_preference_evens_out_over_label_values_first():
    """Swarm's placement.preferences: 3 nodes in zone a and 1 in zone b, 4 replicas -> 2 and 2."""
    nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}),
             node("a3", labels={"zone": "a"}), node("b1", labels={"zone": "b"})]
    spec = ServiceSpec("web", "img", preferences=("node.labels.zone",))
    plan = schedule(nodes, reqs(spec, 4))
    got = per_node(plan)
    assert got["b1"] == 2 and sum(got.values()) == 4 and max(got.get(n, 0) for n in ("a1", "a2", "a3")) == 1
    # Without the preference the same nodes get one replica each.
    assert per_node(schedule(nodes, reqs(ServiceSpec("web", "img"), 4))) == \
        {"a1": 1, "a2": 1, "a3": 1, "b1": 1}


def test_spread_preference_counts_replicas_already_placed_and_unlabelled_nodes_as_a_group():
    nodes = [node("a1", labels={"zone": "a"}), node("b1", labels={"zone": "b"}), node("x1"), node("x2")]
    spec = ServiceSpec("web", "img", preferences=("node.labels.zone",))
    existing = [placed(spec, "a1"), placed(spec, "a1")]
    plan = Scheduler(nodes, existing).place(reqs(spec, 4))
    got = per_node(plan)
    # zone a has 2 already: b and the unlabelled group catch up first.
    assert got.get("a1", 0) == 0
    assert got["b1"] == 2 and got.get("x1", 0) + got.get("x2", 0) == 2
