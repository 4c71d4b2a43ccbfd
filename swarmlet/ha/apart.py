"""Keep etcd's raft leader off the machine of the leading master.

A machine that holds both leaders costs two elections in a row when it dies: etcd's own
(followers wait an election timeout, 1-2 s) and then the master lease, which etcd's new
raft leader extends by that timeout before it can lapse (TTL + 1 s). On the lab that was
up to 8.5 s against a goal of 5 s. With the two leaders on different machines, a death
costs one of them: the master lease (TTL + the followers' poll), or etcd's election
while the master leader keeps its lease.

The leading master looks every few seconds (``HAMaster._keep_apart``) and, when its own
etcd member leads raft and every member answers, hands raft leadership to another member (etcd's MoveLeader,
``/v3/maintenance/transfer-leadership``: about 0.1 s, no write lost). ``choose`` is the
pure decision; ``step`` the one round of I/O.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

from ..shipped.exceptions import StoreError
from . import etcd as E

log = logging.getLogger("swarmlet.ha")


def choose(local: Optional[str], leader: Optional[str], healthy: List[str],
           members: int) -> Optional[str]:
    """The member to hand raft leadership to, or None (not ours, or nobody to take it).
    The lowest id of the healthy others: every master picks the same one.

    Only while every one of the ``members`` answers: with one down, losing any other loses
    the quorum anyway, so a move buys nothing and costs a raft election while the cluster
    is recovering (a new leader taking over right then would see its first writes fail)."""
    if local is None or leader != local or len(set(healthy)) < members:
        return None
    others = sorted(m for m in healthy if m != local)
    return others[0] if others else None


def step(etcd: E.Etcd, name: str) -> Optional[str]:
    """One look: if member ``name`` leads raft, move it to another healthy member.
    Returns the member id leadership went to, or None. Errors are the caller's to log."""
    members: Dict[str, int] = {}
    local = next((str(m["ID"]) for m in etcd.members() if m.get("name") == name), None)
    statuses: Dict[str, dict] = {}
    for i in range(len(etcd.endpoints)):
        try:
            st = etcd.status(i)
        except StoreError:
            continue
        mid = str(st.get("header", {}).get("member_id", ""))
        statuses[mid] = st
        members[mid] = i
    if local is None or local not in statuses:
        return None
    target = choose(local, str(statuses[local].get("leader", "")), list(statuses),
                    len(etcd.endpoints))
    if target is None:
        return None
    etcd.call("maintenance/transfer-leadership", {"targetID": target}, endpoint=members[local])
    log.info("etcd raft leadership moved off this master's machine to member %s", target)
    return target
