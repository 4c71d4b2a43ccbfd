"""The web dashboard: a listener of its own, static files from the package, live via SSE.

Why its own port (the API port + 1 by default): the API's TLS handshake
*requires* a client certificate, which a browser rarely has. This listener
uses the master's certificate with client certificates *optional*: a
request passes with the cluster's ``cli`` (or ``master``) certificate, or with
the dashboard token that ``swarmlet dashboard`` prints (``/?token=…`` sets an
HttpOnly cookie and redirects to ``/``; ``Authorization: Bearer`` also works).
The token is random, kept in the store's meta (so it survives a restart) and
compared in constant time. Everything else gets 401.

Routes: ``/`` (index.html), ``/static/{file}`` (app.js, style.css from the
package: no CDN, no build step), ``/api/overview`` (JSON, see ``overview``),
``/api/stream`` (Server-Sent Events: one ``overview`` event per change),
``/api/history`` (the last hour for the charts, ``history.History.doc``). After
each frame a stream waits ``FRAME_BUDGET`` times what the frame cost to build, so
a big, busy cluster gets fewer frames instead of a master busy drawing them. The
master API serves the same stream at ``/v1/overview?stream=1`` for ``swarmlet
top``. A stream waits on ``MasterObs.wait_change``, so a node's death reaches
the page as soon as the master knows it; it also refreshes every
``refresh`` seconds for utilization figures.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional

from aiohttp import web

from ...shipped.exceptions import APIError, UsageError
from ...shipped.tlsutil import peer_role, server_context
from ..store import Batch
from .overview import overview

log = logging.getLogger("swarmlet.master")
STATIC = Path(__file__).parent / "static"
MASTER_KEY: "web.AppKey[Any]" = web.AppKey("dash_master", object)
TOKEN_KEY: "web.AppKey[str]" = web.AppKey("dash_token", str)
COOKIE = "swarmlet_dashboard"
_FILES = {"app.js": "application/javascript", "charts.js": "application/javascript",
          "style.css": "text/css", "index.html": "text/html"}
FRAME_BUDGET = 9.0   # a stream waits 9x what its last frame cost: at most 10 % of a core


async def ensure_token(master: Any) -> str:
    """The dashboard token: from the store's meta, made once."""
    token = getattr(master, "dashboard_token", None)
    if token:
        return token
    token = master.meta.get("dashboard_token")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        await master.write(Batch.of(meta={"dashboard_token": token}))
    master.dashboard_token = token
    return token


async def snapshot(master: Any, events: int = 15) -> dict:
    evs = await master.events_view(events)
    return overview(master, evs, time.time())


async def stream(request: web.Request, master: Any, refresh: float = 2.0) -> web.StreamResponse:
    """Server-Sent Events: an ``overview`` event whenever the picture changes."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    seen, last = -1, ""
    try:
        while True:
            seen = master.obs.version
            t0 = time.perf_counter()
            doc = await snapshot(master)
            same = json.dumps({**doc, "ts": 0}, sort_keys=True, default=str)
            if same != last:
                body = json.dumps(doc, sort_keys=True, default=str)
                await resp.write(f"event: overview\ndata: {body}\n\n".encode())
                last = same
            else:
                await resp.write(b": keep-alive\n\n")
            # A frame of 1,000 nodes costs tens of milliseconds: at most a tenth of the
            # master's time goes to each open stream, however often the cluster changes.
            await asyncio.sleep(min(refresh, FRAME_BUDGET * (time.perf_counter() - t0)))
            await master.obs.wait_change(seen, refresh)
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        pass
    return resp


def _authorized(request: web.Request, token: str) -> bool:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if peer_role(ssl_object) in ("cli", "master"):
        return True
    given = request.cookies.get(COOKIE) or request.query.get("token") or ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def _guard(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if not _authorized(request, token):
        return web.Response(status=401, text="swarmlet dashboard: run 'swarmlet dashboard' for "
                                             "the address with its token\n")
    if "token" in request.query:   # set the cookie, drop the token from the address bar
        resp = web.HTTPFound("/")
        resp.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="Strict")
        raise resp
    return await handler(request)


async def _index(request: web.Request) -> web.Response:
    return _file("index.html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:   # a fixed list: no path traversal to think about
        raise web.HTTPNotFound()
    return _file(name)


def _file(name: str) -> web.Response:
    return web.Response(body=(STATIC / name).read_bytes(), content_type=_FILES[name],
                        headers={"Cache-Control": "no-cache"})


async def _overview(request: web.Request) -> web.Response:
    return web.json_response(await snapshot(request.app[MASTER_KEY]), dumps=_dumps)


async def _stream(request: web.Request) -> web.StreamResponse:
    return await stream(request, request.app[MASTER_KEY])


def history_doc(master: Any, query: Any) -> dict:
    """``History.doc`` from query parameters: ``services=a,b`` (default: the busiest),
    ``nodes=x,y`` (per node series; the aggregates always come), ``top=N``."""
    def names(key: str) -> List[str]:
        return [n for n in str(query.get(key, "")).split(",") if n][:50]
    try:
        top = max(1, min(50, int(query.get("top", 6))))
    except ValueError as exc:
        raise UsageError("top is an integer") from exc
    services = names("services") if "services" in query else None
    return master.history.doc(services=services, nodes=names("nodes"), top=top)


async def _history(request: web.Request) -> web.Response:
    try:
        return web.json_response(history_doc(request.app[MASTER_KEY], request.query))
    except UsageError as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def make_app(master: Any, token: str) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[MASTER_KEY] = master
    app[TOKEN_KEY] = token
    app.add_routes([web.get("/", _index), web.get("/static/{name}", _static),
                    web.get("/api/overview", _overview), web.get("/api/stream", _stream),
                    web.get("/api/history", _history)])
    return app


async def start_dashboard(master: Any, cluster: Any, host: str, port: int,
                          advertise: Optional[str] = None) -> Optional[web.AppRunner]:
    """Serve the dashboard; sets ``master.dashboard_url``. A port in use is logged, not fatal."""
    token = await ensure_token(master)
    # The master's certificate; a client certificate of the cluster CA is optional (token login),
    # and a revoked one is refused like everywhere else.
    certs = getattr(master, "certs", None)
    ctx = server_context(str(cluster.path("master.crt")), str(cluster.path("master.key")),
                         str(cluster.path("ca.crt")), require_client_cert=False,
                         denylist=certs.denylist if certs is not None else None)
    contexts = getattr(master, "tls_contexts", None)
    if contexts is not None:
        contexts.append(ctx)   # reloaded when the master certificate is renewed
    runner = web.AppRunner(make_app(master, token), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        log.warning("dashboard not served: cannot listen on %s:%d: %s", host, port, exc.strerror)
        master.dashboard_url = None
        return None
    bound = runner.addresses[0][1] if port == 0 else port
    shown = advertise or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    master.dashboard_url = f"https://{shown}:{bound}/"
    return runner


def dashboard_info(master: Any) -> dict:
    url = getattr(master, "dashboard_url", None)
    token = getattr(master, "dashboard_token", None)
    if not url or not token:
        raise APIError("the dashboard is not being served (see the master's log)", status=503)
    return {"url": url, "token": token, "login": f"{url}?token={token}"}
