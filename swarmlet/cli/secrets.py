"""``swarmlet secret …`` and ``swarmlet config …``: docker-like verbs, and ``rotate``.

``create NAME FILE|-`` reads the value (at most ``vault.MAX_SIZE``, checked as
it is read, before anything is sent), ``ls`` and ``inspect`` show metadata
only (names, versions, sizes, dates, the services that mount it; never a
value), ``rm`` is refused by the master while a service uses it, naming them.
``rotate NAME FILE|-`` stores the next version and rolls every service that
mounts it, health-gated with automatic rollback, and follows the rollouts as
``update`` does (``--detach`` to return at once). Nothing here prints a value.
"""

from __future__ import annotations

import base64
import sys
from datetime import datetime
from typing import Any, BinaryIO, Optional

import click

from ..master.vault import MAX_SIZE, check_size
from ..shipped.exceptions import UsageError
from .deploy import _finish, follow
from .output import emit, emit_json, output_option
from .services import call


def read_value(kind: str, name: str, source: str, stdin: Optional[BinaryIO] = None) -> bytes:
    """The value from a file, or stdin for ``-``; past ``MAX_SIZE`` refused as it is read."""
    try:
        if source == "-":
            data = (stdin or sys.stdin.buffer).read(MAX_SIZE + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_SIZE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {kind} {name!r} from {source}: {exc.strerror}") from exc
    if len(data) > MAX_SIZE:
        raise UsageError(f"{kind} {name!r}: {source} is larger than {MAX_SIZE // 1024} KiB, "
                         f"the most a {kind} may hold")
    check_size(kind, name, len(data))
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


_COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("SIZE", "size"),
            ("UPDATED", lambda r: _when(r.get("updated_at"))),
            ("SERVICES", lambda r: ",".join(r.get("services") or []) or "-")]


def make_group(kind: str) -> click.Group:
    plural = kind + "s"
    what = "passwords, keys, tokens" if kind == "secret" else "configuration files"

    @click.group(kind, help=f"Manage {plural} ({what}): encrypted at rest, in memory on the nodes "
                           f"that need them, mounted read-only into containers.")
    def group() -> None:
        pass

    @group.command("create", epilog=f"Example: swarmlet {kind} create db-password ./db-password.txt")
    @click.argument("name")
    @click.argument("source", metavar="FILE|-")
    @click.option("-l", "--label", "labels", multiple=True, help="KEY=VALUE (repeatable).")
    def create(name: str, source: str, labels: tuple) -> None:
        """Store a new {kind} from FILE, or from stdin with -."""
        data = read_value(kind, name, source)
        lab = dict(item.partition("=")[::2] for item in labels)
        out = call("POST", f"/v1/{plural}", {"name": name, "data": _b64(data), "labels": lab})
        click.echo(f"{kind} {name} created (version {out.get('version', 1)})")

    create.help = f"Store a new {kind} from FILE, or from stdin with -."

    @group.command("ls", epilog=f"Example: swarmlet {kind} ls -o json")
    @output_option
    def ls(output: str) -> None:
        emit(output, call("GET", f"/v1/{plural}"), _COLUMNS)

    ls.help = f"List {plural}: names, versions, sizes, the services that mount them (no values)."

    @group.command("inspect", epilog=f"Example: swarmlet {kind} inspect db-password")
    @click.argument("name")
    @output_option
    def inspect(name: str, output: str) -> None:
        row = call("GET", f"/v1/{plural}/{name}")
        if output == "json":
            emit_json(row)
            return
        click.echo(f"{kind}: {row['name']}\nversion: {row['version']} ({row['size']} bytes)\n"
                   f"created: {_when(row.get('created_at'))}\nupdated: {_when(row.get('updated_at'))}"
                   f"\nservices: {', '.join(row.get('services') or []) or '-'}")
        for k, v in sorted((row.get("labels") or {}).items()):
            click.echo(f"label: {k}={v}")
        for v in row.get("versions") or []:
            click.echo(f"  version {v['version']}: {v['size']} bytes, {_when(v.get('created_at'))}")

    inspect.help = f"Show a {kind}'s metadata (never its value)."

    @group.command("rm", epilog=f"Example: swarmlet {kind} rm db-password")
    @click.argument("names", nargs=-1, required=True)
    def rm(names: tuple) -> None:
        for name in names:
            out = call("DELETE", f"/v1/{plural}/{name}")
            click.echo(f"{kind} {name} removed ({out.get('removed', 0)} versions)")

    rm.help = f"Remove {plural} (refused while a service mounts one)."

    @group.command("rotate", epilog=f"Example: swarmlet {kind} rotate db-password ./new.txt")
    @click.argument("name")
    @click.argument("source", metavar="FILE|-")
    @click.option("--detach", "-d", is_flag=True, help="Do not wait for the rollouts.")
    @click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait.")
    def rotate(name: str, source: str, detach: bool, timeout: float) -> None:
        data = read_value(kind, name, source)
        out = call("POST", f"/v1/{plural}/{name}/rotate", {"data": _b64(data)})
        if not out.get("changed", True):
            click.echo(f"{kind} {name}: unchanged (version {out['version']} holds this value)")
            return
        services = out.get("services") or []
        click.echo(f"{kind} {name}: version {out['version']}"
                   + (f"; rolling {', '.join(services)}" if services else "; no service mounts it"))
        if services and not detach:
            _finish(follow(services, timeout))

    rotate.help = (f"Store a new version of a {kind} and rolling-update every service that mounts "
                   "it (health-gated, rolled back on failure).")
    return group


COMMANDS = [make_group("secret"), make_group("config")]
