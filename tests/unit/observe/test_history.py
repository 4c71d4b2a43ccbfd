"""The dashboard's last hour (master/history.py): the ring, p99 from buckets, marks, samples."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List

from swarmlet.master.history import (AUTOSCALE, DEATH, ROLLBACK, ROLLOUT, History, Ring, classify, p99,
                                     rollout_ended)
from swarmlet.master.reconcile import Event
from swarmlet.shipped.lb.metrics import BUCKETS, LBMetrics
from swarmlet.shipped.models import NodeInfo, NodeStatus


def test_classify_knows_the_daemons_messages():
    assert classify("service", "revision 3: rolling update started") == ROLLOUT
    assert classify("service", "revision 5: rolling back to revision 5 (the spec of an earlier one)") == ROLLBACK
    assert classify("node", "ready -> down") == DEATH
    assert classify("node", "suspect -> down") == DEATH
    assert classify("scale", "autoscale 2 -> 4: cpu 180% for a target of 50%") == AUTOSCALE
    for kind, msg in [("node", "down -> ready"), ("scale", "replicas 2 -> 3"), ("service", "created"),
                      ("service", "revision 2"), ("task", "web slot 1: started on a")]:
        assert classify(kind, msg) is None, (kind, msg)
    # the failure message names the rollback but is not one: the rollback's own revision is
    assert classify("service", "update to revision 4 failed: unhealthy; rolling back to revision 3") is None
    assert rollout_ended("service", "update to revision 4 completed")
    assert rollout_ended("service", "update to revision 4 failed: unhealthy; rolling back to revision 3")
    assert not rollout_ended("service", "revision 4: rolling update started")


def test_p99_interpolates_within_the_bucket():
    bounds = (0.01, 0.1, 1.0)
    assert math.isnan(p99([0, 0, 0, 0], bounds))
    # 99 fast answers and one slow: the 99th is at the top of the fast bucket
    assert p99([99, 0, 1, 0], bounds) == 0.01
    # all in (0.01, 0.1]: 99 % of the way through that bucket
    assert abs(p99([0, 100, 0, 0], bounds) - (0.01 + 0.09 * 0.99)) < 1e-9
    # beyond the last bound: the last bound (a lower estimate, as Prometheus does)
    assert p99([0, 0, 0, 5], bounds) == 1.0


def test_ring_keeps_the_last_capacity_samples_in_order_and_drops_stale_series():
    r = Ring(4)
    for i in range(10):
        vals = {("node", "a", "cpu"): float(i)}
        if i < 3:
            vals[("node", "gone", "cpu")] = 1.0
        if i % 2:
            vals[("node", "b", "cpu")] = float(i)
        r.add(100.0 + i, vals)
    assert r.times() == [106.0, 107.0, 108.0, 109.0]
    assert r.values(("node", "a", "cpu")) == [6.0, 7.0, 8.0, 9.0]
    assert r.values(("node", "b", "cpu")) == [None, 7.0, None, 9.0]   # missing is null, not 0
    assert r.values(("node", "gone", "cpu")) is None                 # not seen for a whole span
    assert r.names("node") == ["a", "b"]
    assert r.times(since=107.0) == [108.0, 109.0]
    assert r.values(("node", "a", "cpu"), since=107.0) == [8.0, 9.0]


def test_memory_is_bounded_by_the_span():
    h = History(interval=10, span=3600)
    for i in range(2000):
        h.ring.add(float(i), {("node", f"n{j}", "cpu"): 1.0 for j in range(3)})
    assert len(h.ring.times()) == 360
    assert all(len(a) == 360 for a in h.ring.series.values())


def test_marks_from_commits_with_a_rollout_span():
    h = History()
    batch = SimpleNamespace(events=(Event("service", "web", "revision 2: rolling update started"),
                                    Event("task", "web.1.x", "web slot 1: placed on a")), now=50.0)
    h.on_commit(7, batch)
    h.on_commit(8, SimpleNamespace(events=(Event("node", "n3", "ready -> down"),), now=60.0))
    assert [(m["kind"], m["subject"], m["until"]) for m in h.marks] == [
        (ROLLOUT, "web", None), (DEATH, "n3", None)]
    h.on_commit(9, SimpleNamespace(events=(Event("service", "web", "update to revision 2 completed"),),
                                   now=80.0))
    assert h.marks[0]["until"] == 80.0
    h.ring.add(90.0, {})
    assert [m["kind"] for m in h.doc()["marks"]] == [ROLLOUT, DEATH]


def test_marks_are_read_back_from_the_event_log_within_the_span():
    h = History(span=3600)
    h.load_events([{"ts": 10.0, "kind": "node", "subject": "old", "message": "ready -> down"},
                   {"ts": 4000.0, "kind": "scale", "subject": "web",
                    "message": "autoscale 1 -> 2: cpu 90% for a target of 50%"}], now=4100.0)
    assert [(m["kind"], m["subject"]) for m in h.marks] == [(AUTOSCALE, "web")]


@dataclass
class _LB:
    metrics: LBMetrics = field(default_factory=LBMetrics)


class _Ingress:
    """The snapshot face of Ingress / IngressProcess over real LBMetrics."""

    def __init__(self, proxies: Dict[int, _LB], routes: Dict[int, str]) -> None:
        self.proxies, self.routes = proxies, routes

    def snapshot(self) -> Dict[str, dict]:
        out = {}
        for port, lb in self.proxies.items():
            m = lb.metrics
            out[str(port)] = {"service": self.routes[port], "requests": sum(m.requests.values()),
                              "by_status": {str(k): v for k, v in m.requests.items()},
                              "upstream_errors": dict(m.upstream_errors),
                              "duration_counts": list(m.duration.counts)}
        return out


def _master(nodes: List[NodeInfo], proxies: Dict[int, _LB], routes: Dict[int, str]) -> SimpleNamespace:
    return SimpleNamespace(node_infos=lambda: nodes, ingress=_Ingress(proxies, routes))


def test_samples_rates_errors_p99_and_node_aggregates():
    nodes = [NodeInfo(name=f"n{i}", address="x", cpu_percent=float(10 * i), mem_used=i * 100,
                      mem_total=1000, status=NodeStatus.READY) for i in range(1, 11)]
    nodes.append(NodeInfo(name="dead", address="x", cpu_percent=99.0, mem_used=1, mem_total=2,
                          status=NodeStatus.DOWN))
    lb = _LB()
    m = _master(nodes, {8080: lb}, {8080: "web"})
    h = History(interval=10)
    h.sample(m, 100.0)
    for _ in range(190):
        lb.metrics.answered(200, 0.004, 105.0)
    for _ in range(10):
        lb.metrics.answered(503, 0.2, 105.0)
    lb.metrics.upstream_error("connect")
    h.sample(m, 110.0)
    d = h.doc(nodes=["n3", "dead"])
    assert d["ts"] == [100.0, 110.0]
    web = d["services"]["web"]
    assert web["req_s"] == [None, 20.0]
    assert web["error_rate"][-1] == round(11 / 200, 4)
    # 2 % of answers took 0.2 s, so the p99 is in the (0.1, 0.25] bucket
    assert BUCKETS[7] * 1000 < web["p99_ms"][-1] <= BUCKETS[8] * 1000
    agg = d["nodes"]["*"]
    assert agg["cpu_mean"][-1] == 55.0 and agg["cpu_max"][-1] == 100.0 and agg["cpu_p90"][-1] == 90.0
    assert agg["mem_max"][-1] == 100.0
    assert d["nodes"]["n3"]["cpu"] == [30.0, 30.0]
    assert "dead" not in d["nodes"]   # a down node has no figures: a gap, not its last value


def test_a_load_balancer_made_anew_counts_from_zero():
    lb = _LB()
    m = _master([], {8080: lb}, {8080: "web"})
    h = History(interval=10)
    for _ in range(100):
        lb.metrics.answered(200, 0.001, 1.0)
    h.sample(m, 10.0)
    m.ingress.proxies[8080] = fresh = _LB()
    for _ in range(30):
        fresh.metrics.answered(200, 0.001, 15.0)
    h.sample(m, 20.0)
    assert h.doc()["services"]["web"]["req_s"][-1] == 3.0


def test_the_doc_picks_the_busiest_services_by_default():
    h = History()
    for i in range(3):
        h.ring.add(float(i), {("service", "quiet", "req_s"): 1.0, ("service", "busy", "req_s"): 50.0,
                              ("service", "mid", "req_s"): 10.0})
    assert list(h.doc(top=2)["services"]) == ["busy", "mid"]
    assert h.doc(top=2)["all_services"] == ["busy", "mid", "quiet"]
    assert list(h.doc(services=["quiet"])["services"]) == ["quiet"]
