"""Removing a node: gossip leave, revocation and deregistration, then uninstall over SSH.

Order matters: the agent first leaves the gossip mesh on purpose (``POST
/v1/leave``), so its peers mark it ``left`` rather than ``down``; then its
certificates are revoked (the signer's ledger) and the master forgets it and
ships the new denylist to every agent, so the node's certificate is refused
everywhere within seconds even if its server is never reached again; then SSH
stops and removes the service and files (``plan.uninstall_script``; ``purge``
also removes swarmlet's containers). If the server cannot be reached,
``force`` still forgets the node locally.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .. import cluster as clusterlib
from ..client import Client, agent_peer, call_masters, master_peers
from ..shipped.exceptions import SSHError, SwarmletError, UsageError
from ..master_process import master_running
from . import plan, ssh


@dataclass
class LeaveResult:
    name: str
    removed: bool = False
    graceful: bool = False
    notes: List[str] = field(default_factory=list)


async def leave(
    cluster: clusterlib.Cluster, name: str, *, purge: bool = False, force: bool = False,
    identity: Optional[str] = None, known_hosts: Optional[Path] = None,
    note: Callable[[str], None] = lambda m: None,
) -> LeaveResult:
    rec = clusterlib.find_node(cluster, name)
    if rec is None:
        known = ", ".join(r.name for r in clusterlib.nodes(cluster)) or "none"
        raise UsageError(f"no node named {name!r} (joined nodes: {known})")
    res = LeaveResult(rec.name)

    def say(msg: str) -> None:
        res.notes.append(msg)
        note(msg)

    async with Client.for_cluster(cluster, timeout=10.0) as client:
        try:
            await client.call(agent_peer(rec.name, rec.address, rec.api_port), "POST", "/v1/leave", {})
            res.graceful = True
            say(f"{rec.name} left the gossip mesh")
        except SwarmletError as exc:
            say(f"{rec.name}: graceful leave failed ({exc}); its peers will see it as down")

        revoked = await asyncio.to_thread(cluster.signer().revoke, rec.name)
        if revoked:
            say(f"{rec.name}: certificate revoked ({', '.join(f'{r.serial:X}'[:16] for r in revoked)})")
        if cluster.masters or master_running(cluster):
            peers = master_peers(cluster)
            try:   # the master takes the denylist (and ships it to every agent), then forgets it
                denylist = await asyncio.to_thread(cluster.denylist)
                await call_masters(client, peers, "PUT", "/v1/revocations", denylist.to_wire())
                await call_masters(client, peers, "DELETE", f"/v1/nodes/{rec.name}")
            except SwarmletError as exc:
                say(f"the master did not remove {rec.name}: {exc}")

    target = plan.Target(rec.ssh_user, rec.ssh_host, rec.ssh_port)
    key_path = identity or rec.identity
    keys = [ssh.load_identity(key_path)] if key_path else None
    try:
        session = await ssh.connect(target, known_hosts or cluster.known_hosts, client_keys=keys)
        try:
            layout = plan.user_layout(rec.agent_home) if rec.privilege == "user" else plan.LAYOUT
            r = await session.script(plan.uninstall_script(purge, layout), plan.shell_prefix(rec.privilege),
                                     timeout=120)
            if r.exit_status != 0:
                raise SSHError(str(target), f"removing the agent failed: {r.stderr.strip()[-200:]}")
        finally:
            await session.close()
        say(f"agent, service and files removed from {target}" + (" (containers purged)" if purge else ""))
    except SSHError as exc:
        if not force:
            raise SSHError(exc.host, exc.reason,
                           hint="its certificate is revoked and the master forgot it, but it is "
                                "still in this host's node list; use --force to forget it") from exc
        say(f"could not reach {target} ({exc.reason}); forgetting it anyway (--force)")
    clusterlib.forget_node(cluster, rec.name)
    res.removed = True
    return res
