"""Join's last step: wait until the new agent answers over mTLS as itself and is in the mesh.

The agent must answer ``GET /v1/info`` with the node's name and cluster id,
through a client that only accepts that node's certificate at that address
(``swarmlet.client``); and ``GET /v1/members`` must show it alive in gossip
(and, when it has peers to meet, at least one of them).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Union

from ..client import Client, Peer
from ..shipped.exceptions import APIError, PeerRefused, Unreachable

ALIVE = ("alive", "ready", "suspect")


async def wait_agent_healthy(
    client: Client, peer: Peer, cluster_id: str, want_peers: Union[bool, Callable[[], bool]],
    timeout: float = 30.0, interval: float = 0.25,
) -> Dict[str, Any]:
    """Poll until the agent is up and in the mesh; the last ``/v1/info`` answer.

    ``want_peers`` (or a callable asked at each poll) says whether some other
    node should be up to meet; then the agent must see at least one.

    Raises ``Unreachable`` naming what was last missing when ``timeout`` passes
    (for example that another certificate than the node's answered).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            info = await client.call(peer, "GET", "/v1/info", timeout=3)
            if info.get("name") != peer.name or info.get("cluster_id") != cluster_id:
                raise APIError(f"{peer} is {info.get('name')!r} of cluster "
                               f"{info.get('cluster_id')!r}, expected {peer.name!r} of {cluster_id!r}")
            members = await client.members(peer, timeout=3)
            alive = [m for m in members if str(m.get("state", "")).lower() in ALIVE]
            if not any(m.get("name") == peer.name for m in alive):
                last = "the agent answers but is not in its own member list yet"
            elif (want_peers() if callable(want_peers) else want_peers) and len(alive) < 2:
                last = "the agent answers but has not met any other node over gossip"
            else:
                info["members"] = len(alive)
                return info
        except PeerRefused as exc:   # kept trying: an old agent may answer until it restarts
            last = str(exc)
        except Unreachable as exc:
            last = f"agent API not answering ({exc})"
        except APIError as exc:
            if exc.status is None:
                raise
            last = str(exc)
        if time.monotonic() >= deadline:
            raise Unreachable(f"agent not healthy after {timeout:.0f}s: {last}")
        await asyncio.sleep(interval)
