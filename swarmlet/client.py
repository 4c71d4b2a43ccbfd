"""The one mutual-TLS client for the master and agent APIs (admin side: CLI, master, join, image push).

Every request names its ``Peer``: who must answer (role, name) and where
(address, port). The TLS context for a peer checks, inside the handshake,
that the server's certificate is of that role, has that name as its CN and
the address in its SANs, and is not revoked (``tlsutil.check_peer``); a node
answering with another node's certificate is refused before anything is sent.

Errors come out of one tree, translated here and nowhere else:

- ``Unreachable``: "cannot reach node-1 at 10.0.0.5:7443: cannot connect:
  Connection refused" (no answer, TLS failed, timed out); ``PeerRefused`` when
  the certificate is the wrong one or revoked;
- ``APIError``: the peer's own reason ("no service 'web'"), with the HTTP
  status in ``.status``; ``StaleAssignment`` for an agent's 409.

The request itself ("POST https://…/v1/services: 400") is kept in
``.request`` and printed by the CLI only under ``--debug``.

HA masters (``cluster.json`` lists them): ``call_master`` tries each in order
(a follower proxies to the leader), skips one that cannot be reached, and
retries for ``ELECTION_WAIT`` seconds an answer that says nothing was done
(503 with ``X-Swarmlet-Retry``) while a leader is elected. A follower's
``X-Swarmlet-Stale`` ("the view may be stale: …") goes to ``on_stale``, which
the CLI prints as a warning.

One ``aiohttp`` session per client, pooled per peer (a context per peer
identity, cached), so a poll loop reuses its TLS connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import sys
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import aiohttp

from . import cluster as clusterlib
from .shipped import tlsutil
from .shipped.exceptions import (APIError, PeerRefused, ProtocolError, StaleAssignment, StaleRoutes,
                                 Unreachable)
from .shipped.models import Assignment, RoutesUpdate, TaskStatus, from_wire, to_wire

MASTER, AGENT = "master", "agent"
ELECTION_WAIT = 8.0      # how long a master call keeps trying while HA masters elect a leader
LONG_POLL_SLACK = 10.0   # seconds a long poll's answer may come after its wait, at most
RETRY, STALE = "X-Swarmlet-Retry", "X-Swarmlet-Stale"


def keepalive_socket(addr_info: Any) -> socket.socket:
    """Sockets with TCP keepalives every second after 2 s idle, dead after 3 misses: a long
    poll held on a host that died silently is cut by the kernel in about 5 s (the master)."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):   # Linux; elsewhere the system defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


def _warn_stale(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


on_stale: Callable[[str], None] = _warn_stale   # an HA follower's "the view may be stale"


@dataclass(frozen=True)
class Peer:
    """Who must answer a request: ``role`` and ``name`` (CN; any if None) at ``address:port``."""

    role: str
    address: str
    port: int
    name: Optional[str] = None

    @property
    def base(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __str__(self) -> str:
        if self.role == MASTER:
            return f"the master at {self.base}"
        return f"{self.name or 'the agent'} at {self.address}:{self.port}"

    @property
    def expect(self) -> tlsutil.Expect:
        return tlsutil.Expect(role=self.role, name=self.name, address=self.address)


def agent_peer(name: str, address: str, port: int) -> Peer:
    return Peer(AGENT, address, int(port), name)


def master_at(url: str, default_port: int = clusterlib.MASTER_PORT) -> Peer:
    """The master whose API is at ``url`` (``https://HOST:PORT``)."""
    u = urlsplit(url)
    return Peer(MASTER, u.hostname or "127.0.0.1", u.port or default_port)


def master_peers(cluster: clusterlib.Cluster) -> List[Peer]:
    """Every master to try, in order: the HA masters of cluster.json, or the one on this host."""
    return [master_at(url, cluster.master_port) for url in cluster.master_urls()]


def master_peer(cluster: clusterlib.Cluster) -> Peer:
    return master_peers(cluster)[0]


def describe(exc: BaseException) -> str:
    """A short reason for a failed connection, without aiohttp's repr noise."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        err = exc.certificate_error
        msg = getattr(err, "verify_message", None) or (err.args[0] if err.args else str(err))
        if getattr(err, "verify_code", None):   # OpenSSL's own chain check failed
            return f"its TLS certificate is not from this cluster's CA ({msg})"
        return str(msg)
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed ({getattr(exc, 'os_error', exc)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return "cannot connect: " + (os.strerror(err.errno) if err.errno else str(err))
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection (our certificate refused?)"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def refused(exc: BaseException) -> bool:
    """Whether a failed connection was refused by the host (RST), not lost or timed out."""
    seen = 0
    e: Optional[BaseException] = exc
    while e is not None and seen < 8:
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(e, aiohttp.ClientConnectorError) and isinstance(e.os_error, ConnectionRefusedError):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _reason(status: int, text: str) -> str:
    try:
        data = json.loads(text)
        msg = data.get("error", text) if isinstance(data, dict) else text
    except ValueError:
        msg = text
    msg = str(msg).strip()[:300]
    return msg or f"HTTP {status}"


class Client:
    """Pooled mutual-TLS requests with a client certificate (``cli`` or ``master``)."""

    def __init__(self, cert: str, key: str, ca: str, denylist: Optional[tlsutil.Denylist] = None,
                 timeout: float = 5.0, limit: int = 256, limit_per_host: int = 4,
                 max_contexts: int = 4096, keepalive: bool = False,
                 idle_close: float = 15.0) -> None:
        self._files = (cert, key, ca)
        self.denylist = denylist
        self.timeout = timeout
        self._limit, self._per_host = limit, limit_per_host
        self._keepalive = keepalive
        self._idle_close = idle_close     # seconds a pooled connection may stay idle
        self._contexts: "OrderedDict[tlsutil.Expect, ssl.SSLContext]" = OrderedDict()
        self._max_contexts = max_contexts
        self._session: Optional[aiohttp.ClientSession] = None
        if denylist is not None:
            denylist.subscribe(lambda _d: self._drop_pool())

    @classmethod
    def for_cluster(cls, cluster: clusterlib.Cluster, role: str = "cli", **kw: Any) -> "Client":
        """A client with this admin host's ``role`` certificate and the cluster's denylist."""
        kw.setdefault("denylist", cluster.denylist())
        return cls(str(cluster.path(f"{role}.crt")), str(cluster.path(f"{role}.key")),
                   str(cluster.path("ca.crt")), **kw)

    @property
    def identity_files(self) -> Tuple[str, str, str]:
        """(certificate, key, CA) paths this client presents and trusts."""
        return self._files

    # --- plumbing -----------------------------------------------------------------

    def ssl_for(self, peer: Peer) -> ssl.SSLContext:
        """The context that accepts only ``peer`` (one per identity, least recently used dropped)."""
        key = peer.expect
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = tlsutil.client_context(*self._files, expect=key, denylist=self.denylist)
            self._contexts[key] = ctx
            while len(self._contexts) > self._max_contexts:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(key)
        return ctx

    def reload(self) -> None:
        """Our certificate file was renewed: new contexts, new connections."""
        self._contexts.clear()
        self._drop_pool()

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(2.0, self.timeout)),
                connector=aiohttp.TCPConnector(
                    limit=self._limit, limit_per_host=self._per_host,
                    keepalive_timeout=self._idle_close,
                    **({"socket_factory": keepalive_socket} if self._keepalive else {})))
        return self._session

    def _drop_pool(self) -> None:
        """A peer was revoked: no pooled connection verified before that may be reused."""
        s, self._session = self._session, None
        if s is not None and not s.closed:
            try:
                asyncio.get_running_loop().create_task(s.close())
            except RuntimeError:   # no loop here (a sync caller updated the list)
                pass

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @asynccontextmanager
    async def request(self, peer: Peer, method: str, path: str, *, json_body: Any = None,
                      data: Any = None, params: Optional[Mapping[str, str]] = None,
                      headers: Optional[Mapping[str, str]] = None,
                      timeout: Optional[aiohttp.ClientTimeout] = None,
                      ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed request: the open response (status < 400), or the error tree."""
        url = peer.url(path)
        what = f"{method} {url}"
        kw: Dict[str, Any] = {} if timeout is None else {"timeout": timeout}   # None: the session's
        try:
            async with self._s().request(method, url, ssl=self.ssl_for(peer), json=json_body,
                                         data=data, params=params, headers=headers, **kw) as resp:
                stale = resp.headers.get(STALE)
                if stale:
                    on_stale(stale)
                if resp.status >= 400:
                    text = await resp.text()
                    err = self._api_error(peer, what, resp.status, text)
                    err.retry = resp.status == 503 and resp.headers.get(RETRY) == "1"
                    raise err
                yield resp
        except aiohttp.ClientConnectorCertificateError as exc:
            why = describe(exc)
            raise PeerRefused(f"{peer} was refused: {why}", request=what, reason=why) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            why = describe(exc)
            err = Unreachable(f"cannot reach {peer}: {why}", request=what, reason=why)
            err.refused = refused(exc)
            raise err from exc

    @staticmethod
    def _api_error(peer: Peer, what: str, status: int, text: str) -> APIError:
        request = f"{what}: {status}"
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if status == 409 and isinstance(data, dict) and isinstance(data.get("current"), int):
            err = StaleAssignment(int(data["current"]), term=int(data.get("term") or 0),
                                  message=f"{peer}: {data.get('error') or 'stale assignment'}")
            err.request = request
            epoch = data.get("epoch")      # a routes 409 also says of which master run
            err.epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else -1  # type: ignore[attr-defined]
            return err
        return APIError(_reason(status, text), status=status, request=request)

    async def call(self, peer: Peer, method: str, path: str, body: Any = None, *,
                   timeout: Optional[float] = None, params: Optional[Mapping[str, str]] = None,
                   raw: Optional[bytes] = None) -> Any:
        """One JSON request; the decoded answer (``None`` for an empty body). ``raw``: a body
        already encoded as JSON (sent as is, instead of ``body``)."""
        t = aiohttp.ClientTimeout(total=timeout, sock_connect=min(2.0, timeout)) if timeout else None
        kw: Dict[str, Any] = ({"json_body": body} if raw is None else
                              {"data": raw, "headers": {"Content-Type": "application/json"}})
        async with self.request(peer, method, path, params=params, timeout=t, **kw) as resp:
            try:
                text = await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                why = describe(exc)
                raise Unreachable(f"cannot reach {peer}: {why}", reason=why,
                                  request=f"{method} {peer.url(path)}") from exc
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise APIError(f"{peer} answered something that is not JSON",
                           request=f"{method} {peer.url(path)}: {resp.status}") from exc

    # --- the agent API (docs/internal-apis.md) ------------------------------------------

    async def info(self, peer: Peer) -> Dict[str, Any]:
        return await self.call(peer, "GET", "/v1/info")

    async def put_assignment(self, peer: Peer, a: Assignment) -> Dict[str, Any]:
        return await self.call(peer, "PUT", "/v1/assignment", to_wire(a))

    async def put_routes(self, peer: Peer, u: "RoutesUpdate | bytes") -> Dict[str, Any]:
        """``StaleRoutes`` when the agent cannot apply it, with the version and epoch it holds;
        ``APIError`` 404 from an agent that predates the routes channel. ``u`` may be the
        update's JSON already (the pusher encodes one update once for many nodes)."""
        try:
            if isinstance(u, bytes):
                return await self.call(peer, "PUT", "/v1/routes", raw=u)
            return await self.call(peer, "PUT", "/v1/routes", to_wire(u))
        except StaleAssignment as exc:     # a 409 with "current": the routes kind
            err = StaleRoutes(exc.current, getattr(exc, "epoch", -1), message=str(exc), term=exc.term)
            err.request = exc.request
            raise err from exc

    async def tasks(self, peer: Peer, since: Optional[int] = None, wait: float = 0.0
                    ) -> Tuple[int, List[TaskStatus], Dict[str, Any]]:
        """(assignment version, task statuses, the rest of the answer: e.g. ``revocations``,
        ``seq``). With ``since``, a long poll (``agent/watch.py``): the answer once the report's
        ``seq`` moves past it, or after ``wait`` s (an agent without long polls answers at once
        and sends no ``seq``)."""
        if since is None:
            data = await self.call(peer, "GET", "/v1/tasks")
        else:
            # slack past the agent's wait: a late answer on a busy machine is no dead node
            # (TCP keepalives and gossip probes catch those during the wait)
            data = await self.call(peer, "GET", "/v1/tasks",
                                   timeout=wait + max(self.timeout, min(LONG_POLL_SLACK, wait / 5)),
                                   params={"since": str(since), "wait": f"{wait:g}"})
        try:
            rest = {k: v for k, v in data.items() if k not in ("version", "tasks")}
            return (int(data.get("version", 0)), [from_wire(TaskStatus, t) for t in data["tasks"]],
                    rest)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{peer}: malformed /v1/tasks answer") from exc

    async def stats(self, peer: Peer) -> Dict[str, Any]:
        return await self.call(peer, "GET", "/v1/stats")

    async def members(self, peer: Peer, timeout: Optional[float] = None,
                      brief: bool = False) -> List[Dict[str, Any]]:
        """The agent's gossip view; ``brief``: name, state and incarnation only (an agent of an
        earlier version ignores it and sends everything)."""
        data = await self.call(peer, "GET", "/v1/members", timeout=timeout,
                               params={"brief": "1"} if brief else None)
        return data if isinstance(data, list) else []

    async def put_revocations(self, peer: Peer, denylist: tlsutil.Denylist) -> Dict[str, Any]:
        return await self.call(peer, "PUT", "/v1/revocations", denylist.to_wire())


async def _reachable_first(peers: List[Peer], timeout: float = 1.0) -> List[Peer]:
    """``peers`` with those that accept a TCP connection first (in their order): a dead
    master's address can take seconds to refuse (no ARP answer), and 'no quorum' must come
    at once. Only connections are raced, never a request: a write goes to one master."""
    async def up(p: Peer) -> bool:
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(p.address, p.port), timeout)
        except (OSError, asyncio.TimeoutError):
            return False
        w.close()
        return True
    ok = await asyncio.gather(*(up(p) for p in peers))
    return [p for p, u in zip(peers, ok) if u] + [p for p, u in zip(peers, ok) if not u]


async def call_masters(client: Client, peers: List[Peer], method: str, path: str, body: Any = None,
                       timeout: Optional[float] = None) -> Any:
    """One request to the first master that serves it (see the module docstring)."""
    deadline = time.monotonic() + ELECTION_WAIT
    if len(peers) > 1:
        peers = await _reachable_first(peers)
    while True:
        last: Optional[APIError] = None
        for peer in peers:
            try:
                return await client.call(peer, method, path, body, timeout=timeout)
            except Unreachable as exc:
                last = exc
            except APIError as exc:
                if not getattr(exc, "retry", False):   # an HA master that did nothing: next one
                    raise
                last = exc
        assert last is not None
        if len(peers) == 1 and isinstance(last, Unreachable):
            raise last
        if time.monotonic() >= deadline:
            if not isinstance(last, Unreachable):
                raise last
            raise Unreachable(f"none of the {len(peers)} masters answers: {last}",
                              reason=last.reason, request=last.request) from last
        await asyncio.sleep(0.3)


async def call_master(cluster: clusterlib.Cluster, method: str, path: str, body: Any = None,
                      timeout: float = 15.0) -> Any:
    """One request to this cluster's master (any of its HA masters) with the ``cli`` certificate."""
    async with Client.for_cluster(cluster, timeout=timeout) as c:
        return await call_masters(c, master_peers(cluster), method, path, body, timeout=timeout)
