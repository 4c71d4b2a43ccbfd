"""Node status transitions (master/nodestatus.py), with a fake clock and no master.

These were integration tests that built a Master whose agent client pointed
nowhere and poked its internals: the rules are pure, so they are tested here.
"""

from __future__ import annotations

import pytest

from swarmlet.master.liveness import LivenessConfig
from swarmlet.master.nodestatus import NodeMemory, Observation, judge
from swarmlet.shipped.models import NodeStatus

pytestmark = pytest.mark.unit

CFG = LivenessConfig()


class Node:
    """One node as the poller sees it: steps of (reachable, gossip) on a fake clock."""

    def __init__(self, memory: NodeMemory, now: float, registered_at: float, started_at: float):
        self.memory, self.now = memory, now
        self.registered_at, self.started_at = registered_at, started_at
        self.failing_since = None
        self.rebalances = 0

    def step(self, *, reachable: bool, gossip=None, dt: float = 1.0) -> NodeStatus:
        self.now += dt
        if reachable:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = self.now
        self.observe(reachable, gossip)
        return self.memory.status

    def observe(self, reachable: bool, gossip=None) -> None:
        t = judge(self.memory, Observation(self.now, reachable, self.failing_since, gossip,
                                           self.registered_at, self.started_at), CFG)
        if t is not None:
            assert t.old != t.new and t.memory.status == t.new
            self.memory = t.memory
            self.rebalances += t.rebalance


def test_unpolled_nodes_stay_suspect_after_a_restart():
    """Registered a day before this master started: judged from the start, not from then."""
    n = Node(NodeMemory(), now=1000.0 + 86400, registered_at=1000.0, started_at=1000.0 + 86400)
    n.observe(False)
    assert n.memory.status == NodeStatus.SUSPECT
    n.now += 1.0                               # still within the grace of a first poll
    n.observe(False)
    assert n.memory.status == NodeStatus.SUSPECT
    n.now += 60.0                              # never answered since the restart: down
    n.observe(False)
    assert n.memory.status == NodeStatus.DOWN
    assert n.rebalances == 0


def test_first_poll_after_a_restart_is_not_a_join():
    n = Node(NodeMemory(), now=200.0, registered_at=10.0, started_at=199.0)
    assert n.step(reachable=True) == NodeStatus.READY
    assert n.rebalances == 0 and n.memory.ever_ready


def test_a_node_that_joins_this_master_opens_the_window():
    n = Node(NodeMemory(), now=200.0, registered_at=150.0, started_at=100.0)
    assert n.step(reachable=True) == NodeStatus.READY
    assert n.rebalances == 1


def _ready_node() -> Node:
    return Node(NodeMemory(status=NodeStatus.READY, ever_ready=True), now=100.0, registered_at=0.0,
                started_at=0.0)


@pytest.mark.parametrize("via_suspect", [False, True])
def test_a_returning_node_opens_the_rebalance_window(via_suspect):
    n = _ready_node()
    assert n.step(reachable=False, gossip="dead") == NodeStatus.DOWN
    assert n.rebalances == 0 and n.memory.lost
    if via_suspect:      # rebooted: gossip sees it alive before its API answers
        assert n.step(reachable=False, gossip="alive") == NodeStatus.SUSPECT
        assert n.rebalances == 0 and n.memory.lost
    assert n.step(reachable=True, gossip="alive") == NodeStatus.READY
    assert n.rebalances == 1 and not n.memory.lost


def test_a_suspect_blip_of_a_ready_node_does_not_rebalance():
    n = _ready_node()
    assert n.step(reachable=False, gossip="alive") == NodeStatus.SUSPECT
    assert n.step(reachable=True, gossip="alive") == NodeStatus.READY
    assert n.rebalances == 0
    # and once back, a later blip is again only a blip
    assert n.step(reachable=False, gossip="dead") == NodeStatus.DOWN
    assert n.step(reachable=True, gossip="alive") == NodeStatus.READY
    assert n.rebalances == 1
    assert n.step(reachable=False, gossip="alive") == NodeStatus.SUSPECT
    assert n.step(reachable=True, gossip="alive") == NodeStatus.READY
    assert n.rebalances == 1


def test_left_is_lost_too():
    n = _ready_node()
    assert n.step(reachable=False, gossip="left") == NodeStatus.LEFT
    assert n.step(reachable=True) == NodeStatus.READY and n.rebalances == 1


def test_no_transition_without_a_change():
    m = NodeMemory(status=NodeStatus.READY, ever_ready=True)
    assert judge(m, Observation(5.0, True, None, "alive", 0.0, 0.0), CFG) is None
