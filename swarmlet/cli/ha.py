"""CLI for the HA control plane: ``master ha NODE...``, ``master single``, and HA status.

Rendering only: the work is in ``swarmlet.ha.provision``. Each step prints one line; an
error is one line (``error: ...``) and changes nothing that was running.
"""

from __future__ import annotations

import asyncio
import sys
from typing import List, Optional, Tuple

import click

from .. import cluster as clusterlib
from ..client import Client, master_at
from ..shipped.exceptions import SwarmletError
from .output import emit_json


@click.command("ha", epilog="Example: swarmlet master ha node-1 node-2 node-3")
@click.argument("nodes", nargs=-1, required=True)
@click.option("-i", "identity", type=click.Path(dir_okay=False), help="SSH private key (default: the one join used).")
@click.option("--ttl", type=click.IntRange(2, 30), default=2, show_default=True,
              help="The leader lease in seconds: a dead leader is replaced after about this long.")
def master_ha(nodes: Tuple[str, ...], identity: Optional[str], ttl: int) -> None:
    """Move the master onto 3 or 5 joined nodes: an etcd member and a master on each, the
    state migrated from this host with nothing lost. This host becomes a client only."""
    from ..ha import provision
    c = clusterlib.load()
    done = asyncio.run(provision.enable(c, list(nodes), click.echo, identity=identity, ttl=ttl))
    click.echo(f"HA on in {done.seconds:.0f}s: masters {', '.join(m['name'] for m in done.masters)}, "
               f"leader {done.leader}")
    click.echo("this host runs no master and no load balancer now: front the nodes' ingress with "
               "DNS (several A records), a floating address or an external load balancer")


@click.command("single", epilog="Example: swarmlet master single")
@click.option("-i", "identity", type=click.Path(dir_okay=False), help="SSH private key (default: the one join used).")
def master_single(identity: Optional[str]) -> None:
    """Move the control plane back to one master on this host (state migrated from etcd), and
    remove etcd and the masters from the servers."""
    from ..ha import provision
    c = clusterlib.load()
    done = asyncio.run(provision.disable(c, click.echo, identity=identity))
    click.echo(f"single master again in {done.seconds:.0f}s: {done.leader}")


def ha_status(c: clusterlib.Cluster, output: str) -> int:
    """``master status`` on an HA cluster: each master's view; exit 1 without a leader."""
    async def views() -> List[Tuple[str, object]]:
        out: List[Tuple[str, object]] = []
        async with Client.for_cluster(c, timeout=3.0) as client:
            for url in c.master_urls():
                try:
                    out.append((url, await client.call(master_at(url, c.master_port), "GET", "/v1/ha")))
                except SwarmletError as exc:
                    out.append((url, str(exc)))
        return out
    rows = asyncio.run(views())
    leader = next((v.get("leader") for _, v in rows if isinstance(v, dict) and v.get("leader")), None)
    if output == "json":
        emit_json({"ha": True, "leader": leader,
                   "masters": [{"url": u, **(v if isinstance(v, dict) else {"error": v})}
                               for u, v in rows]})
    else:
        for url, v in rows:
            if isinstance(v, dict):
                role = "leader" if v.get("leading") else "follower"
                click.echo(f"{v.get('name', '?'):<16} {url:<28} {role:<8} term {v.get('term')}  "
                           f"etcd {v.get('etcd_reachable')}/{v.get('etcd_members')} reachable")
            else:
                click.echo(f"{'?':<16} {url:<28} down     {v}")
        click.echo(f"leader: {leader}" if leader else
                   "no leader: writes fail until a majority of the masters is back")
    return 0 if leader else 1


HA_COMMANDS = [master_ha, master_single]
