"""Gossip tunables (``GossipConfig``), defaulting to memberlist's LAN profile.

Owns only numbers and the few formulas derived from them (retransmit limit,
suspicion bounds, push-pull scaling), so the core and the simulator agree on
them. Shipped to agents: Python 3.9 compatible, standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_PORT = 7946


@dataclass
class GossipConfig:
    # Failure detection (SWIM), memberlist LAN defaults but for indirect_checks: memberlist
    # asks 3 members. Over a lossy network (10% of packets lost) 3 leave a 1.5e-3 chance per
    # probe of suspecting a live member (both direct pings and all 3 relay paths lost:
    # 0.19^2 * 0.344^3), which at 1,000 members is 1.5 suspicions and refutations a second,
    # each spread to every member 16 times: 3.3 KB/s per member (bench/gossip). 6 relays cut
    # that 25x for 3 more relay requests on the probes whose first ping went unanswered;
    # with no loss they are never sent. Detection times do not change (bench/gossip/README).
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 6
    # Dissemination: gossip every 200 ms to 3 members, retransmit mult*ceil(log10(N+1)).
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_dead_time: float = 30.0
    retransmit_mult: int = 4
    # Lifeguard: suspicion min = mult*max(1, log10 N)*probe_interval, max = max_mult*min;
    # the local-health multiplier scales probe interval and timeout by (score+1).
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    # Anti-entropy: full state exchange every 30 s (scaled up above 32 nodes, as serf does),
    # and serf's reconnect: a push-pull with a random dead member so healed partitions merge.
    push_pull_interval: float = 30.0
    push_pull_scale: bool = True
    reconnect_interval: float = 30.0
    # With no live peer known, push-pull the seeds again this often (a lost join packet
    # costs one interval).
    rejoin_interval: float = 1.0
    # Metadata (utilization) is published at most this often; faster updates coalesce
    # so that every agent refreshing its stats cannot flood the mesh.
    meta_min_interval: float = 2.0
    # Value-only changes (utilization) of all members together cost each member at most
    # this many bytes/s: a publication reaches every member, each sending it
    # retransmit_limit(N) times, so with N members one is published every
    # N * limit * size / meta_budget s (3 members: ~17 s; 100: ~30 min; the master
    # polls utilization itself). Changes of these keys, or of the set of keys, are not
    # held back beyond meta_min_interval.
    meta_budget: float = 256.0
    meta_urgent_keys: "tuple[str, ...]" = ("address", "api_port", "labels", "version")
    # Wire.
    udp_buffer_size: int = 1400
    # Forget dead/left members after this long (serf keeps them 24 h; we keep 1 h), and
    # keep their last incarnation and metadata version this much longer, so an old
    # statement of theirs cannot bring them back.
    dead_reap_time: float = 3600.0
    tombstone_time: float = 86400.0
    # Packet stamps further than this from our clock (either way) are refused: the clock
    # skew tolerated between members. Anti-replay windows are kept 2x this long.
    max_clock_skew: float = 60.0
    # Members (and certificates) this node will hold at most.
    max_members: int = 10000
    # A member that has not shown it knows our certificate gets a hello (our
    # certificate, ~520 B) before our packets, at most this often.
    hello_interval: float = 0.3
    # No plaintext unless asked for explicitly (tests only: no sender is authenticated).
    allow_plaintext: bool = False

    def retransmit_limit(self, n: int) -> int:
        return self.retransmit_mult * int(math.ceil(math.log10(n + 1)))

    def suspicion_bounds(self, n: int) -> "tuple[float, float]":
        """(min, max) suspicion timeout in seconds for an estimated cluster size ``n``."""
        lo = self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval
        return lo, lo * self.suspicion_max_timeout_mult

    def push_pull_period(self, n: int) -> float:
        """serf's pushPullScale: one more interval per doubling above 32 nodes."""
        if not self.push_pull_scale or n <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)
