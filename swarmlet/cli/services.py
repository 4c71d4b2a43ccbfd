"""CLI for services and placement: run, services, ps, scale, rm, status, node drain|activate, rebalance.

Each command is one call (or a few) to the master API over mutual TLS with
the ``cli`` certificate; tables for people, ``-o json`` for programs. ``ps``
JSON rows carry ``service``, ``task``, ``node``, ``state``, ``health``,
``reason`` and ``revision``. Flag parsing (ports, env, sizes) is pure and
lives in ``parse_*`` helpers. The ``node`` group is owned here; ``node rm``
is added to it by ``cli.cluster``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any, Dict, List, Optional, Tuple

import click

from .. import cluster as clusterlib
from ..client import call_master
from ..shipped.exceptions import UsageError
from ..shipped.models import (DOWN_WINDOW_RANGE, EdgeSpec, HealthCheck, PortSpec, Resources, ServiceSpec,
                              to_wire)
from ..shipped.validate import validate_spec
from ..webcerts import check_pair
from .names import pick, stack_of
from .offer_push import offer_push
from .secretflags import parse_ref
from .output import emit, emit_json, output_option

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


# --- pure flag parsing ---------------------------------------------------------

def parse_size(text: str) -> int:
    """Docker-style sizes, 1024-based: "512m", "2g", "1GiB", "1048576"."""
    m = _SIZE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"bad size {text!r}: use e.g. 512m, 2g or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_port(text: str) -> PortSpec:
    """``PUBLISHED:TARGET[/PROTO]`` (load-balanced) or ``TARGET[/PROTO]`` (not published)."""
    body, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"bad port {text!r}: protocol must be tcp or udp")
    parts = body.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"bad port {text!r}: use PUBLISHED:TARGET, e.g. 8080:80") from None
    if len(nums) not in (1, 2) or not all(0 < n < 65536 for n in nums):
        raise UsageError(f"bad port {text!r}: use PUBLISHED:TARGET, e.g. 8080:80")
    if len(nums) == 1:
        return PortSpec(target=nums[0], protocol=proto)
    return PortSpec(target=nums[1], published=nums[0], protocol=proto)


def parse_env(items: Tuple[str, ...]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise UsageError(f"bad env {item!r}: use KEY=VALUE")
        env[key] = value
    return env


def parse_scale(items: Tuple[str, ...]) -> List[Tuple[str, int]]:
    out = []
    for item in items:
        name, eq, n = item.partition("=")
        if not name or not eq or not n.isdigit():
            raise UsageError(f"bad scale {item!r}: use SERVICE=N, e.g. web=5")
        out.append((name, int(n)))
    if not out:
        raise UsageError("nothing to scale: give SERVICE=N")
    return out


def build_spec(name: str, image: str, replicas: int, ports: Tuple[str, ...], env: Tuple[str, ...],
               health_path: Optional[str], cpus: Optional[float], memory: Optional[str],
               constraints: Tuple[str, ...], max_per_node: Optional[int], placement: str,
               mode: str, command: Tuple[str, ...], edge: EdgeSpec = EdgeSpec()) -> ServiceSpec:
    mem = parse_size(memory) if memory else None
    res = Resources(cpus=cpus, memory=mem)
    spec = ServiceSpec(
        name=name, image=image, replicas=replicas, mode=mode, env=parse_env(env),
        ports=tuple(parse_port(p) for p in ports),
        health=HealthCheck(kind="http", path=health_path) if health_path else HealthCheck(),
        limits=res, reservations=res, constraints=tuple(constraints), max_per_node=max_per_node,
        placement=placement, command=tuple(command) if command else None, edge=edge)
    validate_spec(spec)     # judged here as the master will: nothing is sent if it would refuse
    return spec


def edge_from_flags(name: str, hosts: Tuple[str, ...], path: str, port: Optional[int],
                    tls: Optional[str], cert: Optional[str], key: Optional[str], hsts: int,
                    redirect: bool) -> Tuple[EdgeSpec, Optional[Tuple[str, str]]]:
    """The ``EdgeSpec`` of ``run``'s edge flags, and a user's (cert, key) PEM pair to upload.
    A mismatched pair is refused here, before anything is sent."""
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if cert is not None and tls is not None:
        raise UsageError("--tls-cert/--tls-key is TLS with your certificate: drop --tls")
    pair = None
    mode = tls or "off"
    if cert is not None and key is not None:
        with open(cert) as fh_c, open(key) as fh_k:
            pair = (fh_c.read(), fh_k.read())
        check_pair(pair[0].encode(), pair[1].encode(), [h.lower() for h in hosts],
                   what=f"--tls-cert {cert}", now=time.time())
        mode = "manual"
    edge = EdgeSpec(hosts=tuple(h.strip().lower().rstrip(".") for h in hosts), path=path,
                    port=port, tls=mode, cert=name if mode == "manual" else "", redirect=redirect,
                    hsts=hsts)
    return edge, pair


# --- the master connection -------------------------------------------------------

def call(method: str, path: str, body: Any = None) -> Any:
    """One request to the master; its errors say why, never the HTTP request (see --debug)."""
    return asyncio.run(call_master(clusterlib.load(), method, path, body, timeout=15.0))


def resolve(name: str) -> str:
    """The full service name ``name`` means (a stack member's short name where unambiguous)."""
    return pick(name, call("GET", "/v1/services"))


# --- commands --------------------------------------------------------------------

@click.command("run", epilog="Example: swarmlet run web --image swarmlet-hello:1 --replicas 3 -p 8080:8080")
@click.argument("name")
@click.option("--image", required=True, help="Image (must exist on the nodes; see 'swarmlet image push').")
@click.option("--replicas", "-r", default=1, show_default=True, type=click.IntRange(0))
@click.option("-p", "--publish", "ports", multiple=True, help="PUBLISHED:TARGET, load-balanced.")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--health-path", help="HTTP health check path, e.g. /health.")
@click.option("--cpus", type=float, help="CPUs reserved (and limited) per replica, e.g. 0.5.")
@click.option("--memory", help="Memory reserved (and limited) per replica, e.g. 512m.")
@click.option("--constraint", "constraints", multiple=True,
              help="node.labels.K==V, node.labels.K!=V, node.name==N (repeatable).")
@click.option("--max-per-node", type=click.IntRange(1), help="At most this many replicas on one node.")
@click.option("--placement", type=click.Choice(["spread", "binpack"]), default="spread", show_default=True)
@click.option("--global", "global_", is_flag=True, help="One replica on every eligible node.")
@click.option("--push/--no-push", default=None,
              help="Push the image to nodes that lack it (default: ask on a terminal, else warn).")
@click.option("--host", "hosts", multiple=True,
              help="Serve on the edge ports (80/443) for this host name (repeatable).")
@click.option("--path", "edge_path", default="/", show_default=True,
              help="With --host: the path prefix routed here (longest prefix wins).")
@click.option("--port", "edge_port", type=click.IntRange(1, 65535),
              help="With --host: the container port routed to (default: the first -p target).")
@click.option("--tls", type=click.Choice(["off", "acme"]),
              help="With --host: off (default), or acme (certificates from the cluster's CA).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="With --host: your certificate chain (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="With --tls-cert: its private key (PEM), stored sealed by the master.")
@click.option("--hsts", type=click.IntRange(0), default=0,
              help="With TLS: Strict-Transport-Security max-age in seconds (0: none).")
@click.option("--no-https-redirect", is_flag=True,
              help="With TLS: answer plain HTTP too instead of redirecting to HTTPS.")
@click.option("--secret", "secret_refs", multiple=True,
              help="Mount a secret: NAME[:TARGET] or source=NAME,target=T,uid=U,gid=G,mode=0440 "
                   "(at /run/secrets/TARGET; repeatable).")
@click.option("--config", "config_refs", multiple=True,
              help="Mount a config: NAME:/PATH or source=NAME,target=/PATH,mode=0444 (repeatable).")
@click.argument("command", nargs=-1)
def run_cmd(name: str, image: str, replicas: int, ports: Tuple[str, ...], env: Tuple[str, ...],
            health_path: Optional[str], cpus: Optional[float], memory: Optional[str],
            constraints: Tuple[str, ...], max_per_node: Optional[int], placement: str,
            global_: bool, push: Optional[bool], hosts: Tuple[str, ...], edge_path: str,
            edge_port: Optional[int], tls: Optional[str], tls_cert: Optional[str],
            tls_key: Optional[str], hsts: int, no_https_redirect: bool,
            secret_refs: Tuple[str, ...], config_refs: Tuple[str, ...],
            command: Tuple[str, ...]) -> None:
    """Create a service from flags (use 'swarmlet deploy' for stack files)."""
    edge, pair = edge_from_flags(name, hosts, edge_path, edge_port, tls, tls_cert, tls_key, hsts,
                                 not no_https_redirect)
    if edge_port is not None and not any(p.target == edge_port for p in map(parse_port, ports)):
        ports = ports + (str(edge_port),)
    spec = build_spec(name, image, replicas, ports, env, health_path, cpus, memory, constraints,
                      max_per_node, placement, "global" if global_ else "replicated", command,
                      edge)
    if secret_refs or config_refs:
        spec = dataclasses.replace(spec, secrets=tuple(parse_ref("secret", t) for t in secret_refs),
                                   configs=tuple(parse_ref("config", t) for t in config_refs))
        validate_spec(spec)
    offer_push([image], push)
    if pair is not None:        # stored (key sealed) before the service that names it
        call("PUT", f"/v1/certs/{name}", {"cert": pair[0], "key": pair[1]})
    out = call("POST", "/v1/services?create=1", to_wire(spec))
    click.echo(f"service {name} created (revision {out.get('revision')}); see: swarmlet ps {name}")


_SERVICE_COLUMNS = [("NAME", "name"), ("STACK", lambda r: stack_of(r) or "-"),
                    ("REVISION", "revision"), ("IMAGE", "image"),
                    ("REPLICAS", lambda r: f"{r['running']}/{r['replicas']}" if r["mode"] != "global"
                     else f"{r['running']} (global)"),
                    ("PENDING", "pending"), ("PORTS", "ports")]


@click.command("services", epilog="Example: swarmlet services --stack shop   (or: swarmlet services db)")
@click.argument("name", required=False)
@click.option("--stack", help="Only this stack's services.")
@output_option
def services_cmd(name: Optional[str], stack: Optional[str], output: str) -> None:
    """List services with their healthy/desired replicas (NAME: one service, full or short name)."""
    rows = call("GET", "/v1/services")
    if name:
        full = pick(name, rows)
        rows = [r for r in rows if r["name"] == full]
        if not rows:
            raise UsageError(f"no service {name!r}", hint="see 'swarmlet services'")
    if stack:
        rows = [r for r in rows if stack_of(r) == stack]
    emit(output, rows, _SERVICE_COLUMNS)


_PS_COLUMNS = [("SERVICE", "service"), ("TASK", "task"), ("NODE", lambda r: r["node"] or "-"),
               ("STATE", "state"), ("HEALTH", "health"), ("REV", "revision"), ("REASON", "reason")]


@click.command("ps", epilog="Example: swarmlet ps web -o json")
@click.argument("service", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Also tasks that have finished.")
@output_option
def ps_cmd(service: Optional[str], all_: bool, output: str) -> None:
    """List tasks (replicas), and why any is pending."""
    q = []
    if service:
        q.append(f"service={resolve(service)}")
    if all_:
        q.append("all=1")
    rows = call("GET", "/v1/tasks" + ("?" + "&".join(q) if q else ""))
    emit(output, rows, _PS_COLUMNS)


@click.command("scale", epilog="Example: swarmlet scale web=5 api=2")
@click.argument("pairs", nargs=-1, required=True)
def scale_cmd(pairs: Tuple[str, ...]) -> None:
    """Set the replica count of services."""
    for name, n in parse_scale(pairs):
        name = resolve(name)
        out = call("PATCH", f"/v1/services/{name}", {"replicas": n})
        click.echo(f"{name} scaled to {n}" + ("" if out.get("changed") else " (unchanged)"))


@click.command("rm", epilog="Example: swarmlet rm web")
@click.argument("services", nargs=-1, required=True)
def rm_cmd(services: Tuple[str, ...]) -> None:
    """Remove services (their tasks are stopped)."""
    for name in services:
        name = resolve(name)
        out = call("DELETE", f"/v1/services/{name}")
        click.echo(f"{name} removed ({out.get('stopping', 0)} tasks stopping)")


@click.command("status", epilog="Example: swarmlet status -o json")
@output_option
def status_cmd(output: str) -> None:
    """Cluster summary: nodes, services, tasks."""
    st = call("GET", "/v1/status")
    if output == "json":
        emit_json(st)
        return
    n, t = st["nodes"], st["tasks"]
    cl = st.get("cluster") or {}
    click.echo(f"cluster   {cl.get('name', '?')} ({cl.get('id', '?')})")
    click.echo(f"nodes     {n['total']} total: {n.get('ready', 0)} ready, {n.get('draining', 0)} "
               f"draining, {n.get('suspect', 0)} suspect, {n.get('down', 0)} down")
    click.echo(f"services  {st['services']}")
    click.echo(f"tasks     {t['healthy']}/{t['desired']} healthy, {t['running']} running, "
               f"{t['pending']} pending")
    click.echo(f"rebalance {'automatic' if st.get('auto_rebalance') else 'manual only'}")


@click.group("node", help="Manage nodes: drain, activate, rm.")
def node() -> None:
    pass


@node.command("drain", epilog="Example: swarmlet node drain node-1")
@click.argument("name")
def node_drain(name: str) -> None:
    """Move a node's tasks elsewhere (new ones start first) and place nothing new on it."""
    out = call("POST", f"/v1/nodes/{name}/drain")
    click.echo(f"{name} draining ({out.get('tasks', 0)} tasks to move); watch: swarmlet ps")


@node.command("activate", epilog="Example: swarmlet node activate node-1")
@click.argument("name")
def node_activate(name: str) -> None:
    """Let the scheduler use a drained node again."""
    call("POST", f"/v1/nodes/{name}/activate")
    click.echo(f"{name} active")


@click.command("rebalance", epilog="Example: swarmlet rebalance   (or: swarmlet rebalance --auto off)")
@click.option("--auto", type=click.Choice(["on", "off"]),
              help="Turn automatic rebalancing (when a node joins or recovers) on or off.")
def rebalance_cmd(auto: Optional[str]) -> None:
    """Even out the spread of replicas over nodes, never dropping capacity (start first, then stop)."""
    if auto is not None:
        call("PATCH", "/v1/config", {"auto_rebalance": auto == "on"})
        click.echo(f"automatic rebalancing {auto}")
        return
    out = call("POST", "/v1/rebalance")
    moving = out.get("moving", 0)
    click.echo(f"moving {moving} replicas" if moving else "already balanced")


@click.command("autoscale", epilog="Example: swarmlet autoscale web --min 2 --max 6 --cpu 70   "
                                   "(--off to stop)")
@click.argument("service")
@click.option("--min", "min_", type=click.IntRange(0), help="Fewest replicas.")
@click.option("--max", "max_", type=click.IntRange(1), help="Most replicas.")
@click.option("--cpu", type=click.FloatRange(1, 1000), default=70.0, show_default=True,
              help="Target average CPU per replica, percent of its CPU reservation (or of one CPU).")
@click.option("--down-window", type=click.FloatRange(*DOWN_WINDOW_RANGE), default=None,
              metavar="SECONDS",
              help="Scale down only after the load has stayed low this long  [default: the "
                   "master's, 60]")
@click.option("--off", is_flag=True, help="Stop autoscaling (the replica count stays).")
def autoscale_cmd(service: str, min_: Optional[int], max_: Optional[int], cpu: float,
                  down_window: Optional[float], off: bool) -> None:
    """Scale SERVICE between --min and --max replicas to hold its average CPU near --cpu %."""
    service = resolve(service)
    if off:
        call("PATCH", f"/v1/services/{service}", {"autoscale": None})
        click.echo(f"{service}: autoscaling off")
        return
    if min_ is None or max_ is None:
        raise UsageError("give --min and --max (or --off)")
    if min_ > max_:
        raise UsageError(f"--min {min_} is above --max {max_}")
    auto: dict = {"min": min_, "max": max_, "cpu": cpu}
    if down_window is not None:    # else the master's window (the whole setting is replaced)
        auto["down_window"] = down_window
    call("PATCH", f"/v1/services/{service}", {"autoscale": auto})
    click.echo(f"{service}: autoscaling {min_}..{max_} replicas at {cpu:g}% CPU; "
               "changes show in: swarmlet events")


COMMANDS = [run_cmd, services_cmd, ps_cmd, scale_cmd, rm_cmd, status_cmd, node, rebalance_cmd,
            autoscale_cmd]
