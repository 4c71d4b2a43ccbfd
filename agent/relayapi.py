"""The agent's relay of signed route updates: ``PUT /v1/routes/relay``.

Callers with role ``master`` or ``agent`` (the only agent-callable route, see
``api.authorize``). The body is an envelope (``shipped/relayenvelope.py``): the
update is applied here only if the master signed it, with the same rules as
``PUT /v1/routes`` (``routestate.offer``: a delta applies only on its exact
base), and forwarded to this node's share of its range of names
(``shipped/relaytree.py``), taken from this node's gossip view. The answer
says which names hold the update now and which refused it, so the result flows
back up to the master, which pushes directly to every node not acknowledged.

A forged or garbled envelope (bad signature, a signer that is not a valid,
unrevoked master of this cluster, a whole table, malformed fields) is refused
with 4xx, counted (``relay_refused``, in ``/metrics``), and changes and forwards
nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Optional

from aiohttp import web

from swarmlet.shipped.exceptions import ProtocolError, StaleRoutes
from swarmlet.shipped.models import RoutesUpdate, from_wire
from swarmlet.shipped.relayenvelope import MAX_UPDATE, RelayRefused
from swarmlet.shipped.relaytree import PATH, read_capped, relay, view_of

log = logging.getLogger("swarmlet.agent.relay")
AGENT_CALLABLE = {("PUT", PATH)}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def refuse(agent: Any, status: int, message: str) -> web.Response:
    agent.counters["relay_refused"] = agent.counters.get("relay_refused", 0) + 1
    log.warning("relayed routes refused: %s", message)
    return _error(status, message)


async def apply_here(agent: Any, wire: Dict[str, Any]) -> Optional[str]:
    """None once this node holds the update (its JSON, signed by the master); else why not
    (e.g. its base is not our table)."""
    try:
        update = from_wire(RoutesUpdate, dict(wire, node=agent.config.name))
    except (ValueError, ProtocolError) as exc:
        return f"400: bad routes update: {exc}"
    try:
        await agent.set_routes(update)
    except StaleRoutes as exc:
        return f"409: {exc}"
    return None


def routes(agent_of: Callable[[web.Request], Any]) -> List[web.RouteDef]:
    async def put_relay(request: web.Request) -> web.Response:
        agent = agent_of(request)
        if agent.relay_certs is None:
            return refuse(agent, 503, "this node cannot verify relayed routes (no cluster CA)")
        if (request.content_length or 0) > 2 * MAX_UPDATE:
            return refuse(agent, 413, "relay envelope too large")
        try:
            # the whole body, counted as it arrives: one read() returns what has arrived,
            # and an envelope that came in several segments was cut short (400)
            raw = await read_capped(request.content, 2 * MAX_UPDATE)
            if raw is None:
                return refuse(agent, 413, "relay envelope too large")
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return refuse(agent, 400, f"bad relay envelope: {exc}")
        try:
            answer = await relay(body, agent.config.name, agent.relay_certs,
                                 view_of(agent.members.members()),
                                 lambda u: apply_here(agent, u), agent.forwarder, agent.counters)
        except RelayRefused as exc:
            return refuse(agent, exc.status, str(exc))
        return web.json_response(answer)

    return [web.put(PATH, put_relay)]
