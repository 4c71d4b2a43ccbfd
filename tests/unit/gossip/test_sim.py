"""Whole-cluster behaviour of the real core over the simulated network (fake clock).

Join, death, metadata, partition and heal, flapping, paused and slow members, and the
long lossy run that must produce no false "dead". Bounds are generous upper limits on
simulated seconds; the measured figures live in bench/gossip.
"""

from __future__ import annotations

from collections import Counter
from typing import List, Tuple

import pytest

from swarmlet.shipped.gossip.config import GossipConfig
from swarmlet.shipped.gossip.crypto import Keyring, generate_key
from swarmlet.shipped.gossip.members import EventKind, MemberState
from swarmlet.shipped.gossip.sim import SimNetwork

pytestmark = pytest.mark.unit


def record(net: SimNetwork) -> List[Tuple[float, str, EventKind, str]]:
    log: List[Tuple[float, str, EventKind, str]] = []
    net.observers.append(lambda t, obs, ev: log.append((t, obs, ev.kind, ev.member.name)))
    return log


def deaths(log, excluding=()) -> Counter:
    return Counter(name for _, _, kind, name in log if kind == EventKind.DEAD and name not in excluding)


def assert_healthy(net: SimNetwork) -> None:
    for n in net.nodes.values():
        assert n.core.stats["internal_errors"] == 0
        assert n.core.stats["dropped_auth"] == n.core.stats["dropped_malformed"] == 0


@pytest.mark.parametrize("n", [3, 30])
def test_members_joining_one_by_one_converge(n):
    net = SimNetwork(seed=n, keyring=Keyring([generate_key()]))
    net.add("n0")
    for i in range(1, n):
        net.add(f"n{i}", {"address": f"10.0.0.{i}", "api_port": 7443}, seeds=["n0"])
        net.run_for(0.1)
    assert net.run_until_true(net.converged, timeout=30) is not None
    assert_healthy(net)
    m = {x.name: x for x in net.nodes["n0"].core.members()}
    assert m["n5" if n > 5 else "n2"].meta["api_port"] == 7443


@pytest.mark.parametrize("seed", range(5))
def test_members_started_together_converge(seed):
    # `swarmlet join` starts many agents at once, all seeded with the same member.
    net = SimNetwork(seed=seed, loss=0.05)
    net.add("n0")
    for i in range(1, 30):
        net.add(f"n{i}", seeds=["n0"])
    t = net.run_until_true(net.converged, timeout=15)
    assert t is not None and t < 10
    assert_healthy(net)


def test_a_new_member_reaches_all_of_1000_quickly():
    net = SimNetwork(seed=7)
    net.add_converged(1000)
    net.run_for(1)
    net.add("newcomer", seeds=["n17"])
    t0 = net.now
    t = net.run_until_true(lambda: net.all_see("newcomer", MemberState.ALIVE), 10, 0.2)
    assert t is not None and t - t0 < 5
    assert net.nodes["newcomer"].core.live_count == 1001


@pytest.mark.parametrize("n,loss", [(5, 0.0), (50, 0.1)])
def test_a_crashed_member_is_declared_dead_everywhere(n, loss):
    net = SimNetwork(seed=n, loss=loss)
    net.add_converged(n)
    log = record(net)
    net.run_for(3)
    net.kill("n1")
    lo, hi = net.config.suspicion_bounds(n)
    t0 = net.now
    t = net.run_until_true(lambda: net.all_see("n1", MemberState.DEAD), hi + 10)
    assert t is not None and lo <= t - t0 <= hi + 10
    assert not deaths(log, excluding={"n1"})
    assert_healthy(net)


def test_metadata_change_reaches_everyone_and_newer_wins():
    net = SimNetwork(seed=3, config=GossipConfig(allow_plaintext=True, meta_budget=1e9))
    net.add_converged(100)
    net.run_for(2)
    net.update_meta("n9", {"cpu_percent": 50.0, "tasks": 1})
    net.run_for(0.3)
    net.update_meta("n9", {"cpu_percent": 75.0, "tasks": 2})
    t0 = net.now

    def seen() -> bool:
        return all(next(m for m in n.core.members() if m.name == "n9").meta.get("tasks") == 2
                   for n in net.live())
    t = net.run_until_true(seen, 10, 0.05)
    assert t is not None and t - t0 < 3


def test_partition_then_heal_converges():
    cfg = GossipConfig(allow_plaintext=True, reconnect_interval=10.0)
    net = SimNetwork(seed=11, config=cfg)
    names = net.add_converged(20)
    a, b = names[:10], names[10:]
    net.run_for(2)
    net.partition(a, b)
    assert net.run_until_true(lambda: all(net.all_see(x, MemberState.DEAD, among=a) for x in b),
                              120, 1.0) is not None
    assert net.converged(among=a) and net.converged(among=b)
    net.heal()
    t0 = net.now
    t = net.run_until_true(net.converged, 120, 0.5)
    assert t is not None and t - t0 < 60
    assert_healthy(net)


def test_flapping_member_settles_alive():
    net = SimNetwork(seed=5, config=GossipConfig(allow_plaintext=True, reconnect_interval=10.0))
    names = net.add_converged(10)
    net.run_for(2)
    others = [x for x in names if x != "n4"]
    for _ in range(8):                          # 8 s cut off, 4 s reachable, 8 times
        net.partition(others, ["n4"])
        net.run_for(8)
        net.heal()
        net.run_for(4)
    t = net.run_until_true(net.converged, 90, 0.5)
    assert t is not None
    assert_healthy(net)
    assert net.nodes["n4"].core.inc > 0          # it had to refute along the way


def test_paused_member_shorter_than_suspicion_is_never_declared_dead():
    net = SimNetwork(seed=9)
    net.add_converged(10)
    log = record(net)
    net.run_for(3)
    net.pause("n3", 2.5)
    net.run_for(30)
    assert not deaths(log)
    assert net.converged()


def _slow_member_run(awareness_max: int):
    net = SimNetwork(seed=13, config=GossipConfig(allow_plaintext=True,
                                                  awareness_max_multiplier=awareness_max))
    net.add_converged(10)
    log = record(net)
    net.slow("n3", 1.2)     # n3 handles every packet 1.2 s late: longer than a probe round
    net.run_for(120)
    return net, log


def test_slow_member_causes_no_false_deaths_and_lifeguard_quiets_it():
    net, log = _slow_member_run(awareness_max=8)
    assert not deaths(log)
    assert all(n.core.state_of(m) in (MemberState.ALIVE, MemberState.SUSPECT)
               for n in net.live() for m in net.nodes)
    slow = net.nodes["n3"].core
    assert slow.stats["refutes"] > 0            # others did suspect it; it refuted in time
    # Without the local-health multiplier the slow member accuses healthy ones over and over.
    plain, _ = _slow_member_run(awareness_max=1)
    assert plain.nodes["n3"].core.stats["suspicions"] >= 10 * max(1, slow.stats["suspicions"])


def test_ten_minutes_of_100_members_at_5_percent_loss_without_a_false_death():
    net = SimNetwork(seed=21, loss=0.05)
    net.add_converged(100)
    log = record(net)
    net.run_for(600)
    assert not deaths(log)
    assert net.converged()
    suspected = sum(1 for _, _, k, _ in log if k == EventKind.SUSPECT)
    refuted = sum(1 for _, _, k, _ in log if k == EventKind.ALIVE)
    assert suspected == 0 or refuted > 0


def test_a_new_member_of_a_secure_cluster_of_300_learns_everyone_and_everyone_it():
    # The newcomer's certificate rides beside its record (or is fetched from whoever
    # relayed the record); the newcomer fetches 300 in paced batches.
    net = SimNetwork(seed=8, keyring=Keyring([generate_key()]))
    net.add_converged(300)
    net.run_for(1)
    net.add("newcomer", {"api_port": 1}, seeds=["n17"])
    t0 = net.now
    t = net.run_until_true(lambda: net.all_see("newcomer", MemberState.ALIVE), 10, 0.2)
    assert t is not None and t - t0 < 5
    t = net.run_until_true(lambda: net.nodes["newcomer"].core.live_count == 301, 20, 0.2)
    assert t is not None and t - t0 < 10
    assert_healthy(net)
    s = net.nodes["newcomer"].core.stats
    assert s["certs_added"] >= 300 and s["bad_signatures"] == 0


def test_a_join_under_10_percent_loss_reaches_everyone_without_waiting_on_certificates():
    # Under loss, a member that parked the newcomer's news and lost its certificate request
    # (or the answer) waited for another relay or a push-pull: 50 s for 100 members. The
    # certificate now rides beside the news (``StateMachine._spread_cert``).
    net = SimNetwork(seed=3, keyring=Keyring([generate_key()]), loss=0.1)
    net.add_converged(100)
    net.run_for(2)
    net.add("newcomer", {"api_port": 1}, seeds=["n17"])
    t0 = net.now
    t = net.run_until_true(lambda: net.all_see("newcomer", MemberState.ALIVE), 30, 0.2)
    assert t is not None and t - t0 < 10, None if t is None else t - t0
    assert_healthy(net)
