"""CLI for changing services over time: deploy (stack files), update, rollback, history.

``deploy`` validates the whole stack file first (an invalid file changes
nothing; every problem is listed), builds the images of ``build:`` services
whose content changed, asks the master for the plan (``POST /v1/stacks/NAME``
with ``dry_run``), shows it (its warnings once), pushes the images the nodes
lack, then sends the whole stack again to be applied in one transaction (a
stack the master refuses changes nothing either) and, unless ``--detach``,
follows every rollout it started until the new revision serves everywhere or
has rolled back. ``--dry-run`` needs no master: it then plans against an empty
cluster, shows every service as "create" and says so. ``update`` and ``rollback`` follow the same
way. Exit codes: 0 done, 1 an update failed and was rolled back or paused.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import sys
import time
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

import click

from .. import images as imagelib
from .. import nodeinfo
from ..builder import build_all, resolve_builds
from ..shipped.exceptions import ConfigError, StackFileError, SwarmletError, Unreachable
from ..shipped.models import ServiceSpec, from_wire, to_wire
from ..shipped.validate import port_clashes, route_clashes
from ..stack import Stack, StackWarning, load_stack, plan_deploy, render_plan
from ..stack.checks import log_driver_warnings
from ..stack.locate import edge_location, port_location
from .offer_push import offer_push
from .secretflags import refs_after
from .output import emit, emit_json, err, output_option
from .services import call, parse_env, parse_port, resolve

_DONE = ("completed", "rolled_back", "paused")


def _describe(u: Dict[str, Any]) -> str:
    word = {"updating": "updating", "rolling_back": "rolling back", "completed": "completed",
            "rolled_back": "rolled back", "paused": "paused", "failed": "failed"}.get(u["status"], u["status"])
    return f"{word}: {u.get('updated', 0)}/{u.get('total', 0)} replicas on revision {u['revision']}"


def follow(names: List[str], timeout: float, echo=click.echo) -> List[str]:
    """Follow the services' rollouts until each ends; returns the failure lines."""
    pending = {n: None for n in names}
    last: Dict[str, str] = {}
    failures: List[str] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            svc = call("GET", f"/v1/services/{name}")
            u = svc.get("update")
            if u is None:                         # nothing to roll out (e.g. only scaled)
                if svc["running"] >= svc["replicas"]:
                    echo(f"{name}: {svc['running']}/{svc['replicas']} replicas serving")
                    del pending[name]
                continue
            line = _describe(u)
            if line != last.get(name):
                echo(f"{name}: {line}")
                last[name] = line
            if u["status"] in _DONE and u["revision"] == svc["revision"]:
                if u["status"] == "rolled_back" and u.get("rollback_of") and pending[name] != "rollback":
                    failures.append(f"{name}: {u.get('reason') or 'update failed'}; "
                                    f"rolled back, revision {u['revision']} serves")
                elif u["status"] == "paused":
                    failures.append(f"{name}: update paused: {u.get('reason')}")
                del pending[name]
        time.sleep(0.5)
    for name in pending:
        failures.append(f"{name}: still rolling out after {timeout:.0f}s (see: swarmlet ps {name})")
    return failures


def _refuse_port_clashes(path: str, stack: Any, plan: Dict[str, Any]) -> None:
    """A port another service publishes, or a host and path prefix another service is routed
    on (in this stack or another), is refused at its line, before anything is applied
    (the master refuses the whole stack too, with the same words, but cannot point into the
    file). ``plan``: the master's dry run of this stack."""
    changing = {c["name"] for c in plan["create"] + plan["update"]}
    if not changing:
        return
    current = {row["name"]: from_wire(ServiceSpec, row["spec"]) for row in call("GET", "/v1/services")}
    mine = [s for s in stack.services if s.name in changing]
    clashes = port_clashes(mine, current, plan["remove"])
    routes = route_clashes(mine, current, plan["remove"])
    if not clashes and not routes:
        return
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        text = ""
    if clashes:
        c = clashes[0]
        raise StackFileError(port_location(text, path, dict(os.environ), c.service, c.index), c.message)
    r = routes[0]
    raise StackFileError(edge_location(text, path, dict(os.environ), r.service, r.host), r.message)


def _finish(failures: List[str]) -> None:
    if failures:
        for f in failures:
            err(f"error: {f}")
        sys.exit(1)


def _node_warnings(stack: Stack) -> List[StackWarning]:
    """Warnings only the nodes can give (a logging driver a node lacks); none if unknown."""
    if not any(s.container.logging for s in stack.services):
        return []
    try:
        nodes = asyncio.run(imagelib.list_nodes())
        answers = asyncio.run(nodeinfo.infos(nodes))
    except SwarmletError:
        return []
    return log_driver_warnings(stack, {n: nodeinfo.log_drivers(i) for n, i in answers.items()})


def _build_progress(service: str, line: str) -> None:
    click.echo(f"{service}: {line}")


@click.command("deploy", epilog="Example: swarmlet deploy -f examples/hello/stack.yml --dry-run")
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False),
              help="A Compose stack file.")
@click.option("--name", "-n", "stack_name", help="The stack's name (default: the file's 'name:' "
              "or its folder), which prefixes its services: <stack>_<service>.")
@click.option("--profile", "profiles", multiple=True,
              help="Deploy the services of this profile too (repeatable; default: $COMPOSE_PROFILES).")
@click.option("--prune", is_flag=True, help="Remove this stack's services that the file no longer has.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing (works with no master).")
@click.option("--detach", "-d", is_flag=True, help="Do not wait for the rollout.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the rollout.")
@click.option("--push/--no-push", default=None,
              help="Push images the nodes lack (default: built images are pushed; others: ask on "
                   "a terminal, else warn).")
def deploy_cmd(path: str, stack_name: Optional[str], profiles: Tuple[str, ...], prune: bool,
               dry_run: bool, detach: bool, timeout: float, push: Optional[bool]) -> None:
    """Create or update services from a Compose stack file, as 'docker stack deploy' does.

    Services are named <stack>_<service> and reach each other by their short
    names inside the stack. Services with 'build:' are built on this host's
    Docker and pushed to the nodes (no registry); an unchanged build context is
    neither rebuilt nor pushed again.
    """
    env = dict(os.environ)
    stack = load_stack(path, env, name=stack_name, profiles=list(profiles) or None)
    stack = resolve_builds(stack)                   # content tags: reads the contexts, no Docker
    warnings = list(stack.warnings) + _node_warnings(stack)
    # The master plans and applies the whole stack in one transaction (POST /v1/stacks/NAME):
    # the same request with dry_run asks for the plan alone.
    body = {"services": [to_wire(s) for s in stack.services], "prune": prune, "file": stack.file,
            "warnings": [{"location": w.location, "message": w.message, "key": w.key} for w in warnings],
            "skipped": [[name, list(p)] for name, p in stack.skipped],
            # the file's secrets and configs: the master makes a version only if one changed
            "secrets": [{"kind": v.kind, "name": v.name, "data": base64.b64encode(v.data).decode()}
                        for v in stack.values],
            # tls: {cert, key} pairs, checked on loading; the master seals the keys
            "certificates": [{"name": c.name, "cert": c.cert, "key": c.key}
                             for c in stack.certificates]}
    try:
        plan = call("POST", f"/v1/stacks/{stack.name}", {**body, "dry_run": True})
    except (Unreachable, ConfigError) as exc:
        if not dry_run:
            raise
        _offline_plan(stack, exc)
        return
    _refuse_port_clashes(path, stack, plan)
    click.echo(plan["text"])                        # the warnings are in it, printed once
    if dry_run or not plan["has_changes"]:
        return
    changing = {c["image"] for c in plan["create"] + plan["update"] if c["image"]}
    todo = _builds_for(stack, changing)
    built = {s.image for s in todo.services}
    if built:                                       # a failed build raises: nothing applied
        asyncio.run(build_all(todo, _build_progress))
        offer_push(sorted(built), True if push is None else push)
    offer_push(sorted(changing - built), push)
    out = call("POST", f"/v1/stacks/{stack.name}", {**body, "dry_run": False})
    for a in out["applied"]:
        click.echo(f"{a['name']}: removed" if a["action"] == "remove"
                   else f"{a['name']}: {a['action']}d, revision {a['revision']}")
    if not detach:
        _finish(follow([a["name"] for a in out["applied"] if a["action"] != "remove"], timeout))


def _offline_plan(stack: Stack, why: Exception) -> None:
    """``--dry-run`` with no master: the plan against an empty cluster, saying so."""
    note = f"no master reachable ({str(why).splitlines()[0]}): every service is shown as create"
    plan = dataclasses.replace(plan_deploy({}, stack), note=note)
    click.echo(render_plan(plan))


def _builds_for(stack: Stack, images: set) -> Stack:
    """The part of the stack to build: its build services whose image the plan changes."""
    keep = tuple(s for s in stack.services if s.name in stack.builds and s.image in images)
    return dataclasses.replace(stack, services=keep,
                               builds={s.name: stack.builds[s.name] for s in keep})


@click.command("update", epilog="Example: swarmlet update web --image swarmlet-hello:2")
@click.argument("service")
@click.option("--image", help="New image.")
@click.option("-e", "--env", "env_add", multiple=True, help="Set KEY=VALUE (repeatable).")
@click.option("--env-rm", multiple=True, help="Remove an environment variable (repeatable).")
@click.option("--replicas", type=click.IntRange(0), help="New replica count.")
@click.option("--publish-add", multiple=True, help="Publish PUBLISHED:TARGET[/PROTO] (repeatable).")
@click.option("--publish-rm", multiple=True,
              help="Stop publishing PORT[/PROTO], a published or target port (repeatable).")
@click.option("--health-path", help="New HTTP health check path.")
@click.option("--secret-add", multiple=True,
              help="Mount a secret: NAME[:TARGET] or source=NAME,target=T,uid=U,gid=G,mode=0440.")
@click.option("--secret-rm", multiple=True, help="Stop mounting a secret (by name).")
@click.option("--config-add", multiple=True, help="Mount a config: NAME:/PATH or source=NAME,target=/PATH.")
@click.option("--config-rm", multiple=True, help="Stop mounting a config (by name).")
@click.option("--parallelism", type=click.IntRange(1), help="Replicas updated at a time.")
@click.option("--monitor", type=float, help="Seconds a new replica must stay healthy.")
@click.option("--failure-action", type=click.Choice(["rollback", "pause", "continue"]))
@click.option("--detach", "-d", is_flag=True, help="Do not wait for the rollout.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the rollout.")
@click.option("--push/--no-push", default=None,
              help="Push the new image to nodes that lack it (default: ask on a terminal, else warn).")
def update_cmd(service: str, image: Optional[str], env_add: Tuple[str, ...], env_rm: Tuple[str, ...],
               replicas: Optional[int], publish_add: Tuple[str, ...], publish_rm: Tuple[str, ...],
               health_path: Optional[str], secret_add: Tuple[str, ...], secret_rm: Tuple[str, ...],
               config_add: Tuple[str, ...], config_rm: Tuple[str, ...], parallelism: Optional[int],
               monitor: Optional[float], failure_action: Optional[str], detach: bool,
               timeout: float, push: Optional[bool]) -> None:
    """Rolling-update a service: health-gated, start-first, rolled back on failure."""
    service = resolve(service)
    spec = call("GET", f"/v1/services/{service}")["spec"]
    changes: Dict[str, Any] = {}
    if image:
        changes["image"] = image
    if env_add or env_rm:
        env = dict(spec.get("env") or {})
        env.update(parse_env(env_add))
        for k in env_rm:
            env.pop(k, None)
        changes["env"] = env
    if replicas is not None:
        changes["replicas"] = replicas
    if publish_add or publish_rm:
        changes["ports"] = _ports_after(spec.get("ports") or [], publish_add, publish_rm)
    if health_path:
        changes["health"] = {**spec["health"], "kind": "http", "path": health_path}
    for kind, add, rm in (("secret", secret_add, secret_rm), ("config", config_add, config_rm)):
        if add or rm:
            changes[kind + "s"] = refs_after(kind, spec.get(kind + "s") or [], add, rm)
    upd = dict(spec["update"])
    for key, val in (("parallelism", parallelism), ("monitor", monitor), ("failure_action", failure_action)):
        if val is not None:
            upd[key] = val
    if upd != spec["update"]:
        changes["update"] = upd
    if not changes:
        raise click.UsageError("nothing to change: give --image, --env, --replicas, …")
    if image:
        offer_push([image], push)
    out = call("PATCH", f"/v1/services/{service}", changes)
    if not out.get("changed"):
        click.echo(f"{service}: unchanged (revision {out['revision']})")
        return
    click.echo(f"{service}: revision {out['revision']}")
    if not detach:
        _finish(follow([service], timeout))


def _ports_after(ports: List[Dict[str, Any]], add: Tuple[str, ...], rm: Tuple[str, ...]
                 ) -> List[Dict[str, Any]]:
    """The wire ``ports`` after ``--publish-rm`` (by published or target port) and ``--publish-add``."""
    gone = []
    for text in rm:
        num, _, proto = text.partition("/")
        if not num.isdigit() or proto not in ("", "tcp", "udp"):
            raise click.UsageError(f"bad --publish-rm {text!r}: use PORT or PORT/udp")
        gone.append((int(num), proto or "tcp"))
    kept = [p for p in ports if not any(
        n in (p.get("published"), p.get("target")) and proto == p.get("protocol", "tcp")
        for n, proto in gone)]
    return kept + [to_wire(parse_port(text)) for text in add]


@click.command("rollback", epilog="Example: swarmlet rollback web --to 3")
@click.argument("service")
@click.option("--to", "to", type=int, help="Revision to return to (default: the previous one).")
@click.option("--detach", "-d", is_flag=True, help="Do not wait for the rollout.")
@click.option("--timeout", default=300.0, show_default=True)
def rollback_cmd(service: str, to: Optional[int], detach: bool, timeout: float) -> None:
    """Return a service to an earlier revision's spec (rolled out health-gated, as a new revision)."""
    service = resolve(service)
    out = call("POST", f"/v1/services/{service}/rollback", {"to": to} if to is not None else {})
    click.echo(f"{service}: rolling back to revision {out['to']}'s spec as revision {out['revision']}")
    if not detach and out.get("changed", True):
        failures = follow([service], timeout)
        _finish([f for f in failures if "rolled back, revision" not in f])


@click.command("history", epilog="Example: swarmlet history web -o json")
@click.argument("service")
@output_option
def history_cmd(service: str, output: str) -> None:
    """List a service's revisions, newest first."""
    service = resolve(service)
    revs = call("GET", f"/v1/services/{service}/revisions")
    rows = []
    for r in sorted(revs, key=lambda r: -r["revision"]):
        s = r["spec"]
        rows.append({"revision": r["revision"], "image": s["image"], "replicas": s["replicas"],
                     "created": datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
                     "created_at": r["created_at"], "spec": s})
    if output == "json":
        emit_json(rows)
        return
    emit(output, rows, [("REVISION", "revision"), ("IMAGE", "image"), ("REPLICAS", "replicas"),
                        ("CREATED", "created")])


COMMANDS = [deploy_cmd, update_cmd, rollback_cmd, history_cmd]
