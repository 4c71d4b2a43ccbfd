"""Real backends on 127.0.0.1 and small helpers for the load balancer tests.

``TestBackend`` is a real aiohttp server with a few behaviours the tests
switch on: a health endpoint that can be made to fail, slow answers, 5xx
answers, streaming both ways, a websocket echo.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, Dict, List, Optional

from aiohttp import WSMsgType, web

from swarmlet.shipped.lb import Backend


class TestBackend:
    __test__ = False  # not a test class

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.fail_status: Optional[int] = None   # answer every / with this status
        self.delay = 0.0                          # seconds before answering /
        self.health_hits = 0
        self.hits = 0
        self.release = asyncio.Event()            # /hold waits on it
        self.held = asyncio.Event()               # set when a /hold request arrived
        self.first_piece = asyncio.Event()
        self.runner: Optional[web.AppRunner] = None
        self.port = 0

    @property
    def backend(self) -> Backend:
        return Backend("127.0.0.1", self.port, "/up", name=self.name)

    async def start(self) -> "TestBackend":
        app = web.Application()
        app.router.add_get("/up", self.up)
        app.router.add_get("/headers", self.headers)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/hold", self.hold)
        app.router.add_get("/stream", self.stream)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/{tail:.*}", self.root)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def up(self, request: web.Request) -> web.Response:
        self.health_hits += 1
        return web.Response(text="ok" if self.healthy else "sick",
                            status=200 if self.healthy else 503)

    async def root(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status:
            return web.Response(status=self.fail_status, text=f"{self.name} failing")
        return web.Response(text=self.name)

    async def headers(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"name": self.name,
                                  "headers": [[k, v] for k, v in request.headers.items()]})

    async def slow(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text=self.name)

    async def hold(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.held.set()
        await self.release.wait()
        return web.Response(text=f"{self.name} released")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Chunked: one piece, then wait until the test says it saw it."""
        self.hits += 1
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first;")
        await self.release.wait()
        for i in range(3):
            await resp.write(f"piece{i};".encode())
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        """Reads the first piece, signals, then counts the rest."""
        self.hits += 1
        total = 0
        async for data in request.content.iter_any():
            total += len(data)
            self.first_piece.set()
        return web.json_response({"name": self.name, "bytes": total,
                                  "chunked": request.headers.get("Transfer-Encoding", "")})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.hits += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"{self.name}:{msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> None:
    """Poll a condition on real servers, bounded (fails the test on timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def headers_of(body: Dict[str, Any]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for k, v in body["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out

