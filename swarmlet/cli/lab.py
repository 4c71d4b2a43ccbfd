"""``swarmlet lab``: local "bare servers" as containers, for trying and testing."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from ..lab import nodes as labnodes
from .output import emit, output_option

_COLUMNS = [("NAME", "name"), ("ADDRESS", "address"), ("SSH", "ssh"), ("STATUS", "status"),
            ("KEY", "key")]


@click.group("lab", help="A local lab: 'bare servers' as containers, each with its own sshd, "
             "dockerd and python3 (and nothing else).",
             epilog="Example: swarmlet lab up --nodes 3 && swarmlet lab ls -o json")
def lab() -> None:
    pass


@lab.command("up", epilog="Example: swarmlet lab up --nodes 3")
@click.option("--nodes", "-n", default=3, show_default=True, help="How many nodes the lab has.")
def lab_up(nodes: int) -> None:
    """Create (or converge to) N lab nodes and wait until sshd and dockerd answer."""
    t0 = time.monotonic()
    result = labnodes.up(nodes, echo=lambda m: click.echo(m, err=True))
    emit("table", [asdict(n) for n in result], _COLUMNS)
    key = result[0].key if result else ""
    click.echo(f"\n{len(result)} nodes ready in {time.monotonic() - t0:.1f}s. SSH key: {key}")
    click.echo(f"Join them: swarmlet join -i {key} --accept-new-host-key "
               + " ".join(n.ssh for n in result))


@lab.command("ls", epilog="Example: swarmlet lab ls -o json")
@output_option
def lab_ls(output: str) -> None:
    """List the lab's nodes with their address, SSH target and key."""
    emit(output, [asdict(n) for n in labnodes.ls()], _COLUMNS)


@lab.command("down", epilog="Example: swarmlet lab down")
def lab_down() -> None:
    """Remove every container, volume and network the lab made."""
    removed = labnodes.down()
    click.echo("removed {containers} containers, {volumes} volumes, {networks} networks".format(**removed))


@lab.command("load", epilog="Example: swarmlet lab load swarmlet-hello:1")
@click.argument("image")
def lab_load(image: str) -> None:
    """Copy a local image into every node (docker save | docker load), as kind does."""
    labnodes.load(image, echo=click.echo)


@lab.command("stop", epilog="Example: swarmlet lab stop swarmlet-lab-node-2")
@click.argument("node")
def lab_stop(node: str) -> None:
    """Stop one node's container (a dead server, for fail-over tests)."""
    labnodes.stop_node(node)
    click.echo(f"stopped {node}")


@lab.command("start", epilog="Example: swarmlet lab start swarmlet-lab-node-2")
@click.argument("node")
def lab_start(node: str) -> None:
    """Start a stopped node again and wait until it is ready."""
    labnodes.start_node(node)
    click.echo(f"started {node}")


COMMANDS = [lab]
