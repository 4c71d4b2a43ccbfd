"""Removing a node: gossip leave, master deregistration, then uninstall over SSH.

Order matters: the agent first leaves the gossip mesh on purpose (``POST
/v1/leave``), so its peers mark it ``left`` rather than ``down``; then the
master forgets it; then SSH stops and removes the service and files
(``plan.uninstall_script``; ``purge`` also removes swarmlet's containers).
If the server cannot be reached, ``force`` still forgets the node locally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .. import cluster as clusterlib
from ..shipped.exceptions import SSHError, SwarmletError, UsageError
from . import api, plan, ssh


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

    ctx = cluster.client_ssl("cli")
    try:
        await api.call("POST", api.agent_url(rec.address, rec.api_port, "/v1/leave"), ctx, {}, timeout=10)
        res.graceful = True
        say(f"{rec.name} left the gossip mesh")
    except SwarmletError as exc:
        say(f"{rec.name}: graceful leave failed ({exc}); its peers will see it as down")

    from ..master_process import master_running  # local: avoids an import cycle at load
    if master_running(cluster):
        try:
            await api.master_call(cluster.master_urls(), "DELETE", f"/v1/nodes/{rec.name}", ctx)
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
                           hint="the node is still registered; use --force to forget it anyway") from exc
        say(f"could not reach {target} ({exc.reason}); forgetting it anyway (--force)")
    clusterlib.forget_node(cluster, rec.name)
    res.removed = True
    return res
