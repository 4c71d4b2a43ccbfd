"""Who relays a signed route update to whom, and one relay hop (``PUT /v1/routes/relay``).

The tree is never listed: the master splits the sorted names of the nodes it
means to reach into ``k`` contiguous ranges and sends each range's first node
(its seed) the envelope with the range's bounds ``lo``..``hi`` (``seeds``). A
node that receives a range applies the update, then splits the names of its
range it knows from its own gossip view (alive members with an API address,
itself left out) into ``fanout`` contiguous ranges and forwards each to that
range's first node (``children``). Each child's range lies strictly inside its
parent's and leaves the parent out, so the recursion ends (``hops`` bounds it
again); at 1,000 nodes and a fanout of 8 it is four hops deep. A node missing
from a forwarder's view is simply not reached.

Answers flow back up: each hop answers with the names that hold the update now
(``acked``: applied, or held already) and those that refused it (``refused``,
with the reason: e.g. a 409, the delta's base is not the table it holds). The
master pushes directly to every node it meant to reach that is not in
``acked`` (``master/relaypush.py``), so correctness never depends on the relay.

Each hop's budget (seconds) shrinks on the way down, so a parent answers
before its own caller gives up on it: a child that does not answer in time
counts as not reached. ``relay`` is the hop both the agent and the simulated
agents run; ``Forwarder`` sends over mutual TLS with the node's own
certificate (``tlsutil``: the child must present role ``agent`` and its name).
Shipped to agents: Python 3.9, aiohttp (as the agent API).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import ssl
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import tlsutil
from .relayenvelope import MasterCerts, RelayRefused

PATH = "/v1/routes/relay"
MAX_HOPS = 16
MAX_FANOUT = 64
MAX_BUDGET = 30.0
MAX_ANSWER = 4 << 20        # bytes of a child's answer read at most
MARGIN = 0.15               # seconds a hop keeps for itself: apply, answer, the way back

Target = Tuple[str, str, int]     # (name, address, API port)


def chunks(n: int, k: int) -> List[Tuple[int, int]]:
    """``range(n)`` in at most ``k`` contiguous, non-empty [start, end) pieces, sizes within one."""
    k = max(1, min(k, n))
    if n <= 0:
        return []
    size, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def seeds(names: Sequence[str], k: int) -> List[Tuple[str, str, str]]:
    """(seed, lo, hi) for ``k`` contiguous ranges of the sorted ``names``: the seed is each
    range's first name."""
    s = sorted(set(names))
    return [(s[a], s[a], s[b - 1]) for a, b in chunks(len(s), k)]


def children(view: Mapping[str, Tuple[str, int]], me: str, lo: str, hi: str,
             fanout: int) -> List[Tuple[Target, str, str]]:
    """What ``me`` forwards: ((name, address, port), lo, hi) for each of up to ``fanout``
    contiguous ranges of the names in [lo, hi] it knows (``view``: name -> (address, port)),
    itself left out. Each range's first name receives it. Pure."""
    order = getattr(view, "order", None)      # a View keeps its names sorted: bisect
    if order is not None:
        inside = [n for n in order[bisect.bisect_left(order, lo):bisect.bisect_right(order, hi)]
                  if n != me]
    else:
        inside = sorted(n for n in view if lo <= n <= hi and n != me)
    out = []
    for a, b in chunks(len(inside), fanout):
        first = inside[a]
        addr, port = view[first]
        out.append(((first, addr, port), first, inside[b - 1]))
    return out


class View(dict):
    """name -> (API address, port), with the names sorted (``order``) for ``children``."""

    order: List[str] = []


def view_of(members: Sequence[Mapping[str, Any]]) -> View:
    """name -> (API address, port) of the alive members whose meta says where their API is."""
    out = View()
    for m in members:
        if m.get("state") != "alive":
            continue
        meta = m.get("meta") or {}
        addr, port = meta.get("address") or m.get("address"), meta.get("api_port")
        name = m.get("name")
        if isinstance(name, str) and isinstance(addr, str) and isinstance(port, int) \
                and not isinstance(port, bool) and 0 < port < 65536:
            out[name] = (addr, port)
    out.order = sorted(out)
    return out


def relay_fields(body: Mapping[str, Any]) -> Tuple[str, str, int, float, int]:
    """(lo, hi, fanout, budget, hops) of an envelope; ``RelayRefused`` (400) if malformed."""
    lo, hi, fanout = body.get("lo"), body.get("hi"), body.get("fanout", 8)
    budget, hops = body.get("budget", 2.0), body.get("hops", 0)
    if not (isinstance(lo, str) and isinstance(hi, str) and 0 < len(lo) <= 253 and 0 < len(hi) <= 253):
        raise RelayRefused("lo and hi are node names", 400)
    if not (isinstance(fanout, int) and not isinstance(fanout, bool) and 1 <= fanout <= MAX_FANOUT):
        raise RelayRefused(f"fanout is 1 to {MAX_FANOUT}", 400)
    if not (isinstance(budget, (int, float)) and not isinstance(budget, bool)
            and 0 <= budget <= MAX_BUDGET):
        raise RelayRefused(f"budget is 0 to {MAX_BUDGET:g} seconds", 400)
    if not (isinstance(hops, int) and not isinstance(hops, bool) and 0 <= hops <= MAX_HOPS):
        raise RelayRefused(f"hops is 0 to {MAX_HOPS}", 400)
    return lo, hi, fanout, float(budget), hops


async def read_capped(content: Any, limit: int) -> Optional[bytes]:
    """The whole body, or None past ``limit`` bytes (as they arrive). One ``read(limit)``
    returns what has arrived so far: an answer in several segments was cut short, so its
    JSON did not parse, and the child's whole range counted as not reached (at 1,000 nodes a
    third of every wave then went out again directly); and the unread rest cost the pooled
    connection, so every wave opened new TLS connections."""
    parts: List[bytes] = []
    size = 0
    while True:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


class Forwarder:
    """Relay requests to other agents over mutual TLS, pooled; ``contexts(target)`` gives the
    client context (the node's certificate; the child's expected name and address)."""

    def __init__(self, contexts: Callable[[Target], ssl.SSLContext], limit: int = 64,
                 session: Any = None) -> None:
        self._contexts = contexts
        self._limit = limit
        self._session: Any = session      # shared with other forwarders (the simulated agents)

    @classmethod
    def with_identity(cls, cert: str, key: str, ca: str, denylist: Optional[tlsutil.Denylist] = None,
                      max_contexts: int = 64) -> "Forwarder":
        """A forwarder with this node's certificate; a child must present role ``agent``,
        its name and its address (``tlsutil.Expect``). ``reload()`` after a renewal."""
        cache: "OrderedDict[Target, ssl.SSLContext]" = OrderedDict()

        def ctx(t: Target) -> ssl.SSLContext:
            c = cache.get(t)
            if c is None:
                c = cache[t] = tlsutil.client_context(
                    cert, key, ca, expect=tlsutil.Expect(role="agent", name=t[0], address=t[1]),
                    denylist=denylist)
                while len(cache) > max_contexts:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(t)
            return c
        f = cls(ctx)
        f._cache = cache     # type: ignore[attr-defined]
        return f

    def reload(self) -> None:
        getattr(self, "_cache", {}).clear()

    def _s(self) -> Any:
        import aiohttp
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=2, keepalive_timeout=60.0))
        return self._session

    async def send(self, target: Target, body: bytes, timeout: float) -> Tuple[int, Any]:
        """(HTTP status, decoded answer or None); raises ``OSError``/``asyncio.TimeoutError``
        and aiohttp's errors when the child cannot be reached. (Recent aiohttp sends a PUT once
        more when a pooled connection was closed as it went out: a hop is idempotent.)"""
        import aiohttp
        name, addr, port = target
        host = f"[{addr}]" if ":" in addr else addr
        # A new connection's TCP and TLS handshakes: half the hop's time, at least 1 s. A
        # child's loop busy with many handshakes at once (a cold wave) takes more than 1 s.
        connect = min(timeout, max(1.0, timeout / 2))
        async with self._s().put(f"https://{host}:{port}{PATH}", data=body, ssl=self._contexts(target),
                                 headers={"Content-Type": "application/json"},
                                 timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect)) as r:
            raw = await read_capped(r.content, MAX_ANSWER)
        try:
            return r.status, json.loads(raw) if raw is not None and raw else None
        except ValueError:
            return r.status, None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# The update's decoded JSON (without its node) -> None: this node holds it now; else why not.
Apply = Callable[[Dict[str, Any]], Awaitable[Optional[str]]]


def _names(value: Any, limit: int = 100_000) -> List[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:limit] if isinstance(v, str) and len(v) <= 253]


async def relay(body: Mapping[str, Any], me: str, certs: MasterCerts,
                view: Mapping[str, Tuple[str, int]], apply: Apply, forwarder: Forwarder,
                counters: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """One hop: verify, forward to this node's share of its range, apply here; the answer
    ``{"version", "acked": [names], "refused": {name: reason}}``. ``RelayRefused`` (nothing
    applied, nothing forwarded) for an envelope that is not the master's."""
    lo, hi, fanout, budget, hops = relay_fields(body)
    update, _ = certs.verify(body)
    kids = children(view, me, lo, hi, fanout) if hops < MAX_HOPS else []
    left = budget - MARGIN - 0.1 * budget
    sends = []
    if kids and left > 0.05:
        # the signed part is encoded once for every child (a deploy's delta can be 100 KB)
        head = json.dumps({k: body[k] for k in ("update", "sig", "signer", "cert") if k in body},
                          separators=(",", ":")).encode()[:-1]
        for target, clo, chi in kids:
            tail = json.dumps({"lo": clo, "hi": chi, "fanout": fanout, "budget": round(left, 3),
                               "hops": hops + 1}, separators=(",", ":")).encode()
            sends.append((target, forwarder.send(target, head + b"," + tail[1:], left + MARGIN / 2)))
    if counters is not None:
        counters["relay_received"] = counters.get("relay_received", 0) + 1
        counters["relay_forwarded"] = counters.get("relay_forwarded", 0) + len(sends)
    results = asyncio.gather(*(s for _, s in sends), return_exceptions=True)
    acked: List[str] = []
    refused: Dict[str, str] = {}
    try:
        why = await apply(update)
    except Exception as exc:  # the hop still answers for its children
        why = f"{type(exc).__name__}: {exc}"
    if why is None:
        acked.append(me)
    else:
        refused[me] = why[:200]
    for (target, _), got in zip(sends, await results):
        if isinstance(got, BaseException):
            refused[target[0]] = f"not reached: {type(got).__name__}"[:200]
            continue
        status, answer = got
        if status != 200 or not isinstance(answer, dict):
            reason = answer.get("error") if isinstance(answer, dict) else None
            refused[target[0]] = f"{status}: {reason or 'refused'}"[:200]
            continue
        acked += _names(answer.get("acked"))
        sub = answer.get("refused")
        if isinstance(sub, dict):
            for k, v in list(sub.items())[:100_000]:
                if isinstance(k, str) and len(k) <= 253:
                    refused[k] = str(v)[:200]
    return {"version": update["version"], "acked": acked, "refused": refused}
