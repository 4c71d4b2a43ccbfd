"""The live node list behind ``swarmlet nodes``: from the master, else from gossip.

The master's ``GET /v1/nodes`` is the full view (it knows ``draining``). When
the master does not run, any joined agent's ``GET /v1/members`` still gives the
gossip view with each node's load in its metadata. Nodes in the local registry
that gossip does not know are shown ``down``. ``rows_from_*`` are pure.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import cluster as clusterlib
from ..client import Client, agent_peer, call_masters, master_peers
from ..shipped.exceptions import SwarmletError
from ..master_process import master_running

_GOSSIP_STATUS = {"alive": "ready", "ready": "ready", "suspect": "suspect", "dead": "down",
                  "down": "down", "failed": "down", "left": "left", "draining": "draining"}


def _pct(used: Any, total: Any) -> Optional[float]:
    try:
        return round(100.0 * float(used) / float(total), 1) if total else None
    except (TypeError, ValueError):
        return None


def _row(name: str, address: str, status: str, meta: Mapping[str, Any]) -> Dict[str, Any]:
    cpu = meta.get("cpu_percent")
    return {
        "name": name,
        "address": address,
        "status": status,
        "cpu_percent": round(float(cpu), 1) if isinstance(cpu, (int, float)) else None,
        "mem_percent": _pct(meta.get("mem_used"), meta.get("mem_total")),
        "tasks": meta.get("tasks"),
        "version": meta.get("version") or "",
        "labels": dict(meta.get("labels") or {}),
    }


def rows_from_master(data: Any) -> List[Dict[str, Any]]:
    items = data.get("nodes", []) if isinstance(data, dict) else (data or [])
    return [_row(str(n.get("name", "")), str(n.get("address", "")),
                 _GOSSIP_STATUS.get(str(n.get("status", "")).lower(), str(n.get("status", ""))), n)
            for n in items]


def rows_from_gossip(members: Sequence[Mapping[str, Any]],
                     registry: Sequence[clusterlib.NodeRecord]) -> List[Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for m in members:
        meta = dict(m.get("meta") or {})
        status = _GOSSIP_STATUS.get(str(m.get("state", "")).lower(), str(m.get("state", "")))
        rows[str(m.get("name"))] = _row(str(m.get("name")), str(meta.get("address") or m.get("address", "")),
                                        status, meta)
    for r in registry:
        if r.name not in rows:
            rows[r.name] = _row(r.name, r.address, "down", {"labels": r.labels})
    return sorted(rows.values(), key=lambda x: x["name"])


async def live_rows(cluster: clusterlib.Cluster) -> Tuple[List[Dict[str, Any]], str]:
    """(rows, source) where source says where the view came from."""
    async with Client.for_cluster(cluster) as client:
        if cluster.masters or master_running(cluster):
            try:
                data = await call_masters(client, master_peers(cluster), "GET", "/v1/nodes")
                return rows_from_master(data), "master"
            except SwarmletError:
                pass
        registry = clusterlib.nodes(cluster)
        for rec in registry:
            try:
                members = await client.members(agent_peer(rec.name, rec.address, rec.api_port))
            except SwarmletError:
                continue
            return rows_from_gossip(members, registry), f"gossip via {rec.name}"
        return rows_from_gossip([], registry), "registry only (no agent answered)"
