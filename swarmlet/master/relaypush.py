"""The master's side of relayed routes: a signed delta to a few seeds, the rest as backstop.

When at least ``relay_threshold`` nodes hold the same routes version (the common
case at scale: one health flip moves every node from A to B), the pusher does
not send the same delta to each of them. ``RelayPush.wave`` signs the update
once (the master's own mTLS key, ``shipped/relayenvelope.py``), splits the sorted
names of the nodes it means to reach into ``relay_seeds`` contiguous ranges and
sends each range's first node the envelope with the range's bounds; agents
relay it to the rest of their range from their own gossip view
(``shipped/relaytree.py``) and answer with the names that hold it now. The
master marks those acknowledged and the pusher pushes directly (the existing
path, with its semantics for a push without answer and for a 409) to every
intended node that was not: a seed down, a forwarder that did not see a node,
a node that refused. So the relay saves bytes and never decides correctness.
Each seed's range is settled as that seed answers: a seed that accepts the request
and never answers holds back its own range, for its timeout, and no other.

The tree spans every node that is up (``seeds`` over all of them): the same
from wave to wave, so agents reuse their connections; only the intended group
is counted on. At 100 nodes a health flip cost the master 8 requests of about
680 bytes instead of 117 of about 420 (bench/scale); the agents send each other
about one request per node (counted apart in the bench). Small clusters (the
lab, fewer than ``relay_threshold`` (32) nodes on one version) keep the direct
path. At 1,000 simulated nodes every wave of a health change reached and was
acknowledged by all 1,000 (8 requests, 5.4 KB from the master) once each hop's
budget left room for the time a request waits before its handler runs
(``MasterConfig.relay_budget``, bench/scale/README.md).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import logging
import os
import time
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Counter, Dict, List, Optional,
                    Sequence, Set, Tuple, Union)

from ..client import agent_peer
from ..shipped.exceptions import SwarmletError
from ..shipped.gossip.identity import Identity
from ..shipped.relayenvelope import seal
from ..shipped.relaytree import PATH, seeds

if TYPE_CHECKING:
    from .daemon import Master

log = logging.getLogger("swarmlet.master.relay")

# A seed's answer: an error, or (the version it acknowledges, the names holding it, refusals).
SendResult = Union[str, Tuple[int, List[str], List[str]]]
# Called as each seed's range is done: (its names, those of them that acknowledged).
RangeDone = Callable[[List[str], Set[str]], None]


class RelayPush:
    def __init__(self, m: "Master") -> None:
        self.m = m
        self._identity: Optional[Identity] = None
        self._identity_key: Optional[Tuple[str, float]] = None   # (cert path, mtime) loaded

    async def identity(self) -> Optional[Identity]:
        """The master's certificate and key (what its client presents), loaded again when the
        certificate file changed (a renewal); None if it cannot sign (then: direct pushes)."""
        files = getattr(self.m.client, "identity_files", None)
        if not files:
            return None
        cert, key = files[0], files[1]
        try:
            mtime = os.stat(cert).st_mtime
        except OSError:
            return self._identity
        if self._identity_key != (cert, mtime):
            try:
                self._identity = await asyncio.to_thread(Identity.load, cert, key)
            except Exception as exc:  # a bad key: the direct path still works
                log.warning("cannot sign relayed routes: %s", exc)
                self._identity = None
            self._identity_key = (cert, mtime)
        return self._identity

    async def wave(self, names: Sequence[str], update: bytes, version: int,
                   on_range: Optional[RangeDone] = None) -> Set[str]:
        """Relay ``update`` (the routes update's JSON without its node) to ``names``; the names
        that acknowledged ``version``. Never raises for a node's trouble.

        ``on_range(range, acked)`` is called as each seed answers (or fails, or times out),
        with the names of its range and those of them that acknowledged ``version``: a seed
        that accepts the request and never answers then holds back its own range alone, for
        its timeout, and not every node of the wave."""
        m, cfg = self.m, self.m.cfg
        ident = await self.identity()
        if ident is None:
            return set()
        env = seal(update, ident)
        budget = cfg.relay_budget
        order = sorted(set(names))
        sends = []
        for seed, lo, hi in seeds(order, cfg.relay_seeds):
            rec = m.nodes.get(seed)
            if rec is None:
                continue
            body = json.dumps(dict(env, lo=lo, hi=hi, fanout=cfg.relay_fanout, budget=budget, hops=0),
                              separators=(",", ":")).encode()
            span = order[bisect.bisect_left(order, lo):bisect.bisect_right(order, hi)]
            sends.append(self._ranged(span, self._send(agent_peer(seed, rec.address, rec.api_port),
                                                       body, budget + 1.0)))
        acked: Set[str] = set()
        refused = 0
        why: Counter[str] = collections.Counter()
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(c) for c in sends]
        try:
            for done in asyncio.as_completed(tasks):
                span, got = await done
                mine: Set[str] = set()
                if isinstance(got, str):
                    why[f"seed: {got}"[:40]] += 1
                else:
                    answer_version, names_acked, reasons = got
                    if answer_version == version:
                        mine = set(names_acked)
                        acked |= mine
                    refused += len(reasons)
                    why.update(r[:28] for r in reasons)
                if on_range is not None:
                    try:
                        on_range(span, mine)
                    except Exception:   # the caller's trouble must not lose the other ranges
                        log.exception("settling a relayed range failed")
        finally:
            for task in tasks:          # cancelled (the master stopping): so are the sends
                task.cancel()
        m.counters["relay_waves"] = m.counters.get("relay_waves", 0) + 1
        m.counters["relay_acked"] = m.counters.get("relay_acked", 0) + len(acked & set(names))
        log.info("relayed routes %s to %d of %d nodes in %.2f s (%d refused: %s)", version,
                 len(acked & set(names)), len(names), time.monotonic() - t0, refused,
                 ", ".join(f"{k} {v}" for k, v in why.most_common(3)) or "none")
        return acked

    @staticmethod
    async def _ranged(span: List[str], send: Awaitable[SendResult]) -> Tuple[List[str], SendResult]:
        return span, await send

    async def _send(self, peer: Any, body: bytes, timeout: float) -> SendResult:
        try:
            answer = await self.m.client.call(peer, "PUT", PATH, raw=body, timeout=timeout)
        except SwarmletError as exc:   # a seed down or refusing: its range gets the backstop
            log.debug("relay seed %s: %s", peer, exc)
            return str(exc)
        if not isinstance(answer, dict):
            return "not a JSON object"
        acked = answer.get("acked")
        refused = answer.get("refused")
        version = answer.get("version")
        return (version if isinstance(version, int) else -1,
                [a for a in acked if isinstance(a, str)] if isinstance(acked, list) else [],
                [str(v) for v in refused.values()][:100_000] if isinstance(refused, dict) else [])


def groups(bases: Dict[str, int], threshold: int) -> Tuple[Dict[int, List[str]], List[str]]:
    """({base: names} of the groups to relay, the names to push directly); ``threshold`` 0:
    no relay. Pure."""
    by: Dict[int, List[str]] = {}
    for name, base in bases.items():
        by.setdefault(base, []).append(name)
    relay = {b: sorted(ns) for b, ns in by.items() if threshold > 0 and len(ns) >= threshold}
    direct = sorted(n for b, ns in by.items() if b not in relay for n in ns)
    return relay, direct
