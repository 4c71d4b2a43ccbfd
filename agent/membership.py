"""The agent's view of the cluster: a small adapter over the gossip node.

Owns starting, feeding and stopping gossip (``swarmlet.shipped.gossip.transport``)
and turning its members into the wire form of ``GET /v1/members``. When the
gossip package is not importable (an older bundle) or gossip is disabled in
the config, ``LocalOnly`` stands in: the agent still runs and reports itself
as the only member, so its tasks never depend on the mesh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from typing import Any, Dict, List, Optional, Tuple

log = logging.getLogger("swarmlet.agent.membership")


class LocalOnly:
    """Membership without gossip: just this node."""

    available = False

    def __init__(self, name: str, address: str, port: int, meta: Dict[str, Any]) -> None:
        self.name, self.address, self.port, self.meta = name, address, port, dict(meta)

    def members(self) -> List[Dict[str, Any]]:
        return [{"name": self.name, "address": self.address, "port": self.port, "state": "alive",
                 "incarnation": 0, "meta": self.meta}]

    def update_meta(self, meta: Dict[str, Any]) -> None:
        self.meta = dict(meta)

    async def leave(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> Dict[str, Any]:
        return {"gossip": False}

    def set_revoked(self, serials: Any) -> None:
        return None

    def follow(self, denylist: Any, on_certificate: Any, cert: str, key: str) -> None:
        return None

    @property
    def keyring(self) -> Any:
        return None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, (str, int)) else value.name.lower()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def member_wire(m: Any) -> Dict[str, Any]:
    """A gossip member (dataclass, object or dict) as ``{"name", "address", ...}``."""
    if hasattr(m, "to_dict"):  # swarmlet.shipped.gossip.members.Member knows the wire shape
        m = m.to_dict()
    d = _plain(m)
    if not isinstance(d, dict):
        d = {k: _plain(getattr(m, k, None)) for k in ("name", "address", "port", "state",
                                                      "incarnation", "meta")}
    addr = d.get("address", d.get("host"))
    port = d.get("port")
    if isinstance(addr, (list, tuple)) and len(addr) == 2:  # (host, port) pairs
        addr, port = addr[0], addr[1] if port is None else port
    state = d.get("state", d.get("status", ""))
    return {"name": d.get("name", ""), "address": addr, "port": port,
            "state": str(state).lower(), "incarnation": d.get("incarnation", 0),
            "meta": d.get("meta") or {}}


class Gossip:
    """The real mesh: wraps a ``GossipNode``."""

    available = True

    def __init__(self, node: Any) -> None:
        self.node = node
        self._tasks: "set[asyncio.Task[None]]" = set()

    def members(self) -> List[Dict[str, Any]]:
        return [member_wire(m) for m in self.node.members()]

    def update_meta(self, meta: Dict[str, Any]) -> None:
        self.node.update_meta(meta)

    async def leave(self) -> None:
        await _maybe_await(self.node.leave())

    async def close(self) -> None:
        await _maybe_await(self.node.close())

    def stats(self) -> Dict[str, Any]:
        try:
            return _plain(self.node.stats())
        except Exception:  # stats are best effort and never worth failing a request
            return {}

    def set_revoked(self, serials: Any) -> None:
        """The cluster's revoked certificate serials: refused in gossip from now on."""
        self.node.set_revoked(serials)

    def follow(self, denylist: Any, on_certificate: Any, cert: str, key: str) -> None:
        """Keep gossip in step with the agent's trust: the denylist the master ships
        (``tlsutil.Denylist``) and the agent's certificate when it is renewed."""
        def revoked(d: Any) -> None:
            self.set_revoked([e.serial for e in d.entries()])

        async def reload() -> None:
            from swarmlet.shipped.gossip.identity import Identity
            try:
                ident = await asyncio.to_thread(Identity.load, cert, key)
                self.node.set_identity(ident)
            except Exception as exc:  # gossip goes on with the old certificate until it expires
                log.error("gossip: cannot use the renewed certificate: %s", exc)

        def renewed() -> None:
            task = asyncio.get_running_loop().create_task(reload())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        revoked(denylist)
        denylist.subscribe(revoked)
        on_certificate(renewed)

    @property
    def keyring(self) -> Any:
        """The live gossip keyring (``swarmlet key rotate`` changes it)."""
        return self.node.keyring


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


async def start(name: str, address: str, bind: Tuple[str, int], keys: Optional[List[bytes]],
                meta: Dict[str, Any], seeds: List[Tuple[str, int]], enabled: bool = True,
                cert: Optional[str] = None, key: Optional[str] = None, ca: Optional[str] = None):
    """Join the mesh if possible, else run ``LocalOnly``. Never raises for gossip trouble.

    ``cert``/``key``/``ca``: the node's certificate and key and the cluster CA (paths);
    gossip signs with them and trusts only members the CA vouches for."""
    if enabled and keys:
        try:
            from swarmlet.shipped.gossip.transport import start_gossip  # type: ignore
        except ImportError:
            log.warning("gossip is not available in this bundle; running without the mesh")
        else:
            try:
                advertise = (address, bind[1]) if bind[1] else None
                node = await start_gossip(name, bind=bind, keys=keys, meta=meta, seeds=seeds,
                                          advertise=advertise, cert=cert, key=key, ca=ca)
                return Gossip(node)
            except Exception as exc:  # a bad seed or port must not stop the tasks
                log.error("gossip failed to start (%s); running without the mesh", exc)
    return LocalOnly(name, address, bind[1], meta)
