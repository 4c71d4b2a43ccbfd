"""The master's client for the agent API (HTTPS, mutual TLS with the ``master`` cert).

One pooled aiohttp session for every agent; short timeouts, because a slow
answer is treated like no answer by liveness. Errors are mapped to the error
tree: ``Unreachable`` (no connection, TLS refused, timeout), ``APIError`` (an
HTTP error), ``StaleAssignment`` (409: the agent holds a newer version).
Agent certificates are checked against the cluster CA; the host name is not
checked because agents are addressed by IP and the CA is private.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Dict, List, Optional, Tuple

import aiohttp

from ..shipped.exceptions import APIError, ProtocolError, StaleAssignment, StaleRoutes, Unreachable
from ..shipped.models import Assignment, RoutesUpdate, TaskStatus, from_wire, to_wire


def base_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


class AgentClient:
    def __init__(self, ctx: ssl.SSLContext, timeout: float = 2.0) -> None:
        ctx.check_hostname = False
        self._ctx = ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(1.0, timeout))
        self._session: Optional[aiohttp.ClientSession] = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ctx, limit=256, limit_per_host=4))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, url: str, body: Any = None) -> Any:
        try:
            async with self._s().request(method, url, json=body) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    if resp.status >= 400:     # e.g. aiohttp's own 404 for a path it lacks
                        raise APIError(f"{method} {url}: {resp.status}", status=resp.status) from None
                    raise
                if resp.status == 409 and isinstance(data, dict) and "current" in data:
                    raise StaleAssignment(int(data["current"]), term=int(data.get("term") or 0),
                                          message=f"{method} {url}: {data.get('error') or 'stale assignment'}")
                if resp.status >= 400:
                    msg = data.get("error") if isinstance(data, dict) else data
                    raise APIError(f"{method} {url}: {resp.status} {msg}", status=resp.status)
                return data
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            raise Unreachable(f"{method} {url}: {type(exc).__name__} {exc}".strip()) from exc
        except ValueError as exc:
            raise APIError(f"{method} {url}: answer is not JSON") from exc

    async def info(self, base: str) -> Dict[str, Any]:
        return await self._call("GET", base + "/v1/info")

    async def put_assignment(self, base: str, a: Assignment) -> Dict[str, Any]:
        return await self._call("PUT", base + "/v1/assignment", to_wire(a))

    async def put_routes(self, base: str, u: RoutesUpdate) -> Dict[str, Any]:
        """``StaleRoutes`` when the agent cannot apply it (send the whole table);
        ``APIError`` 404 from an agent that predates the routes channel."""
        try:
            return await self._call("PUT", base + "/v1/routes", to_wire(u))
        except StaleAssignment as exc:     # a 409 with "current": the routes kind
            raise StaleRoutes(exc.current, -1, message=str(exc), term=exc.term) from exc

    async def tasks(self, base: str) -> Tuple[int, List[TaskStatus]]:
        data = await self._call("GET", base + "/v1/tasks")
        try:
            return int(data.get("version", 0)), [from_wire(TaskStatus, t) for t in data["tasks"]]
        except (AttributeError, KeyError, TypeError) as exc:
            raise ProtocolError(f"{base}/v1/tasks: malformed answer") from exc

    async def stats(self, base: str) -> Dict[str, Any]:
        return await self._call("GET", base + "/v1/stats")

    async def members(self, base: str) -> List[Dict[str, Any]]:
        data = await self._call("GET", base + "/v1/members")
        return data if isinstance(data, list) else []
