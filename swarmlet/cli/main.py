"""The ``swarmlet`` root command: wires command modules and maps errors.

A ``SwarmletError`` becomes one line on stderr and its exit code: the reason,
as the master or agent gave it, never the HTTP request behind it; ``--debug``
(or ``SWARMLET_DEBUG=1``) adds that request (``debug: POST https://…: 400``).
Ctrl-C exits 130 quietly. Anything else is a bug and keeps its traceback. Commands of the
contract that no module provides yet fall back to ``stubs``.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List

import click

from .. import __version__
from ..shipped.exceptions import SwarmletError
from . import certs as cert_cmds
from . import cluster as cluster_cmds
from . import deploy as deploy_cmds
from . import images as image_cmds
from . import keys as key_cmds
from . import lab as lab_cmds
from . import logs as logs_cmds
from . import secrets as secret_cmds
from . import services as services_cmds
from . import stack as stack_cmds
from . import top as top_cmds
from .stubs import CONTRACT, GROUP_HELP, stub

# Modules that build real commands. Each exposes COMMANDS: a list of click
# commands or groups, named as in the contract ("node" groups hold "drain"...).
_MODULES = [lab_cmds, cluster_cmds, services_cmds, image_cmds, deploy_cmds, logs_cmds, top_cmds,
            key_cmds, secret_cmds, cert_cmds, stack_cmds]


class _Root(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SwarmletError as exc:
            for line in str(exc).splitlines() or [""]:   # a stack file: one line per problem
                click.echo(f"error: {line}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            request = getattr(exc, "request", None)
            if request and (ctx.params.get("debug") or os.environ.get("SWARMLET_DEBUG") == "1"):
                click.echo(f"debug: {request}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Example: swarmlet lab up --nodes 3 && swarmlet init && swarmlet join root@ADDR")
@click.version_option(__version__, prog_name="swarmlet")
@click.option("--debug", is_flag=True, help="On an error, also show the HTTP request behind it.")
def cli(debug: bool) -> None:
    """swarmlet: replicas over plain Linux servers, a load balancer in front,
    fail-over and rolling updates, without Kubernetes.

    State lives in $SWARMLET_HOME (default ~/.swarmlet).
    """


def _register() -> None:
    groups: Dict[str, click.Group] = {}
    provided: set = set()
    for mod in _MODULES:
        for cmd in mod.COMMANDS:
            cli.add_command(cmd)
            if isinstance(cmd, click.Group):
                groups[cmd.name] = cmd
                provided.update(f"{cmd.name} {sub}" for sub in cmd.commands)
            provided.add(cmd.name)
    for name in CONTRACT:
        if name in provided:
            continue
        parts = name.split()
        if len(parts) == 1:
            cli.add_command(stub(name))
            continue
        group = groups.get(parts[0])
        if group is None:
            group = click.Group(parts[0], help=GROUP_HELP.get(parts[0], ""))
            groups[parts[0]] = group
            cli.add_command(group)
        group.add_command(stub(name))
    # `swarmlet get nodes` is kubectl muscle memory for `swarmlet nodes`.
    get = click.Group("get", help="Aliases: get nodes.")
    get.add_command(cli.commands["nodes"], "nodes")
    cli.add_command(get)


_register()


def main(argv: List[str] = None) -> None:  # type: ignore[assignment]
    cli.main(args=argv, prog_name="swarmlet")


if __name__ == "__main__":
    main(sys.argv[1:])
