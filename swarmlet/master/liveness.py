"""Is a node up? Combines the master's own reachability with the gossip view. Pure.

The master polls each agent; agents gossip (SWIM) among themselves and the
master reads their member lists. Rules, with ``unreachable_for`` the seconds
since the master's polls started failing:
- the API answers: ready (the master can push to it; that is what counts);
- gossip says ``left``: left;
- the host refuses the connection (its kernel answers, nothing listens: the
  agent crashed and systemd restarts it within seconds): suspect, and down
  only after ``restart_grace``, whatever gossip says (the gossip runs in that
  same agent, so its peers' "dead" tells nothing more). Its containers run on
  meanwhile and the restarted agent adopts them; replacing them at once made
  an agent crash cost a container per replica on the node;
- gossip says dead: down;
- unreachable and gossip says ``suspect`` (its peers cannot reach it either),
  or gossip has no opinion (a one-node cluster): down after ``down_after``;
- unreachable but gossip says ``alive`` (a partition between master and
  node only): suspect, and down only after ``partition_grace``, so tasks are
  not duplicated because of a broken master link alone.
Suspect nodes keep their tasks and get no new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

from ..shipped.models import NodeStatus

_GOSSIP_RANK = {"alive": 0, "ready": 0, "suspect": 1, "dead": 2, "down": 2, "failed": 2, "left": 3}


@dataclass(frozen=True)
class LivenessConfig:
    down_after: float = 2.0
    partition_grace: float = 30.0
    never_seen_grace: float = 10.0
    restart_grace: float = 15.0     # systemd's RestartSec=1 plus the agent's start, with room


def gossip_views(views: Iterable[Iterable[Mapping]]) -> Dict[str, str]:
    """Merge member lists from several agents: the gravest state anyone reports wins."""
    out: Dict[str, str] = {}
    for members in views:
        for m in members:
            name = str(m.get("name", ""))
            state = str(m.get("state", "")).lower()
            if state not in _GOSSIP_RANK or not name:
                continue
            if name not in out or _GOSSIP_RANK[state] > _GOSSIP_RANK[out[name]]:
                out[name] = state
    return out


def liveness(now: float, reachable: bool, failing_since: Optional[float], gossip: Optional[str],
             registered_at: float, cfg: LivenessConfig = LivenessConfig(),
             refused: bool = False) -> NodeStatus:
    """``refused``: the last failure was a connection the host refused (see above)."""
    if reachable:
        return NodeStatus.READY
    rank = _GOSSIP_RANK.get(gossip or "", -1)
    if rank == 3:
        return NodeStatus.LEFT
    if refused and failing_since is not None:
        return NodeStatus.DOWN if now - failing_since >= cfg.restart_grace else NodeStatus.SUSPECT
    if rank == 2:
        return NodeStatus.DOWN
    since = failing_since if failing_since is not None else registered_at
    grace = cfg.never_seen_grace if failing_since is None else 0.0
    waited = now - since
    if rank == 0:
        return NodeStatus.DOWN if waited >= cfg.partition_grace + grace else NodeStatus.SUSPECT
    return NodeStatus.DOWN if waited >= cfg.down_after + grace else NodeStatus.SUSPECT
