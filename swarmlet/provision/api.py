"""Small mutual-TLS JSON calls to agents and the master, for join, leave and nodes.

Errors become ``Unreachable`` (no answer, TLS refused) or ``APIError`` (an HTTP
error status), so callers deal with one tree. ``wait_agent_healthy`` is join's
last step: the agent answers ``GET /v1/info`` as the expected node of this
cluster, and ``GET /v1/members`` shows it (and, when it has peers to meet,
at least one of them) alive in the gossip mesh.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import aiohttp

from ..shipped.exceptions import APIError, Unreachable

ALIVE = ("alive", "ready", "suspect")


async def call(method: str, url: str, ctx: ssl.SSLContext, body: Any = None,
               timeout: float = 5.0, session: Optional[aiohttp.ClientSession] = None) -> Any:
    """One JSON request; the decoded answer (or ``None`` for an empty body).

    With ``session`` the connection is reused (one TLS handshake for many polls).
    """
    try:
        async with _maybe_session(session) as s:
            async with s.request(method, url, ssl=ctx, json=body,
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text()
                stale = resp.headers.get("X-Swarmlet-Stale")
                if stale:
                    on_stale(stale)
                if resp.status >= 400:
                    try:
                        msg = json.loads(text).get("error", text)
                    except (ValueError, AttributeError):
                        msg = text
                    err = APIError(f"{method} {url}: {resp.status} {str(msg).strip()[:200]}",
                                   status=resp.status)
                    err.retry = resp.status == 503 and resp.headers.get("X-Swarmlet-Retry") == "1"
                    raise err
                return json.loads(text) if text.strip() else None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
        raise Unreachable(f"{method} {url}: {_describe(exc)}") from exc
    except ValueError as exc:
        raise APIError(f"{method} {url}: answer is not JSON") from exc


class _maybe_session:
    """``async with``: the given session as is, or a fresh one closed afterwards."""

    def __init__(self, session: Optional[aiohttp.ClientSession]) -> None:
        self.given = session
        self.own: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> aiohttp.ClientSession:
        if self.given is not None:
            return self.given
        self.own = aiohttp.ClientSession()
        return self.own

    async def __aexit__(self, *exc: Any) -> None:
        if self.own is not None:
            await self.own.close()


def _describe(exc: BaseException) -> str:
    """A short reason without aiohttp's repr noise."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "its TLS certificate is not from this cluster's CA (another cluster's server there?)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed ({getattr(exc, 'os_error', exc)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return "cannot connect: " + (os.strerror(err.errno) if err.errno else str(err))
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def agent_url(address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}{path}"


async def wait_agent_healthy(
    address: str, port: int, name: str, cluster_id: str, ctx: ssl.SSLContext,
    want_peers: Union[bool, Callable[[], bool]], timeout: float = 30.0, interval: float = 0.25,
) -> Dict[str, Any]:
    """Poll until the agent is up and in the mesh; the last ``/v1/info`` answer.

    ``want_peers`` (or a callable asked at each poll) says whether some other
    node should be up to meet; then the agent must see at least one.

    Raises ``Unreachable`` naming what was last missing when ``timeout`` passes.
    """
    async with aiohttp.ClientSession() as session:
        return await _wait_healthy(session, address, port, name, cluster_id, ctx, want_peers,
                                   timeout, interval)


async def _wait_healthy(session: aiohttp.ClientSession, address: str, port: int, name: str,
                        cluster_id: str, ctx: ssl.SSLContext, want_peers: Any, timeout: float,
                        interval: float) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            info = await call("GET", agent_url(address, port, "/v1/info"), ctx, timeout=3, session=session)
            if info.get("name") != name or info.get("cluster_id") != cluster_id:
                raise APIError(f"the agent at {address}:{port} is {info.get('name')!r} of cluster "
                               f"{info.get('cluster_id')!r}, expected {name!r} of {cluster_id!r}")
            members = await call("GET", agent_url(address, port, "/v1/members"), ctx, timeout=3,
                                 session=session)
            alive = [m for m in members or [] if str(m.get("state", "")).lower() in ALIVE]
            if not any(m.get("name") == name for m in alive):
                last = "the agent answers but is not in its own member list yet"
            elif (want_peers() if callable(want_peers) else want_peers) and len(alive) < 2:
                last = "the agent answers but has not met any other node over gossip"
            else:
                info["members"] = len(alive)
                return info
        except Unreachable as exc:
            last = f"agent API not answering ({exc})"
        except APIError as exc:
            if exc.status is None:
                raise
            last = str(exc)
        if time.monotonic() >= deadline:
            raise Unreachable(f"agent not healthy after {timeout:.0f}s: {last}")
        await asyncio.sleep(interval)


async def members(address: str, port: int, ctx: ssl.SSLContext) -> List[Dict[str, Any]]:
    return await call("GET", agent_url(address, port, "/v1/members"), ctx) or []


def _warn_stale(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# How long a call keeps trying while HA masters elect a leader (a failover takes up to ~5 s).
ELECTION_WAIT = 8.0

# What to do with an HA follower's "the view may be stale" (X-Swarmlet-Stale); the CLI prints it.
on_stale: Callable[[str], None] = _warn_stale


async def master_call(base: "Union[str, Sequence[str]]", method: str, path: str,
                      ctx: ssl.SSLContext, body: Optional[Any] = None, timeout: float = 5.0) -> Any:
    """One call to the master; ``base`` may list every HA master: the first that answers serves
    (a follower proxies to the leader), an unreachable one is skipped."""
    bases = [base] if isinstance(base, str) else list(base)
    deadline = time.monotonic() + ELECTION_WAIT
    while True:
        last: Optional[BaseException] = None
        for b in bases:
            try:
                return await call(method, b + path, ctx, body, timeout)
            except Unreachable as exc:
                last = exc
            except APIError as exc:
                # An HA master that did nothing (no leader yet, the old one gone): try another.
                if not getattr(exc, "retry", False):
                    raise
                last = exc
        assert last is not None
        if len(bases) == 1 and isinstance(last, Unreachable):
            raise last
        if time.monotonic() >= deadline:
            if isinstance(last, APIError):
                raise last
            raise Unreachable(f"none of the {len(bases)} masters answers: {last}") from last
        await asyncio.sleep(0.3)
