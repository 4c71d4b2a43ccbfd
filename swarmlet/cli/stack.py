"""CLI for stacks as a whole: ``stack config``, ``stack ls``, ``stack rm``.

``stack config -f FILE`` is ``docker compose config`` for swarmlet: it needs no
cluster and no Docker. It validates the file (every problem listed, each at
``file:line:col``, exit 1), resolves the content tags of ``build:`` services
by reading their contexts, and prints the normalized stack: the services as
they would be deployed, under their full names, with only the settings that
differ from the defaults (``-o json``: every field), then the warnings, once,
on stderr.

``stack rm NAME`` removes the services labelled with that stack and nothing
else (named volumes stay, as with ``docker stack rm``); ``stack ls`` lists the
stacks and how many services each has.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import click
import yaml

from ..builder import resolve_builds
from ..shipped.models import STACK_LABEL, ServiceSpec, to_wire
from ..stack import Stack, load_stack
from .names import stack_of
from .output import emit, emit_json, err
from .services import call


def _trim(value: Any, default: Any) -> Any:
    """``value`` without what equals ``default`` (recursively, for dataclass fields)."""
    if dataclasses.is_dataclass(value) and type(value) is type(default):
        out = {}
        for f in dataclasses.fields(value):
            v, d = getattr(value, f.name), getattr(default, f.name)
            if v != d:
                out[f.name] = _trim(v, d)
        return out
    if isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
        return [{k: v for k, v in to_wire(item).items() if v is not None} for item in value]
    return to_wire(value)


_BLANK = ServiceSpec(name="", image="")


def normalized(stack: Stack, full: bool = False) -> Dict[str, Any]:
    """The stack as plain data: what ``stack config`` prints."""
    services: Dict[str, Any] = {}
    for spec in stack.services:
        data = to_wire(spec) if full else _trim(spec, _BLANK)
        data.pop("name", None)
        services[spec.name] = data
    out: Dict[str, Any] = {"name": stack.name, "services": services}
    if stack.volumes:
        out["volumes"] = {k: to_wire(v) if full else {"name": v.name, **({"external": True} if v.external else {})}
                          for k, v in stack.volumes.items()}
    if stack.builds:
        out["builds"] = {k: {"context": b.context, "dockerfile": b.dockerfile,
                             **({"args": dict(b.args)} if b.args else {}),
                             **({"target": b.target} if b.target else {})}
                         for k, b in stack.builds.items()}
    if stack.skipped:
        out["skipped"] = {name: {"profiles": list(p)} for name, p in stack.skipped}
    return out


@click.group("stack", help="Stacks as a whole: config (offline check), ls, rm.")
def stack() -> None:
    pass


@stack.command("config", epilog="Example: swarmlet stack config -f examples/multi/stack.yml")
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False),
              help="A Compose stack file.")
@click.option("--name", "-n", "stack_name", help="The stack's name (default: 'name:' or the folder).")
@click.option("--profile", "profiles", multiple=True, help="Activate a profile (repeatable).")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Only validate: print nothing but problems.")
def config_cmd(path: str, stack_name: Optional[str], profiles: Tuple[str, ...], output: str,
               quiet: bool) -> None:
    """Validate a stack file and print it normalized, as it would be deployed (no cluster needed)."""
    st = resolve_builds(load_stack(path, dict(os.environ), name=stack_name,
                                   profiles=list(profiles) or None))
    for w in st.warnings:
        err(f"warning: {w}")
    if quiet:
        return
    if output == "json":
        emit_json(normalized(st, full=True))
    else:
        click.echo(yaml.safe_dump(normalized(st), sort_keys=False, default_flow_style=False,
                                  allow_unicode=True).rstrip())


@stack.command("ls", epilog="Example: swarmlet stack ls -o json")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def ls_cmd(output: str) -> None:
    """List stacks and how many services each has."""
    counts: Dict[str, List[str]] = {}
    for row in call("GET", "/v1/services"):
        name = stack_of(row)
        if name:
            counts.setdefault(name, []).append(row["name"])
    rows = [{"name": k, "services": len(v), "names": sorted(v)} for k, v in sorted(counts.items())]
    emit(output, rows, [("NAME", "name"), ("SERVICES", "services")])


def stack_services(rows: List[Dict[str, Any]], name: str) -> List[str]:
    """The services of stack ``name`` (by label: its own and nobody else's). Pure."""
    return sorted(r["name"] for r in rows
                  if ((r.get("spec") or {}).get("labels") or {}).get(STACK_LABEL) == name)


@stack.command("rm", epilog="Example: swarmlet stack rm shop")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: Tuple[str, ...]) -> None:
    """Remove every service of the named stacks (only theirs; named volumes are kept)."""
    rows = call("GET", "/v1/services")
    for name in names:
        members = stack_services(rows, name)
        if not members:
            err(f"warning: no stack {name!r} (see 'swarmlet stack ls')")
            continue
        for svc in members:
            out = call("DELETE", f"/v1/services/{svc}")
            click.echo(f"{svc} removed ({out.get('stopping', 0)} tasks stopping)")


COMMANDS = [stack]
