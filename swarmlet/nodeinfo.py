"""What each node's agent says about itself (``GET /v1/info``), asked concurrently (admin side).

Used by ``deploy`` to check a stack against the nodes before applying it (for
example a logging driver a node's Docker lacks). A node that does not answer,
or an older agent that does not report a field, is ``None``: unknown, never
an error. Requests go through the one mTLS client (``swarmlet.client``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Sequence

from . import cluster as clusterlib
from .client import Client
from .images import CHECK_TIMEOUT, Node
from .shipped.exceptions import APIError

Info = Optional[Dict[str, Any]]


async def _one(client: Client, node: Node) -> Info:
    try:
        data = await client.call(node.peer, "GET", "/v1/info", timeout=CHECK_TIMEOUT)
    except APIError:      # Unreachable and refusals too: nothing is known about it
        return None
    return data if isinstance(data, dict) else None


async def infos(nodes: Sequence[Node], cluster: Optional[clusterlib.Cluster] = None) -> Dict[str, Info]:
    """node name -> its ``/v1/info`` answer, or None if it gave none."""
    c = cluster or clusterlib.load()
    async with Client.for_cluster(c, timeout=CHECK_TIMEOUT, limit=64, limit_per_host=4) as client:
        got = await asyncio.gather(*(_one(client, n) for n in nodes))
    return {n.name: g for n, g in zip(nodes, got)}


def log_drivers(info: Info) -> Optional[Sequence[str]]:
    drivers = (info or {}).get("log_drivers")
    return [str(d) for d in drivers] if isinstance(drivers, list) else None
