"""The agent's edge endpoints: ``PUT/GET /v1/edge`` and ``PUT /v1/challenges``.

- ``PUT /v1/edge`` (master only) body ``to_wire(EdgeUpdate)``: the edge's ports,
  default service and certificates with their keys → ``{"version", "applied"}``;
  an older one → 409 (``StaleEdge``). Stored 0600 (``edgestate.py``), then fed
  to every ingress worker.
- ``GET /v1/edge`` (master or cli): what the edge serves, never a key: the
  stored version, ports, certificates (name, hosts, expiry, fingerprint) and the
  workers' view (listeners with their handshake counters, certificates that did
  not load, how many tokens are answered).
- ``PUT /v1/challenges`` (master only) body ``to_wire(ChallengesUpdate)`` → 200
  ``{"version", "answered": true}`` once every ingress worker answers the
  tokens, 503 if they do not within the ingress's ack timeout (the master then
  holds the challenge back or counts this node as not ready).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from aiohttp import web

from swarmlet.shipped.exceptions import ProtocolError, StaleEdge
from swarmlet.shipped.models import ChallengesUpdate, EdgeUpdate, from_wire

MASTER_ONLY = {("PUT", "/v1/edge"), ("PUT", "/v1/challenges")}


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def describe(agent: Any) -> Dict[str, Any]:
    cur = agent.edge.current
    ingress = agent.ingress
    live = ingress.edge_status() if ingress is not None and hasattr(ingress, "edge_status") else {}
    now = time.time()
    certs = [] if cur is None else [
        {"name": c.name, "hosts": list(c.hosts), "not_after": c.not_after,
         "days_left": round((c.not_after - now) / 86400, 2) if c.not_after else None,
         "fingerprint": c.fingerprint} for c in cur.certs]
    return {"version": cur.version if cur else 0, "epoch": cur.epoch if cur else 0,
            "http_port": cur.http_port if cur else None,
            "https_port": cur.https_port if cur else None,
            "default_service": cur.default_service if cur else "",
            "certs": certs, "tokens": len(agent.challenges.tokens), "ingress": live}


def routes(agent_of: Callable[[web.Request], Any]) -> List[web.RouteDef]:

    async def put_edge(request: web.Request) -> web.Response:
        agent = agent_of(request)
        try:
            update = from_wire(EdgeUpdate, await request.json())
        except (ValueError, ProtocolError) as exc:
            return _error(400, f"bad edge update: {exc}")
        try:
            applied = await agent.set_edge(update)
        except StaleEdge as exc:
            return _error(409, str(exc), current=exc.current, epoch=exc.epoch, term=exc.term)
        return web.json_response({"version": update.version, "applied": applied})

    async def get_edge(request: web.Request) -> web.Response:
        return web.json_response(describe(agent_of(request)))

    async def put_challenges(request: web.Request) -> web.Response:
        agent = agent_of(request)
        try:
            update = from_wire(ChallengesUpdate, await request.json())
        except (ValueError, ProtocolError) as exc:
            return _error(400, f"bad challenges update: {exc}")
        try:
            answered = await agent.set_challenges(update)
        except StaleEdge as exc:
            return _error(409, str(exc), current=exc.current, epoch=exc.epoch, term=exc.term)
        if not answered:
            return _error(503, "the ingress did not take the tokens in time", version=update.version)
        return web.json_response({"version": update.version, "answered": True})

    return [web.put("/v1/edge", put_edge), web.get("/v1/edge", get_edge),
            web.put("/v1/challenges", put_challenges)]
