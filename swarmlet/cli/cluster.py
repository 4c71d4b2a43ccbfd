"""CLI for the cluster's life cycle: init, join, leave, nodes, node rm, master start|stop|status|logs.

Only rendering lives here: the work is in ``swarmlet.cluster``,
``swarmlet.provision`` and ``swarmlet.master_process``. Join progress arrives
as ``Progress`` events and is printed one line per step and host, then a
summary table; the exit code is 1 if any host failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import List, Optional

import click

from .. import cluster as clusterlib
from .. import master_process
from ..shipped.exceptions import UsageError
from ..provision import join as joinlib
from ..provision import leave as leavelib
from ..provision import nodes_view, plan
from .ha import HA_COMMANDS, ha_status
from .output import emit, emit_json, table


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


# --- init ----------------------------------------------------------------------------

@click.command("init", epilog="Example: swarmlet init --name prod --advertise-addr 10.0.0.1")
@click.option("--name", help="The cluster's name (default: swarmlet).")
@click.option("--advertise-addr", help="The address agents use to reach this host (default: none).")
@click.option("--master-port", type=int, default=clusterlib.MASTER_PORT, show_default=True,
              help="Port of the master's API.")
@click.option("--force", is_flag=True, help="Replace an existing cluster in $SWARMLET_HOME.")
@click.option("--foreground", is_flag=True, help="Run the master attached to this terminal.")
@click.option("--no-master", is_flag=True, help="Create the cluster files only; do not start the master.")
def init_cmd(name: Optional[str], advertise_addr: Optional[str], master_port: int, force: bool,
             foreground: bool, no_master: bool) -> None:
    """Create a cluster (id, CA, certificates, gossip key, config) and start the master."""
    if foreground and no_master:
        raise UsageError("--foreground and --no-master exclude each other")
    c = clusterlib.init(name=name, advertise_addr=advertise_addr, force=force, master_port=master_port)
    click.echo(f"cluster {c.name!r} created (id {c.id}) in {c.home}")
    if no_master:
        click.echo("master not started (--no-master); start it with: swarmlet master start")
        return
    if foreground:
        sys.exit(master_process.run_foreground(c))
    st = asyncio.run(master_process.start(c))
    click.echo(f"master running (pid {st.pid}) at {st.url}; log: {st.log}")
    click.echo("next: swarmlet join --accept-new-host-key root@SERVER")


# --- join ----------------------------------------------------------------------------

def _render(p: joinlib.Progress) -> None:
    if p.state == "start":
        return
    mark = {"ok": "ok", "fail": "FAILED", "note": "note"}[p.state]
    line = f"{p.target:<24} {p.step:<8} {mark}"
    click.echo(line + (f"  {p.detail}" if p.detail else ""))


def _render_err(p: joinlib.Progress) -> None:
    """Progress on stderr, so stdout stays pure JSON."""
    if p.state != "start":
        click.echo(f"{p.target:<24} {p.step:<8} {p.state}" + (f"  {p.detail}" if p.detail else ""), err=True)


@click.command("join", epilog="Example: swarmlet join -i ~/.ssh/id_ed25519 --accept-new-host-key "
               "--label zone=a root@10.0.0.5 root@10.0.0.6")
@click.argument("hosts", nargs=-1, required=True, metavar="USER@HOST[:PORT]...")
@click.option("-i", "identity", type=click.Path(dir_okay=False), help="SSH private key to log in with.")
@click.option("--port", "-p", type=int, default=22, show_default=True, help="SSH port for hosts without :PORT.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Node label (repeatable).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust and store host keys not seen before.")
@click.option("--known-hosts", type=click.Path(dir_okay=False),
              help="known_hosts file to check (default: the cluster's).")
@click.option("--parallel", type=int, default=32, show_default=True, help="Hosts joined at once.")
@click.option("--timeout", type=float, default=joinlib.HEALTHY_TIMEOUT, show_default=True,
              help="Seconds to wait for each agent to become healthy.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Summary format (json: one object per host, with per-step seconds).")
@click.option("--address", help="The node's address, as the other nodes and the master reach it "
              "(one host only; default: the address the SSH connection reached).")
@click.option("--change-address", is_flag=True,
              help="Allow a re-join to move a joined node to a new address.")
@click.option("--supervised", is_flag=True, hidden=True,
              help="Run the agent without systemd even where systemd is PID 1 (testing).")
def join_cmd(hosts: tuple, identity: Optional[str], port: int, labels: tuple, accept_new_host_key: bool,
             known_hosts: Optional[str], parallel: int, timeout: float, output: str,
             address: Optional[str], change_address: bool, supervised: bool) -> None:
    """Install the agent on servers over SSH, all at once, and join them to the cluster.

    Each host goes connect → probe → upload → install → start → healthy. Running it
    again on a joined host upgrades or restarts the agent in place. The node's
    address is the one given here (the target, or --address), never one the
    server reports about itself.
    """
    c = clusterlib.load()
    targets = [plan.parse_target(h, default_port=port) for h in hosts]
    if len(set(targets)) != len(targets):
        raise UsageError("the same host is given twice")
    if address and len(targets) > 1:
        raise UsageError("--address names one node's address: join one host with it")
    if address:
        address = plan.parse_address(address)
    opts = joinlib.JoinOptions(
        known_hosts=Path(known_hosts) if known_hosts else c.known_hosts,
        accept_new=accept_new_host_key, identity=identity, labels=plan.parse_labels(labels),
        healthy_timeout=timeout, force_supervised=supervised, parallel=parallel, address=address,
        change_address=change_address)
    t0 = time.monotonic()
    results = asyncio.run(joinlib.join_all(c, targets, opts, _render if output == "table" else _render_err))
    elapsed = time.monotonic() - t0
    if output == "json":
        emit_json([dataclasses.asdict(r) for r in results])
        if any(not r.ok for r in results):
            sys.exit(1)
        return
    rows = []
    for r in results:
        state = ("upgraded" if r.upgraded else "joined") if r.ok else f"failed at {r.step}"
        rows.append([r.target, r.name or "-", r.address or "-", state, f"{r.seconds:.1f}s",
                     "" if r.ok else r.error])
    click.echo("")
    click.echo(table(rows, ["HOST", "NAME", "ADDRESS", "RESULT", "TIME", "DETAIL"]))
    failed = [r for r in results if not r.ok]
    # One line per failed host on stderr (and its hint), after the table.
    for r in failed:
        click.echo(f"error: {r.target}: {r.error}", err=True)
        if r.hint:
            click.echo(f"hint: {r.hint}", err=True)
    click.echo(f"\n{len(results) - len(failed)} joined, {len(failed)} failed in {elapsed:.1f}s")
    if failed:
        sys.exit(1)


# --- leave / node rm -------------------------------------------------------------------

def _leave_options(f):
    f = click.option("--purge", is_flag=True, help="Also remove swarmlet's containers on the host.")(f)
    f = click.option("--force", is_flag=True, help="Forget the node even if its server is unreachable.")(f)
    f = click.option("-i", "identity", type=click.Path(dir_okay=False),
                     help="SSH key (default: the one used at join).")(f)
    return click.argument("node")(f)


def _do_leave(node: str, purge: bool, force: bool, identity: Optional[str]) -> None:
    c = clusterlib.load()
    res = asyncio.run(leavelib.leave(c, node, purge=purge, force=force, identity=identity,
                                     note=lambda m: click.echo(m)))
    click.echo(f"{res.name} removed" + ("" if res.graceful else " (not gracefully: its peers see it down)"))


@click.command("leave", epilog="Example: swarmlet leave node-1 --purge")
@_leave_options
def leave_cmd(node: str, purge: bool, force: bool, identity: Optional[str]) -> None:
    """Stop and remove a node's agent, service and files; the others see it as left."""
    _do_leave(node, purge, force, identity)


@click.command("rm", epilog="Example: swarmlet node rm node-1")
@_leave_options
def node_rm_cmd(node: str, purge: bool, force: bool, identity: Optional[str]) -> None:
    """Remove a node (same as swarmlet leave)."""
    _do_leave(node, purge, force, identity)


# --- nodes --------------------------------------------------------------------------

_NODE_COLUMNS = [
    ("NAME", "name"), ("ADDRESS", "address"), ("STATUS", "status"),
    ("CPU%", lambda r: "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.0f}"),
    ("MEM%", lambda r: "-" if r["mem_percent"] is None else f"{r['mem_percent']:.0f}"),
    ("TASKS", lambda r: "-" if r["tasks"] is None else r["tasks"]),
    ("AGENT VERSION", lambda r: r["version"] or "-"),
    ("LABELS", lambda r: ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-"),
]


@click.command("nodes", epilog="Example: swarmlet nodes -o json")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
def nodes_cmd(output: str) -> None:
    """List the cluster's nodes from the live view (the master, else gossip)."""
    c = clusterlib.load()
    rows, source = asyncio.run(nodes_view.live_rows(c))
    if output == "json":
        emit_json(rows)
        return
    emit("table", rows, _NODE_COLUMNS)
    _echo_err(f"({len(rows)} nodes; view from {source})")


# --- master ---------------------------------------------------------------------------

@click.group("master", help="Manage the master process.")
def master_group() -> None:
    pass


@master_group.command("start", epilog="Example: swarmlet master start")
def master_start() -> None:
    """Start the master detached (pidfile and log under $SWARMLET_HOME/master)."""
    c = clusterlib.load()
    if c.masters:
        raise UsageError("the masters run on the servers (HA): see 'swarmlet master status'; "
                         "'swarmlet master single' brings the master back to this host")
    st = asyncio.run(master_process.start(c))
    click.echo(f"master running (pid {st.pid}) at {st.url}; log: {st.log}")


@master_group.command("stop", epilog="Example: swarmlet master stop")
def master_stop() -> None:
    """Stop the master (SIGTERM, then SIGKILL after 10 s). Agents keep their tasks running."""
    c = clusterlib.load()
    pid = master_process.stop(c)
    click.echo(f"master stopped (pid {pid})" if pid else "master was not running")


@master_group.command("status", epilog="Example: swarmlet master status")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def master_status(output: str) -> None:
    """Show whether the master runs and answers. Exit code 1 if it does not run."""
    c = clusterlib.load()
    if c.masters:
        sys.exit(ha_status(c, output))
    st = asyncio.run(master_process.status(c))
    if output == "json":
        emit_json({"running": st.running, "pid": st.pid, "answering": st.answering, "url": st.url,
                   "log": st.log})
    elif st.running:
        click.echo(f"master running (pid {st.pid}) at {st.url}"
                   + ("" if st.answering else f": {st.detail}"))
    else:
        click.echo("master not running (start it with: swarmlet master start)")
    if not st.running:
        sys.exit(1)


@master_group.command("logs", epilog="Example: swarmlet master logs -f")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--tail", "lines", type=int, default=50, show_default=True, help="Lines to show first.")
def master_logs(follow: bool, lines: int) -> None:
    """Show the master's log."""
    c = clusterlib.load()
    for line in master_process.follow_log(c, lines, follow):
        click.echo(line, nl=False)


# `node rm`: the services module owns the `node` group (drain, activate). If it
# exists, rm joins it; otherwise this module makes the group, and main's stubs
# fill in drain/activate. Either way there is exactly one `node` group.
try:
    from .services import node as _node_group  # type: ignore[attr-defined]
except ImportError:
    _node_group = None

for _cmd in HA_COMMANDS:
    master_group.add_command(_cmd)

COMMANDS: List[click.Command] = [init_cmd, join_cmd, leave_cmd, nodes_cmd, master_group]
if isinstance(_node_group, click.Group):
    _node_group.add_command(node_rm_cmd)
else:
    _node = click.Group("node", help="Manage nodes: drain, activate, rm.")
    _node.add_command(node_rm_cmd)
    COMMANDS.append(_node)
