"""CLI for cluster keys: ``swarmlet key rotate [--sync] [--grace S] [--node N]… [-o json]``.

Owns the rendering only; the work is ``swarmlet.keyrotate``. One line per node and
step as they finish, then a table (NODE, ADD, USE, DROP, RESULT) and the new primary's
fingerprint, or with ``-o json`` the report. A node that failed gets one
``error: NODE: step: reason`` line on stderr and a hint of what to do; the exit code is
1 if any failed. Keys are never shown, only fingerprints.
"""

from __future__ import annotations

import asyncio
import sys
from typing import List, Tuple

import click

from .. import cluster as clusterlib
from .. import images as imagelib
from .. import keyrotate
from ..shipped.exceptions import ConfigError, Unreachable
from .output import emit_json, output_option, table


async def _targets(names: Tuple[str, ...]) -> List[imagelib.Node]:
    c = clusterlib.load()
    try:
        nodes = await imagelib.list_nodes(c)
    except Unreachable:
        # The master is down: the nodes joined from this host are enough to rotate.
        nodes = [imagelib.Node(r.name, r.address, r.api_port) for r in clusterlib.nodes(c)]
        click.echo("note: the master is not reachable; using the nodes joined from this host",
                   err=True)
    targets = imagelib.select(nodes, names)
    if not targets:
        raise ConfigError("the cluster has no nodes", hint="add some with 'swarmlet join'")
    return targets


def _line(ev: keyrotate.StepEvent) -> None:
    state = "ok" if ev.ok else f"failed: {ev.error}"
    sys.stdout.write(f"{ev.node}: {ev.step} {state}\n")
    sys.stdout.flush()


@click.group("key")
def key_group() -> None:
    """Manage cluster keys."""


@key_group.command("rotate", epilog="Example: swarmlet key rotate")
@click.option("--sync", is_flag=True,
              help="Make no new key: give every node this host's current gossip keys "
                   "(a node that was unreachable during a rotation).")
@click.option("--grace", type=click.FloatRange(0, 300), default=3.0, show_default=True,
              help="Seconds between every node sealing with the new key and dropping the old.")
@click.option("--node", "nodes", multiple=True, metavar="NAME",
              help="Only this node (repeatable), e.g. with --sync. Default: every node.")
@output_option
@click.pass_context
def rotate_cmd(ctx: click.Context, sync: bool, grace: float, nodes: Tuple[str, ...],
               output: str) -> None:
    """Rotate the gossip key with no downtime: add a new key on every node, make it the
    one that seals, then drop the old. No packet is refused on the way. A node that
    cannot be reached is reported; the others go on."""
    progress = None if output == "json" else _line
    if nodes and not sync:
        raise ConfigError("--node works with --sync only: a rotation must reach every node")

    async def run() -> keyrotate.Report:
        targets = await _targets(nodes)
        if sync:
            return await keyrotate.sync(targets, progress=progress)
        return await keyrotate.rotate(targets, progress=progress, grace=grace)

    report = asyncio.run(run())
    if output == "json":
        emit_json(report.to_dict())
    else:
        steps = ["sync"] if sync else list(keyrotate.STEPS)
        mark = {True: "ok", False: "-"}
        rows = [(r.node, *[("failed" if r.failed_step == s else mark[s in r.done]) for s in steps],
                 "ok" if r.ok else "failed") for r in report.nodes]
        click.echo(table(rows, ["NODE", *[s.upper() for s in steps], "RESULT"]))
        what = "gossip keys synced" if sync else (
            "gossip key rotated" + (" (an interrupted rotation, finished)" if report.resumed else ""))
        click.echo(f"{what}: primary {report.new}"
                   + (f", dropped {', '.join(report.old)}" if report.old else ""))
    for r in report.failed:
        click.echo(f"error: {r.node}: {r.failed_step}: {r.error}", err=True)
    if report.failed:
        names = " ".join(f"--node {r.node}" for r in report.failed)
        click.echo(f"hint: those nodes keep an older gossip keyring and drop out of the mesh "
                   f"once the others stop using it; when they are reachable, run "
                   f"'swarmlet key rotate --sync {names}' (or re-run 'swarmlet join' for them)",
                   err=True)
        ctx.exit(1)


COMMANDS = [key_group]
