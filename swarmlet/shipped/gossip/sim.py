"""A deterministic simulated network for ``GossipCore``: fake clock, latency, loss,
partitions, crashes, pauses and slow members.

It drives the real core (real wire format, real AES-GCM when given a keyring) with a
discrete-event loop: one heap of deliveries and per-member timer wake-ups, each member
woken only at its own ``next_deadline()``, so 1000 members simulate in seconds. The
same seed gives the same run. Tests and ``bench/gossip`` use it; nothing here does
real I/O or reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .config import GossipConfig
from .core import Addr, GossipCore, Output
from .crypto import Keyring
from .members import MemberEvent, MemberState

Observer = Callable[[float, str, MemberEvent], None]

_DELIVER, _TICK = 0, 1


class SimNode:
    __slots__ = ("name", "addr", "core", "up", "tick_at", "paused_until", "delay", "epoch")

    def __init__(self, name: str, addr: Addr, core: GossipCore, epoch: int) -> None:
        self.name = name
        self.addr = addr
        self.core = core
        self.up = True
        self.tick_at = math.inf
        self.paused_until = 0.0
        self.delay = 0.0      # extra inbound processing delay: a slow, starved member
        self.epoch = epoch


class SimNetwork:
    def __init__(self, seed: int = 0, *, config: Optional[GossipConfig] = None,
                 keyring: Optional[Keyring] = None, latency: Tuple[float, float] = (0.0005, 0.002),
                 loss: float = 0.0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.config = config or GossipConfig(allow_plaintext=keyring is None)
        self.keyring = keyring
        self.latency = latency
        self.loss = loss
        self.nodes: Dict[str, SimNode] = {}
        self._by_addr: Dict[Addr, SimNode] = {}
        self._heap: List[Tuple[float, int, int, Any, Any, Any]] = []
        self._seq = itertools.count()
        self._group: Optional[Dict[str, int]] = None
        self._epochs = itertools.count(1)
        self.observers: List[Observer] = []
        self.delivered = 0
        self.dropped = 0

    # --- building the cluster ----------------------------------------------------------

    def _addr_for(self, i: int) -> Addr:
        return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 7946)

    def add(self, name: str, meta: Optional[Dict[str, Any]] = None,
            seeds: Iterable[str] = (), config: Optional[GossipConfig] = None) -> SimNode:
        """Start a member and, if ``seeds`` (member names) are given, join through them."""
        old = self.nodes.get(name)
        addr = old.addr if old is not None else self._addr_for(len(self.nodes) + 1)
        epoch = next(self._epochs)
        core = GossipCore(name, addr, keyring=self.keyring, config=config or self.config,
                          meta=meta or {}, now=self.now, epoch=epoch,
                          rng=random.Random(self.rng.random()))
        node = SimNode(name, addr, core, epoch)
        self.nodes[name] = node
        self._by_addr[addr] = node
        seed_addrs = [self.nodes[s].addr for s in seeds]
        self._after(node, core.join(seed_addrs, self.now) if seed_addrs else core.tick(self.now))
        return node

    def add_converged(self, n: int, prefix: str = "n",
                      meta: Optional[Callable[[int], Dict[str, Any]]] = None) -> List[str]:
        """``n`` members that already know each other (as after a long quiet period)."""
        names = [f"{prefix}{i}" for i in range(n)]
        metas = [meta(i) if meta else {} for i in range(n)]
        nodes = [self.add(nm, metas[i]) for i, nm in enumerate(names)]
        roster = [(nd.name, nd.addr, 0, metas[i]) for i, nd in enumerate(nodes)]
        for nd in nodes:
            nd.core.seed_members(roster)
            self._reschedule(nd)
        return names

    # --- faults ----------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """Crash: no leave message, packets to it vanish."""
        self.nodes[name].up = False

    def restart(self, name: str, seeds: Iterable[str] = (), meta: Optional[Dict[str, Any]] = None
                ) -> SimNode:
        """A new process at the same address (fresh incarnation 0, newer epoch)."""
        return self.add(name, meta, seeds)

    def pause(self, name: str, duration: float) -> None:
        """Freeze a member (GC pause, SIGSTOP): packets queue up, timers wait."""
        self.nodes[name].paused_until = self.now + duration

    def slow(self, name: str, delay: float) -> None:
        """Every packet to ``name`` is processed ``delay`` seconds late."""
        self.nodes[name].delay = delay

    def partition(self, *groups: Iterable[str]) -> None:
        """Only members of the same group hear each other (unlisted members: group -1)."""
        self._group = {}
        for gi, g in enumerate(groups):
            for nm in g:
                self._group[nm] = gi

    def heal(self) -> None:
        self._group = None

    # --- driving -------------------------------------------------------------------------

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        self._after(node, node.core.leave(self.now))

    def update_meta(self, name: str, meta: Dict[str, Any]) -> None:
        node = self.nodes[name]
        self._after(node, node.core.update_meta(meta, self.now))

    def inject(self, name: str, data: bytes, src: Addr) -> None:
        """Deliver raw bytes to a member now (forged, replayed or garbage packets)."""
        node = self.nodes[name]
        self._after(node, node.core.receive(data, src, self.now))

    def run_until(self, t: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t:
            when, _, kind, a, b, c = pop(heap)
            self.now = when
            if kind == _TICK:
                node = a
                if node.tick_at != when or node is not self.nodes.get(node.name) or not node.up:
                    continue
                node.tick_at = math.inf
                if node.paused_until > when:
                    node.tick_at = node.paused_until
                    self._push(node.paused_until, _TICK, node)
                    continue
                self._after(node, node.core.tick(when))
            else:
                node = self._by_addr.get(a)
                if node is None or not node.up:
                    continue
                if node.paused_until > when:
                    self._push(node.paused_until, _DELIVER, a, b, c)
                    continue
                self.delivered += 1
                out = node.core.receive(b, c, when)
                if node.tick_at <= when:  # timers due while the packet waited run first
                    node.tick_at = math.inf
                    self._after(node, node.core.tick(when))
                self._after(node, out)
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float, step: float = 0.1
                       ) -> Optional[float]:
        """Advance in ``step``s until ``pred()``; the sim time it became true, or None."""
        end = self.now + timeout
        while self.now < end:
            if pred():
                return self.now
            self.run_until(min(end, self.now + step))
        return self.now if pred() else None

    # --- inspection ----------------------------------------------------------------------

    def live(self) -> List[SimNode]:
        return [n for n in self.nodes.values() if n.up and not n.core.left]

    def all_see(self, name: str, state: MemberState, among: Optional[Iterable[str]] = None) -> bool:
        nodes = [self.nodes[m] for m in among] if among is not None else self.live()
        return all(n.core.state_of(name) == state for n in nodes if n.name != name)

    def converged(self, among: Optional[Iterable[str]] = None) -> bool:
        """Every live member sees every other live member alive."""
        nodes = [self.nodes[m] for m in among] if among is not None else self.live()
        names = [n.name for n in nodes]
        return all(n.core.state_of(m) == MemberState.ALIVE for n in nodes for m in names)

    # --- plumbing --------------------------------------------------------------------------

    def _push(self, when: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, a, b, c))

    def _reschedule(self, node: SimNode) -> None:
        d = node.core.next_deadline()
        if d < node.tick_at:
            node.tick_at = d
            self._push(max(d, self.now), _TICK, node)
            node.tick_at = max(d, self.now)

    def _after(self, node: SimNode, out: Output) -> None:
        if out.sends:
            rng = self.rng
            lo, hi = self.latency
            group = self._group
            src_group = group.get(node.name, -1) if group is not None else 0
            for data, dst in out.sends:
                if self.loss and rng.random() < self.loss:
                    self.dropped += 1
                    continue
                target = self._by_addr.get(dst)
                if target is None:
                    self.dropped += 1
                    continue
                if group is not None and group.get(target.name, -1) != src_group:
                    self.dropped += 1
                    continue
                when = self.now + lo + (hi - lo) * rng.random() + target.delay
                self._push(when, _DELIVER, dst, data, node.addr)
        if out.events:
            for obs in self.observers:
                for ev in out.events:
                    obs(self.now, node.name, ev)
        self._reschedule(node)
