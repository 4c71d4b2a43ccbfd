"""The agent's HTTPS API (aiohttp, mutual TLS against the cluster CA).

Owns the routes of docs/internal-apis.md ("Agent API") and the authorization
rule: the TLS handshake already requires a certificate from the cluster CA
that is not revoked (``tlsutil``: the agent's ``Denylist`` is checked inside
the handshake, and again per request for connections made before a
revocation); on top of it only the roles ``master`` and ``cli`` may call (403
otherwise, e.g. another agent), and only ``master`` may change what the node
trusts (denylist, certificate). Another agent may call one route only: the relay
of signed route updates (``relayapi``: ``PUT /v1/routes/relay``). A ``master``
caller's certificate is remembered (``MasterCerts.learn``): it is how this node
checks who signed a relayed update. Handlers are thin: they
translate HTTP to ``Agent`` calls and errors to JSON bodies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Tuple

from aiohttp import web

from swarmlet.shipped.exceptions import (ConfigError, DockerError, ProtocolError, StaleAssignment,
                                         StaleRoutes)
from swarmlet.shipped.models import Assignment, RoutesUpdate, from_wire, to_wire
from swarmlet.shipped.tlsutil import peer_name, peer_revoked, peer_role, server_context

from . import gossipkeys
from .certs import apply_denylist
from .edgeapi import MASTER_ONLY as EDGE_MASTER_ONLY, routes as edge_routes
from .images import routes as image_routes
from .relayapi import AGENT_CALLABLE, routes as relay_routes
from .reconcile import Observed
from .watch import MAX_WAIT


ALLOWED_ROLES = ("master", "cli")
MASTER_ONLY = {("PUT", "/v1/revocations"),
               ("POST", "/v1/certificate/request"), ("PUT", "/v1/certificate")} | EDGE_MASTER_ONLY
AGENT_KEY: "web.AppKey[Any]" = web.AppKey("agent", object)
log = logging.getLogger("swarmlet.agent")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def authorize(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    role = peer_role(ssl_object)
    agent_call = role == "agent" and (request.method, request.path) in AGENT_CALLABLE
    if role not in ALLOWED_ROLES and not agent_call:
        return _error(403, f"role {role!r} may not use the agent API",
                      peer=peer_name(ssl_object))
    agent = request.app[AGENT_KEY]
    revoked = peer_revoked(ssl_object, agent.denylist)
    if revoked is not None:   # a connection made before the revocation
        return _error(403, revoked)
    if role == "master" and getattr(agent, "relay_certs", None) is not None:
        agent.relay_certs.learn(ssl_object.getpeercert(binary_form=True))
    if role != "master" and (request.method, request.path) in MASTER_ONLY:
        return _error(403, f"only the master may {request.method} {request.path}")
    return await handler(request)


def _agent(request: web.Request) -> Any:
    return request.app[AGENT_KEY]


async def get_info(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).info())


async def put_assignment(request: web.Request) -> web.Response:
    agent = _agent(request)
    try:
        body = await request.json()
        assignment = from_wire(Assignment, body)
    except (ValueError, ProtocolError) as exc:
        return _error(400, f"bad assignment: {exc}")
    if assignment.node != agent.config.name:
        return _error(400, f"assignment is for node {assignment.node!r}, this is "
                           f"{agent.config.name!r}")
    try:
        applied = await agent.set_assignment(assignment)
    except StaleAssignment as exc:
        older_term = exc.term > assignment.term
        return _error(409, str(exc) if older_term else "stale assignment", current=exc.current,
                      term=exc.term)
    if not applied:
        return web.json_response({"version": assignment.version, "applied": False})
    return web.json_response({"version": assignment.version, "applied": True})


async def put_routes(request: web.Request) -> web.Response:
    """The routing table on its own channel: whole, or a delta against our version."""
    agent = _agent(request)
    try:
        update = from_wire(RoutesUpdate, await request.json())
    except (ValueError, ProtocolError) as exc:
        return _error(400, f"bad routes update: {exc}")
    if update.node != agent.config.name:
        return _error(400, f"routes update is for node {update.node!r}, this is "
                           f"{agent.config.name!r}")
    try:
        applied = await agent.set_routes(update)
    except StaleRoutes as exc:
        return _error(409, str(exc), current=exc.current, epoch=exc.epoch, term=exc.term)
    return web.json_response({"version": update.version, "applied": applied})


async def get_routes(request: web.Request) -> web.Response:
    return web.json_response(to_wire(_agent(request).routes.current))


async def get_assignment(request: web.Request) -> web.Response:
    cur = _agent(request).store.current
    if cur is None:
        return _error(404, "no assignment yet", current=0)
    return web.json_response(to_wire(cur))


async def get_terms(request: web.Request) -> web.Response:
    """The leader terms this node heard from: {"term": current, "offers": {term: {last, count}}}."""
    store = _agent(request).store
    cur = store.current
    return web.json_response({"term": cur.term if cur is not None else 0,
                              "offers": {str(t): o for t, o in store.offers.items()}})


async def get_tasks(request: web.Request) -> web.Response:
    """The task report; ``?since=SEQ&wait=S`` makes it a long poll (see ``watch``)."""
    agent = _agent(request)
    q = request.query
    if "since" in q:
        try:
            since, wait = int(q["since"]), float(q.get("wait", 0))
        except ValueError:
            return _error(400, "since is an integer and wait a number of seconds")
        if not 0 <= wait <= MAX_WAIT:
            return _error(400, f"wait is 0 to {MAX_WAIT:g} seconds")
        await agent.report.wait(since, wait)
    routes = agent.routes.current
    return web.json_response({"version": agent.version, "seq": agent.report.seq,
                              "routes": {"version": routes.version, "epoch": routes.epoch},
                              "edge": {"version": agent.edge.key[0], "epoch": agent.edge.key[1]},
                              "tasks": [to_wire(r) for r in agent.book.rows()],
                              "revocations": agent.denylist.version,
                              "secrets_missing": agent.secrets_missing(),
                              "cert_not_after": agent.cert_not_after})


async def get_revocations(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).denylist.to_wire())


async def put_revocations(request: web.Request) -> web.Response:
    agent = _agent(request)
    try:
        changed, names = apply_denylist(agent.denylist, await request.json())
    except (ValueError, ProtocolError) as exc:
        return _error(400, f"bad denylist: {exc}")
    if changed:
        await asyncio.to_thread(agent.denylist_file.save, agent.denylist)
        if names:
            log.warning("certificates revoked: %s", ", ".join(names))
    return web.json_response({"version": agent.denylist.version, "changed": changed})


async def post_certificate_request(request: web.Request) -> web.Response:
    csr = await asyncio.to_thread(_agent(request).renewal.request)
    return web.json_response({"csr": csr})


async def put_certificate(request: web.Request) -> web.Response:
    agent = _agent(request)
    try:
        body = await request.json()
        cert = body["cert"] if isinstance(body, dict) else None
        if not isinstance(cert, str):
            raise ValueError('expected {"cert": PEM}')
        out = await asyncio.to_thread(agent.renewal.install, cert, agent.tls)
    except (ValueError, KeyError, ProtocolError) as exc:
        return _error(400, f"certificate refused: {exc}")
    except ConfigError as exc:
        return _error(500, str(exc))
    agent.certificate_changed()
    return web.json_response(out)


def _pick(containers: "list[Observed]") -> Observed:
    return max(containers, key=lambda c: (c.status == "running", c.created_at))


async def get_logs(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    q = request.query
    try:
        tail = int(q["tail"]) if "tail" in q else None
        since = float(q["since"]) if "since" in q else None
    except ValueError:
        return _error(400, "tail and since must be numbers")
    follow = q.get("follow", "0") in ("1", "true", "yes")
    timestamps = q.get("timestamps", "0") in ("1", "true", "yes")
    try:
        found = await agent.runtime.find(request.match_info["task_id"])
    except DockerError as exc:
        return _error(502, str(exc))
    if not found:
        return _error(404, f"no container for task {request.match_info['task_id']}")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    try:
        async for chunk in agent.runtime.logs(_pick(found).container_id, follow=follow, tail=tail,
                                              since=since, timestamps=timestamps):
            await resp.write(chunk)
    except DockerError as exc:
        await resp.write(f"\n[swarmlet: logs ended: {exc}]\n".encode())
    except (ConnectionResetError, ConnectionError):
        return resp  # the client went away; the generator's finally closes the stream
    await resp.write_eof()
    return resp


async def get_stats(request: web.Request) -> web.Response:
    agent = _agent(request)
    if not agent.last_stats.get("node"):
        await agent.sample_stats()
    return web.json_response(agent.last_stats)


async def get_members(request: web.Request) -> web.Response:
    """The gossip view; ``?brief=1`` leaves out each member's meta (name, state and
    incarnation are what the master's liveness reads: a tenth of the bytes at 1,000 nodes)."""
    members = _agent(request).members.members()
    if request.query.get("brief") in ("1", "true", "yes"):
        members = [{k: m.get(k) for k in ("name", "state", "incarnation")} for m in members]
    return web.json_response(members)


async def post_leave(request: web.Request) -> web.Response:
    await _agent(request).members.leave()
    return web.json_response({"left": True})


async def put_gossip_keys(request: web.Request) -> web.Response:
    """Replace the gossip keyring (first key primary): ``swarmlet key rotate``."""
    try:
        keys = gossipkeys.parse(await request.json())
    except (ValueError, ProtocolError) as exc:
        return _error(400, f"bad gossip keys: {exc}")
    try:
        return web.json_response(await gossipkeys.apply(_agent(request), keys))
    except ConfigError as exc:
        return _error(500, str(exc))


async def get_gossip_keys(request: web.Request) -> web.Response:
    return web.json_response(gossipkeys.current(_agent(request)))


async def get_metrics(request: web.Request) -> web.Response:
    agent = _agent(request)
    ingress = getattr(agent, "ingress", None)
    if hasattr(ingress, "refresh"):
        await ingress.refresh()         # the LB worker's fresh figures, 0.5 s at most
    lines = [
        "# TYPE swarmlet_agent_assignment_version gauge",
        f"swarmlet_agent_assignment_version {agent.version}",
        "# TYPE swarmlet_agent_tasks gauge",
    ]
    for state, n in sorted(agent.book.counts().items()):
        lines.append(f'swarmlet_agent_tasks{{state="{state}"}} {n}')
    for name, value in agent.counters.items():
        lines += [f"# TYPE swarmlet_agent_{name}_total counter", f"swarmlet_agent_{name}_total {value}"]
    lines += ["# TYPE swarmlet_agent_loop_lag_max_seconds gauge",
              f"swarmlet_agent_loop_lag_max_seconds {agent.lag.max_lag:.6f}",
              "# TYPE swarmlet_agent_docker_up gauge",
              f"swarmlet_agent_docker_up {int(agent.docker_ok)}"]
    lines += _utilization(agent)
    lines += _gossip_counters(agent)
    text = "\n".join(lines) + "\n"
    ingress = getattr(agent, "ingress", None)
    if ingress is not None and getattr(ingress, "proxies", None):
        text += ingress.metrics_text()   # this node's load balancers (ingress mode)
    return web.Response(text=text, content_type="text/plain")


def _utilization(agent: Any) -> "list[str]":
    """Node and per-task CPU and memory from the last stats sample, restarts per task."""
    node = agent.last_stats.get("node") or {}
    name = _label(agent.config.name)
    out = []
    for metric, key, help_ in (
            ("swarmlet_agent_node_cpu_percent", "cpu_percent", "Node CPU use, percent of all CPUs."),
            ("swarmlet_agent_node_memory_used_bytes", "mem_used", "Node memory in use."),
            ("swarmlet_agent_node_memory_total_bytes", "mem_total", "Node memory."),
            ("swarmlet_agent_node_load1", "load1", "Node load average, 1 minute."),
            ("swarmlet_agent_node_cpus", "cpus", "Node CPUs.")):
        if isinstance(node.get(key), (int, float)):
            out += [f"# HELP {metric} {help_}", f"# TYPE {metric} gauge",
                    f'{metric}{{node="{name}"}} {float(node[key]):g}']
    rows = {r.task_id: r for r in agent.book.rows()}
    stats = agent.last_stats.get("tasks") or {}
    cpu, mem, restarts = [], [], []
    for tid, r in sorted(rows.items()):
        lab = f'node="{name}",service="{_label(r.service)}",task="{_label(tid)}"'
        s = stats.get(tid) or {}
        if isinstance(s.get("cpu_percent"), (int, float)):
            cpu.append(f"swarmlet_agent_task_cpu_percent{{{lab}}} {float(s['cpu_percent']):g}")
        if isinstance(s.get("mem_used"), (int, float)):
            mem.append(f"swarmlet_agent_task_memory_used_bytes{{{lab}}} {float(s['mem_used']):g}")
        restarts.append(f"swarmlet_agent_task_restarts_total{{{lab}}} {int(r.restarts)}")
    for metric, kind, help_, samples in (
            ("swarmlet_agent_task_cpu_percent", "gauge", "Task CPU use, percent of one CPU.", cpu),
            ("swarmlet_agent_task_memory_used_bytes", "gauge", "Task memory in use.", mem),
            ("swarmlet_agent_task_restarts_total", "counter", "Crash restarts of the task.",
             restarts)):
        out += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"] + samples
    return out


def _gossip_counters(agent: Any) -> "list[str]":
    """The gossip node's counters (drops by reason, suspicions, refutations...)."""
    stats = agent.members.stats() if hasattr(agent.members, "stats") else {}
    out = []
    for key, value in sorted(stats.items()):
        if isinstance(value, int) and not isinstance(value, bool) and key.isidentifier():
            kind = "gauge" if key.startswith(("members_", "awareness")) else "counter"
            metric = f"swarmlet_agent_gossip_{key}" + ("_total" if kind == "counter" else "")
            out += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
    return out


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def make_app(agent: Any) -> web.Application:
    app = web.Application(middlewares=[authorize], client_max_size=16 * 1024 * 1024)
    app[AGENT_KEY] = agent
    app.add_routes([
        web.get("/v1/info", get_info),
        web.put("/v1/assignment", put_assignment),
        web.get("/v1/assignment", get_assignment),
        web.put("/v1/routes", put_routes),
        web.get("/v1/routes", get_routes),
        web.get("/v1/terms", get_terms),
        web.get("/v1/tasks", get_tasks),
        web.get("/v1/revocations", get_revocations),
        web.put("/v1/revocations", put_revocations),
        web.post("/v1/certificate/request", post_certificate_request),
        web.put("/v1/certificate", put_certificate),
        web.get("/v1/tasks/{task_id}/logs", get_logs),
        web.get("/v1/stats", get_stats),
        web.get("/v1/members", get_members),
        web.post("/v1/leave", post_leave),
        web.put("/v1/gossip/keys", put_gossip_keys),
        web.get("/v1/gossip/keys", get_gossip_keys),
        web.get("/metrics", get_metrics),
        *image_routes(_agent),
        *edge_routes(_agent),
        *relay_routes(_agent),
    ])
    return app


async def start_api(agent: Any) -> Tuple[web.AppRunner, int]:
    """Serve the API; returns the runner (for cleanup) and the bound port."""
    cfg = agent.config
    ctx = server_context(cfg.cert, cfg.key, cfg.ca, denylist=agent.denylist)
    agent.tls = ctx   # renewal loads the new certificate into it
    runner = web.AppRunner(make_app(agent), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.api_bind, cfg.api_port, ssl_context=ctx)
    await site.start()
    port = cfg.api_port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port
