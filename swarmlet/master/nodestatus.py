"""A node's status over time: each judgement of liveness becomes a transition. Pure.

``liveness.liveness`` says what a node is *now* (ready, suspect, down, left)
from reachability and the gossip view. This module owns what follows from a
*change*: the node's memory of having been lost or ever ready, and whether the
change opens the auto-rebalance window. The poller (``poller.py``) applies the
result: an event, a push to a node that came back, new routes, a reconcile.

Rules:
- a node not polled since this master started is judged from the start, not
  from its registration, so a restarted master never calls every node down;
- a node that was down or left and is ready again has *recovered*, also when
  it came back through suspect (its gossip answers before its API);
- a node seen ready for the first time after registering with this master has
  *joined*; both open the rebalance window, a suspect blip of a ready node does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..shipped.models import NodeStatus
from .liveness import LivenessConfig, liveness

LOST = (NodeStatus.DOWN, NodeStatus.LEFT)


@dataclass(frozen=True)
class NodeMemory:
    """What the master remembers of a node's status between judgements (not persisted)."""

    status: NodeStatus = NodeStatus.SUSPECT
    ever_ready: bool = False
    lost: bool = False        # down or left since it was last ready: its return rebalances


@dataclass(frozen=True)
class Observation:
    """What the master knows at ``now`` about one node."""

    now: float
    reachable: bool
    failing_since: Optional[float]
    gossip: Optional[str]
    registered_at: float
    started_at: float          # when this master started
    refused: bool = False      # the last poll's connection was refused: the host is up


@dataclass(frozen=True)
class Transition:
    old: NodeStatus
    new: NodeStatus
    memory: NodeMemory         # the node's memory after the change
    rebalance: bool            # recovered or joined: open the auto-rebalance window

    @property
    def message(self) -> str:
        return f"{self.old.value} -> {self.new.value}"


def judge(memory: NodeMemory, obs: Observation,
          cfg: LivenessConfig = LivenessConfig()) -> Optional[Transition]:
    """The transition ``obs`` causes, or None when the status stays."""
    new = liveness(obs.now, obs.reachable, obs.failing_since, obs.gossip,
                   max(obs.registered_at, obs.started_at), cfg, obs.refused)
    if new == memory.status:
        return None
    recovered = new == NodeStatus.READY and (memory.status in LOST or memory.lost)
    joined = (new == NodeStatus.READY and not memory.ever_ready
              and obs.registered_at >= obs.started_at)   # not the first poll after a restart
    lost = memory.lost or new in LOST
    ever_ready = memory.ever_ready
    if new == NodeStatus.READY:
        ever_ready, lost = True, False
    return Transition(memory.status, new, replace(memory, status=new, lost=lost,
                                                  ever_ready=ever_ready),
                      rebalance=recovered or joined)
