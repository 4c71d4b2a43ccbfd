"""The asyncio shell around ``GossipCore``: one UDP socket, one timer, subscribers.

``start_gossip(...)`` binds the socket, builds the core with the real defaults
(``GossipConfig()``: memberlist's LAN profile) and returns a ``GossipNode``. Every
datagram goes to ``core.receive`` with ``loop.time()``; a single ``call_at`` timer
follows ``core.next_deadline()``; the wall clock is ``time.time``. Outputs are sent
with ``sendto`` (never blocks) and membership events handed to subscribers (plain
callbacks or coroutines). Trouble that needs an operator (a peer on another wire
version, a peer whose clock is off by more than the allowed skew) is logged once.
Nothing here decides anything about membership.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from ..exceptions import ConfigError
from . import wire
from .config import GossipConfig
from .core import Addr, GossipCore, Output
from .crypto import Keyring
from .identity import Identity, Trust
from .members import Member, MemberEvent, MemberState

log = logging.getLogger("swarmlet.shipped.gossip")

Callback = Callable[[MemberEvent], Union[None, Awaitable[None]]]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.node: Optional["GossipNode"] = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.node is not None:
            self.node._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: a peer is gone; SWIM will notice on its own.
        if self.node is not None:
            self.node._io["socket_errors"] += 1


class GossipNode:
    """A running gossip member. Create it with ``start_gossip``."""

    def __init__(self, core: GossipCore, transport: asyncio.DatagramTransport,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self._transport = transport
        self._loop = loop
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = math.inf
        self._subs: List[Callback] = []
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._changed = asyncio.Event()
        self._closed = False
        self._io: Dict[str, int] = {"socket_errors": 0, "send_errors": 0, "callback_errors": 0}
        self._logged: Set[str] = set()

    # --- public API ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def address(self) -> Addr:
        """The advertised (host, port)."""
        return (self._core.host, self._core.port)

    @property
    def keyring(self) -> Optional[Keyring]:
        """Live keyring: ``add``/``use``/``remove``/``replace`` take effect on the next packet."""
        return self._core.keyring

    def set_identity(self, identity: Identity) -> None:
        """Use a renewed certificate and key (``Identity.load`` them in a thread first)."""
        self._drive(self._core.set_identity(identity, self._loop.time()))

    def set_revoked(self, serials: Iterable[int]) -> None:
        """The cluster's revoked certificate serials (the whole list): their holders'
        packets and statements are refused from now on, and they are dead to us."""
        self._drive(self._core.set_revoked(list(serials), self._loop.time()))

    def members(self) -> List[Member]:
        return self._core.members()

    def update_meta(self, meta: Dict[str, Any]) -> None:
        """Publish new metadata (no-op if unchanged); raises ``ConfigError`` if invalid."""
        self._drive(self._core.update_meta(meta, self._loop.time()))

    async def join(self, seeds: Iterable[Tuple[str, int]], timeout: float = 5.0) -> int:
        """Push-pull with ``seeds``; wait until some peer is known or ``timeout``.

        Returns how many other live members are known. Zero is not an error: the seeds
        are remembered and retried while this member is alone.
        """
        self._drive(self._core.join(list(seeds), self._loop.time()))
        await self._wait(lambda: self._core.live_count > 1, timeout)
        return self._core.live_count - 1

    async def leave(self, timeout: float = 2.0) -> None:
        """Announce a graceful leave and wait until it has been gossiped (or ``timeout``)."""
        self._drive(self._core.leave(self._loop.time()))
        await self._wait(lambda: self._core.leave_sent, timeout)

    async def close(self) -> None:
        """Stop without a leave (others will detect a failure unless ``leave`` ran first)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._transport.close()
        for t in list(self._tasks):
            t.cancel()

    def stats(self) -> Dict[str, int]:
        """Counters: packets/bytes in and out, drops (auth, malformed, replay), protocol
        events, socket errors, and the current member counts and local-health score."""
        out = dict(self._core.stats)
        out.update(self._io)
        counts = {s: 0 for s in MemberState}
        for m in self._core.members():
            counts[m.state] += 1
        for s, n in counts.items():
            out[f"members_{s.value}"] = n
        out["awareness"] = self._core.awareness
        return out

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for every membership event; returns an unsubscribe."""
        self._subs.append(callback)

        def unsubscribe() -> None:
            if callback in self._subs:
                self._subs.remove(callback)
        return unsubscribe

    # --- driving the core ----------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if not self._closed:
            self._drive(self._core.receive(data, addr, self._loop.time()))
            core = self._core
            if core.version_mismatch is not None and "version" not in self._logged:
                self._logged.add("version")
                (host, port), version = core.version_mismatch
                log.warning("gossip: a peer at %s:%s speaks gossip wire version %s, this node "
                            "speaks %s: its packets are dropped (counted in dropped_version). "
                            "Upgrade every node: re-run `swarmlet join` for it.",
                            host, port, version, wire.WIRE_VERSION)
            if core.clock_offset is not None and "clock" not in self._logged:
                self._logged.add("clock")
                (host, port), off = core.clock_offset
                log.warning("gossip: packets from %s:%s are stamped %+.0f s from this node's "
                            "clock (allowed: +-%.0f s): they are dropped (dropped_stale). "
                            "Check NTP on both.", host, port, off, core.config.max_clock_skew)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if not self._closed:
            self._drive(self._core.tick(self._loop.time()))

    def _drive(self, out: Output) -> None:
        for data, addr in out.sends:
            try:
                self._transport.sendto(data, addr)
            except OSError:
                self._io["send_errors"] += 1
        for ev in out.events:
            for cb in list(self._subs):
                try:
                    r = cb(ev)
                    if asyncio.iscoroutine(r):
                        task = self._loop.create_task(r)
                        self._tasks.add(task)
                        task.add_done_callback(self._task_done)
                except Exception:
                    self._io["callback_errors"] += 1
                    log.exception("gossip subscriber failed on %s", ev.kind.value)
        if out.sends or out.events:
            self._changed.set()
        self._rearm()

    def _rearm(self) -> None:
        if self._closed:
            return
        d = self._core.next_deadline()
        if d < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = self._loop.call_at(d, self._on_timer)

    def _task_done(self, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._io["callback_errors"] += 1
            log.error("gossip subscriber failed", exc_info=task.exception())

    async def _wait(self, cond: Callable[[], bool], timeout: float) -> None:
        end = self._loop.time() + timeout
        while not cond() and not self._closed:
            left = end - self._loop.time()
            if left <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass


async def start_gossip(name: str, bind: Tuple[str, int] = ("0.0.0.0", 7946), *,
                       keys: Optional[List[bytes]] = None, meta: Optional[Dict[str, Any]] = None,
                       seeds: Iterable[Tuple[str, int]] = (),
                       config: Optional[GossipConfig] = None,
                       advertise: Optional[Tuple[str, int]] = None,
                       join_timeout: float = 2.0,
                       cert: Optional[str] = None, key: Optional[str] = None,
                       ca: Optional[str] = None, identity: Optional[Identity] = None,
                       trust: Optional[Trust] = None,
                       revoked: Iterable[int] = ()) -> GossipNode:
    """Bind UDP ``bind``, start gossiping as ``name`` and join ``seeds``.

    ``keys``: AES-256 cluster keys, the first primary; required unless
    ``config.allow_plaintext``. With keys, the node's certificate and key and the
    cluster CA are required too: file paths ``cert``/``key``/``ca`` (what the agent
    has), or ``identity``/``trust`` objects. ``revoked``: serials refused from the
    start. ``advertise``: the (host, port) others should use; by default the bound
    address, or ``meta["address"]`` when bound to a wildcard. Raises ``ConfigError``
    for a bad key, certificate, metadata or a port that cannot be bound.
    """
    config = config or GossipConfig()
    seeds = [(str(h), int(p)) for h, p in seeds]
    keyring = Keyring(keys) if keys else None
    if keyring is not None:
        if identity is None:
            if not (cert and key):
                raise ConfigError("gossip needs the node's certificate and key (cert=, key=)")
            identity = Identity.load(cert, key)
        if trust is None:
            if not ca:
                raise ConfigError("gossip needs the cluster CA certificate (ca=)")
            trust = Trust.load(ca, skew=config.max_clock_skew, max_certs=config.max_members)
        if identity.name != name:   # before binding: a refused start leaves no socket behind
            raise ConfigError(f"the node certificate is for {identity.name!r}, not {name!r}")
    loop = asyncio.get_running_loop()
    proto = _Protocol()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=bind)
    except OSError as exc:
        raise ConfigError(f"cannot bind gossip UDP {bind[0]}:{bind[1]}: {exc.strerror or exc}"
                          ) from exc
    try:
        bound = transport.get_extra_info("sockname")
        host, port = advertise if advertise else (bind[0], bound[1])
        if host in ("", "0.0.0.0", "::"):
            host = str((meta or {}).get("address") or "")
            if not host:
                raise ConfigError("gossip bound to a wildcard address: pass advertise= "
                                  "or meta['address']")
        core = GossipCore(name, (host, port), keyring=keyring, identity=identity, trust=trust,
                          config=config, meta=meta or {}, now=loop.time(), wall=time.time,
                          rng=random.Random(os.urandom(16)), seeds=seeds)
        if revoked:
            core.set_revoked(list(revoked), loop.time())
    except BaseException:
        transport.close()
        raise
    node = GossipNode(core, transport, loop)
    proto.node = node
    node._rearm()
    if seeds:
        await node.join(seeds, timeout=join_timeout)
    return node
