"""The master API: aiohttp over HTTPS with client certificates (role ``cli``).

Owns the routes of docs/internal-apis.md ("Master API") and error mapping:
``UsageError``/``ProtocolError`` -> 400, ``APIError`` -> its status (404, 409),
any other ``SwarmletError`` -> 500, all as ``{"error": "..."}``. The TLS
handshake already requires a certificate of the cluster CA; only the ``cli``
and ``master`` roles may call (an agent's certificate gets 403). Handlers are
thin: they decode JSON and call ``Master``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web

from ..shipped.exceptions import APIError, NoQuorum, ProtocolError, SwarmletError, UsageError
from ..shipped.models import ServiceSpec, from_wire, to_wire
from ..shipped.tlsutil import peer_name, peer_revoked, peer_role
from . import metrics
from .dashboard import server as dash
from ..stack.values import StackWarning
from .dashboard.server import history_doc
from .secrets import KINDS, decode_data

ALLOWED_ROLES = ("cli", "master")
MASTER_KEY: "web.AppKey[Any]" = web.AppKey("master", object)
# An HA follower without a leader answers reads from its hot copy: a read-only Master per request.
VIEW_KEY: "web.RequestKey[Any]" = web.RequestKey("master_view", object)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    role = peer_role(ssl_object)
    if role not in ALLOWED_ROLES:
        return _error(403, f"role {role!r} ({peer_name(ssl_object)}) may not use the master API")
    try:
        revoked = peer_revoked(ssl_object, request.app[MASTER_KEY].certs.denylist)
    except (AttributeError, SwarmletError):   # an HA master with no leader yet: no list here
        revoked = None
    if revoked is not None:   # a connection made before the revocation
        return _error(403, revoked)
    try:
        return await handler(request)
    except (UsageError, ProtocolError) as exc:
        return _error(400, str(exc))
    except APIError as exc:
        return _error(exc.status or 500, str(exc))
    except NoQuorum as exc:     # HA: too few masters for a write; nothing was done
        return _error(503, str(exc))
    except SwarmletError as exc:
        return _error(500, str(exc))


def _m(request: web.Request) -> Any:
    view = request.get(VIEW_KEY)
    return view if view is not None else request.app[MASTER_KEY]


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise UsageError(f"request body is not JSON: {exc}") from exc


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") in ("1", "true", "yes")


async def get_nodes(request: web.Request) -> web.Response:
    return web.json_response(_m(request).nodes_view())


async def post_nodes(request: web.Request) -> web.Response:
    b = await _body(request)
    if not isinstance(b, dict):
        raise UsageError("expected a JSON object")
    try:
        out = await _m(request).register_node(str(b["name"]), str(b["address"]),
                                              int(b.get("api_port", 7443)), b.get("labels"),
                                              change_address=b.get("change_address") is True)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad node registration: {exc}") from exc
    return web.json_response(out, status=201 if out["registered"] else 200)


async def get_revocations(request: web.Request) -> web.Response:
    return web.json_response(_m(request).certs.denylist.to_wire())


async def put_revocations(request: web.Request) -> web.Response:
    """A denylist from the admin host's signer (``leave``/``node rm``): kept and shipped on."""
    return web.json_response(await _m(request).certs.adopt(await _body(request)))


async def delete_node(request: web.Request) -> web.Response:
    await _m(request).remove_node(request.match_info["name"])
    return web.json_response({"removed": request.match_info["name"]})


async def post_node_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    avail = {"drain": "drain", "activate": "active"}.get(action)
    if avail is None:
        return _error(404, f"no node action {action!r}")
    return web.json_response(await _m(request).set_availability(request.match_info["name"], avail))


async def get_services(request: web.Request) -> web.Response:
    return web.json_response(_m(request).services_view())


async def post_services(request: web.Request) -> web.Response:
    spec = from_wire(ServiceSpec, await _body(request))
    out = await _m(request).put_service(spec, create_only=_flag(request, "create"))
    return web.json_response(out, status=201 if out.get("created") else 200)


async def post_stack(request: web.Request) -> web.Response:
    """Apply a whole stack in one transaction (or, with ``dry_run``, only plan it)."""
    b = await _body(request)
    if not isinstance(b, dict) or not isinstance(b.get("services"), list):
        raise UsageError('expected {"services": [SPEC, ...], "prune": bool, "dry_run": bool}')
    specs = []
    for i, raw in enumerate(b["services"]):
        try:
            specs.append(from_wire(ServiceSpec, raw))
        except ProtocolError as exc:
            raise UsageError(f"services[{i}]: {exc}") from exc
    warnings = []
    for w in b.get("warnings") or ():   # the loader's, shown in the plan as the file had them
        if isinstance(w, dict):
            warnings.append(StackWarning(str(w.get("location", "")), str(w.get("message", "")),
                                         str(w.get("key", ""))))
    values = []
    for i, v in enumerate(b.get("secrets") or ()):   # the stack file's secrets and configs
        if not isinstance(v, dict) or v.get("kind") not in KINDS or not isinstance(v.get("name"), str):
            raise UsageError(f'secrets[{i}]: expected {{"kind": "secret"|"config", "name", "data"}}')
        values.append((v["kind"], v["name"], decode_data(v["kind"], v["name"], v.get("data"))))
    certs = []
    for i, c in enumerate(b.get("certificates") or ()):   # tls: {cert, key} pairs of the file
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in ("name", "cert", "key")):
            raise UsageError(f'certificates[{i}]: expected {{"name", "cert", "key"}} (PEM text)')
        certs.append((c["name"], c["cert"], c["key"]))
    skipped = []
    for item in b.get("skipped") or ():  # [name, [profile, ...]]: services whose profiles are off
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], list):
            skipped.append((str(item[0]), tuple(str(p) for p in item[1])))
    out = await _m(request).apply_stack(request.match_info["name"], specs, bool(b.get("prune")),
                                        bool(b.get("dry_run")), str(b.get("file") or ""),
                                        tuple(warnings), tuple(values), tuple(certs),
                                        tuple(skipped))
    return web.json_response(out)


# --- the edge (certbook.py, edgepush.py, acme.py): certificates in, never a key out ---------------

async def get_certs(request: web.Request) -> web.Response:
    """Every stored certificate, and every ACME host with the state of its order."""
    m = _m(request)
    rows = m.certbook.rows()
    states = m.acme.host_rows()
    for r in rows:
        if r["source"] == "acme" and r["name"] in states:
            r.update(states.pop(r["name"]))
        else:
            r.setdefault("status", "valid" if r["days_left"] > 0 else "expired")
    for host, st in sorted(states.items()):      # ordered, not issued yet
        rows.append({"name": host, "source": "acme", "hosts": [host], "not_after": None,
                     "days_left": None, "issuer": "", "services": m.certbook.users("acme", host),
                     **st})
    return web.json_response(rows)


async def put_cert(request: web.Request) -> web.Response:
    b = await _body(request)
    if not isinstance(b, dict) or not isinstance(b.get("cert"), str) or not isinstance(b.get("key"), str):
        raise UsageError('expected {"cert": PEM, "key": PEM}')
    return web.json_response(await _m(request).certbook.put_manual(request.match_info["name"],
                                                                    b["cert"], b["key"]))


async def delete_cert(request: web.Request) -> web.Response:
    await _m(request).certbook.remove(request.match_info["name"])
    return web.json_response({"removed": request.match_info["name"]})


async def post_cert_renew(request: web.Request) -> web.Response:
    _m(request).acme.force(request.match_info["name"])
    return web.json_response({"renewing": request.match_info["name"]})


async def get_edge(request: web.Request) -> web.Response:
    m = _m(request)
    u = m.edge.update
    return web.json_response({**m.edge.settings.view(), "version": u.version if u else 0,
                              "certs": [c.name for c in u.certs] if u else [],
                              "error": m.edge.error})


async def patch_edge(request: web.Request) -> web.Response:
    b = await _body(request)
    if not isinstance(b, dict):
        raise UsageError("expected a mapping of edge settings")
    return web.json_response(await _m(request).edge.set_settings(b))


# --- secrets and configs (master/secrets.py): metadata out, values only in ---------------------

def _kind(request: web.Request) -> str:
    return request.match_info["kind"][:-1]       # "secrets" -> "secret"


async def get_secrets(request: web.Request) -> web.Response:
    return web.json_response(_m(request).secretbook.rows(_kind(request)))


async def get_secret(request: web.Request) -> web.Response:
    return web.json_response(_m(request).secretbook.row(_kind(request), request.match_info["name"]))


async def post_secrets(request: web.Request) -> web.Response:
    kind, b = _kind(request), await _body(request)
    if not isinstance(b, dict) or not isinstance(b.get("name"), str):
        raise UsageError(f'expected {{"name": NAME, "data": BASE64}} for a {kind}')
    labels = b.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in labels.items()):
        raise UsageError("labels must map strings to strings")
    data = decode_data(kind, b["name"], b.get("data"))
    out = await _m(request).secretbook.create(kind, b["name"], data, labels)
    return web.json_response(out, status=201)


async def post_secret_rotate(request: web.Request) -> web.Response:
    kind, name, b = _kind(request), request.match_info["name"], await _body(request)
    if not isinstance(b, dict):
        raise UsageError('expected {"data": BASE64}')
    data = decode_data(kind, name, b.get("data"))
    return web.json_response(await _m(request).secretbook.rotate(kind, name, data))


async def delete_secret(request: web.Request) -> web.Response:
    return web.json_response(await _m(request).secretbook.remove(_kind(request),
                                                                 request.match_info["name"]))


async def get_service(request: web.Request) -> web.Response:
    return web.json_response(_m(request).service_view(request.match_info["name"]))


async def patch_service(request: web.Request) -> web.Response:
    b = await _body(request)
    if not isinstance(b, dict):
        raise UsageError("expected a JSON object of spec fields")
    return web.json_response(await _m(request).patch_service(request.match_info["name"], b))


async def delete_service(request: web.Request) -> web.Response:
    return web.json_response(await _m(request).delete_service(request.match_info["name"]))


async def get_revisions(request: web.Request) -> web.Response:
    m = _m(request)
    m.service_view(request.match_info["name"])     # 404 for an unknown service
    revs = await asyncio.to_thread(m.store.revisions, request.match_info["name"])
    return web.json_response([{"revision": r, "created_at": c, "spec": to_wire(s)} for r, s, c in revs])


async def post_rollback(request: web.Request) -> web.Response:
    b = await _body(request) if request.can_read_body else {}
    to = b.get("to") if isinstance(b, dict) else None
    if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
        raise UsageError('expected {"to": REVISION} with an integer revision')
    return web.json_response(await _m(request).rollback(request.match_info["name"], to))


async def get_tasks(request: web.Request) -> web.Response:
    body = _m(request).tasks_body(request.query.get("service") or None, _flag(request, "all"))
    return web.Response(body=body, content_type="application/json")


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(_m(request).status_view())


async def post_rebalance(request: web.Request) -> web.Response:
    return web.json_response(await _m(request).rebalance())


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(await _m(request).set_config())


async def patch_config(request: web.Request) -> web.Response:
    b = await _body(request)
    if not isinstance(b, dict) or not isinstance(b.get("auto_rebalance", False), bool):
        raise UsageError('expected {"auto_rebalance": true|false}')
    return web.json_response(await _m(request).set_config(b.get("auto_rebalance")))


async def get_events(request: web.Request) -> web.Response:
    try:
        limit, since = int(request.query.get("limit", 100)), int(request.query.get("since", 0))
    except ValueError as exc:
        raise UsageError("limit and since are integers") from exc
    return web.json_response(await _m(request).events_view(limit, since))


async def get_metrics(request: web.Request) -> web.Response:
    ingress = getattr(_m(request), "ingress", None)
    if hasattr(ingress, "refresh"):
        await ingress.refresh()     # the LB worker's fresh figures, 0.5 s at most
    return web.Response(text=metrics.render(_m(request)), content_type="text/plain",
                        headers={"X-Prometheus-Format": "0.0.4"})


async def get_overview(request: web.Request) -> web.StreamResponse:
    if _flag(request, "stream"):
        return await dash.stream(request, _m(request))
    return web.json_response(await dash.snapshot(_m(request)), dumps=dash._dumps)


async def get_history(request: web.Request) -> web.Response:
    return web.json_response(history_doc(_m(request), request.query))


async def get_dashboard(request: web.Request) -> web.Response:
    await dash.ensure_token(_m(request))
    return web.json_response(dash.dashboard_info(_m(request)))


async def get_ha(request: web.Request) -> web.Response:
    """The HA view (answered by the HA front on every master); a single master says so."""
    return web.json_response({"ha": False})


def make_app(master: Any, middlewares: Any = ()) -> web.Application:
    """The API; ``middlewares`` run after the role guard (the HA front: ``master/ha_runner.py``)."""
    # Stacks and secrets carry values (up to 500 KiB each, base64): more than aiohttp's 1 MiB.
    app = web.Application(middlewares=[guard, *middlewares], client_max_size=64 * 1024 * 1024)
    app[MASTER_KEY] = master
    app.add_routes([
        web.get("/v1/nodes", get_nodes), web.post("/v1/nodes", post_nodes),
        web.delete("/v1/nodes/{name}", delete_node),
        web.get("/v1/revocations", get_revocations), web.put("/v1/revocations", put_revocations),
        web.post("/v1/nodes/{name}/{action}", post_node_action),
        web.get("/v1/services", get_services), web.post("/v1/services", post_services),
        web.post("/v1/stacks/{name}", post_stack),
        web.get("/v1/services/{name}", get_service), web.patch("/v1/services/{name}", patch_service),
        web.delete("/v1/services/{name}", delete_service),
        web.get("/v1/services/{name}/revisions", get_revisions),
        web.post("/v1/services/{name}/rollback", post_rollback),
        web.get("/v1/tasks", get_tasks), web.get("/v1/status", get_status),
        web.post("/v1/rebalance", post_rebalance),
        web.get("/v1/config", get_config), web.patch("/v1/config", patch_config),
        web.get("/v1/events", get_events),
        web.get("/metrics", get_metrics), web.get("/v1/overview", get_overview),
        web.get("/v1/dashboard", get_dashboard), web.get("/v1/history", get_history),
        web.get("/v1/ha", get_ha),
        web.get("/v1/certs", get_certs), web.put("/v1/certs/{name}", put_cert),
        web.delete("/v1/certs/{name}", delete_cert),
        web.post("/v1/certs/{name}/renew", post_cert_renew),
        web.get("/v1/edge", get_edge), web.patch("/v1/edge", patch_edge),
    ])
    for kind in ("secrets", "configs"):
        app.add_routes([
            web.get(f"/v1/{{kind:{kind}}}", get_secrets), web.post(f"/v1/{{kind:{kind}}}", post_secrets),
            web.get(f"/v1/{{kind:{kind}}}/{{name}}", get_secret),
            web.delete(f"/v1/{{kind:{kind}}}/{{name}}", delete_secret),
            web.post(f"/v1/{{kind:{kind}}}/{{name}}/rotate", post_secret_rotate),
        ])
    return app


async def serve(master: Any, host: str, port: int, ssl_ctx: Optional[ssl.SSLContext],
                middlewares: Any = ()) -> web.AppRunner:
    """Start the API; returns the runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(make_app(master, middlewares), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise APIError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner
