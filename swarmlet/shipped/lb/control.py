"""The control channel between a node's agent and its ingress worker: the wire.

One message per line, JSON, at most ``MAX_LINE`` bytes, over a Unix socket
pair the agent makes (the worker gets its end as an inherited fd, so nothing
is on the filesystem and the channel dies with either side). Every message
carries ``"v": PROTOCOL``; a side that sees another version stops.

Agent → worker:

- ``config``: ``bind``, ``sticky_key`` (base64; never on the command line),
  ``limits`` (LBConfig's, e.g. ``max_connections``), ``status_interval``,
  ``reuse_port`` (one of several workers binding the same ports), ``edge``
  (``Edge``'s keywords: ``http_port``, ``https_port``, ``handshake``);
- ``edge``: ``version``, ``update`` (``to_wire(EdgeUpdate)``: edge ports, default
  service, the certificates with their keys); the latest wins;
- ``challenges``: ``version``, ``tokens`` (ACME http-01 token -> key authorization);
- ``routes``: ``version`` (the assignment's), ``routes`` (``to_wire(Route)``),
  ``graceful`` (task ids that drain rather than die); idempotent, the latest wins;
- ``report``: send a ``status`` now (a metrics scrape wants fresh figures);
- ``stop``: drain and exit.

Worker → agent:

- ``hello``: ``pid``; the agent answers with ``config`` and its latest routes;
- ``applied``: ``version``, ``errors`` (port → why it could not be bound);
- ``edge_applied``: ``version``, ``errors``; ``challenges_applied``: ``version``
  (after it, this worker answers the tokens: the agent acknowledges a token only
  once every worker has);
- ``status`` every ``status_interval``: ``snapshot`` (``Ingress.snapshot()``)
  and ``metrics`` (Prometheus text), which the agent serves from its cache.

The agent stays the single source of the routes: a worker holds nothing it
was not sent, and a new worker gets everything again from ``hello``.
Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from ..exceptions import ProtocolError

PROTOCOL = 1
MAX_LINE = 16 * 1024 * 1024


def encode(op: str, **fields: Any) -> bytes:
    return json.dumps({"v": PROTOCOL, "op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Dict[str, Any]:
    """One message; raises ``ProtocolError`` for garbage or another version."""
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"ingress control: not JSON ({exc})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolError("ingress control: a message needs an op")
    if msg.get("v") != PROTOCOL:
        raise ProtocolError(f"ingress control: protocol {msg.get('v')!r}, this side speaks "
                            f"{PROTOCOL}")
    return msg
