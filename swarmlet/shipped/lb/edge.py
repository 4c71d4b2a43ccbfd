"""The edge listeners: one shared port (80, or 443 with TLS) for every service routed by host.

An ``EdgeListener`` owns what belongs to the port: its client connections
(``max_connections``, the head limits, the client timeout, refusals) and, for
443, the TLS server (``tlsaccept.TLSServer``) with the certificate store
(``tls.CertStore``). Each request is sent to a *site*: the ``LoadBalancer`` of
one service (its backends, checks, pool, timeouts and metrics) that listens on
nothing itself. ``EdgeDownstream`` is the proxy's client protocol
(``downstream.py``) with one step more on each request head: ``sites.EdgeTable
.decide`` picks the answer (the ACME token, a redirect to HTTPS, a site, or a
404), and the request is bound to its site when its turn comes, so pipelined
requests for different hosts on one connection each reach their own service.

HTTPS answers of a service with ``hsts`` carry ``Strict-Transport-Security``;
``X-Forwarded-Proto`` and ``Forwarded: proto=`` say ``https`` on 443, and the
client's address is kept as on any port.

Shipped to agents: Python 3.9; httptools.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Set

from .config import LBConfig, LoadBalancerError
from .downstream import Downstream, Request, _Stop
from .framing import Refusal, split_absolute
from .metrics import LBMetrics
from .routing import Router
from .sites import ANSWER, REDIRECT, SITE, UNKNOWN, EdgeTable
from .tls import CertStore
from .tlsaccept import TLSServer

READ_BUFFER = 64 * 1024          # decrypted bytes per read of a TLS connection (at most)


class EdgeRequest(Request):
    __slots__ = ("answer", "hsts")

    def __init__(self) -> None:
        super().__init__()
        self.answer: Optional[bytes] = None     # a whole answer of the edge's own
        self.hsts = b""                         # the site's HSTS line, over TLS


class EdgeDownstream(Downstream):
    def __init__(self, listener: "EdgeListener") -> None:
        super().__init__(listener)
        self.table = listener.table
        self.tls = listener.certs is not None

    def _new_request(self) -> Request:
        return EdgeRequest()

    def _route(self, r: Request, host: bytes, target: bytes) -> bool:
        """An express request (origin form, one valid Host) to its site; the rest (the
        edge's own answers, unknown hosts) is the general path's."""
        kind, value = self.table.decide(host, target, self.tls)
        if kind != SITE:
            return False
        r.svc = value.site
        r.hsts = value.hsts_line if self.tls else b""     # type: ignore[attr-defined]
        self.sticky_name = value.site.sticky_name
        return True

    def on_headers_complete(self) -> None:
        r = self.parsing
        assert isinstance(r, EdgeRequest)
        target = b"".join(r.url)
        host = b""
        for name, value in r.headers:
            if len(name) == 4 and name.lower() == b"host":
                host = value
                break
        if target[:1] != b"/" and target != b"*":
            try:
                split = split_absolute(target)
            except Refusal:
                split = None                # build_request refuses it below
            if split is not None:
                host, target = split
        kind, value = self.table.decide(host, target, self.tls)
        if kind == SITE:
            r.svc = value.site
            r.hsts = value.hsts_line if self.tls else b""
            self.sticky_name = value.site.sticky_name
        elif kind == UNKNOWN:
            self._refuse(404, value)
            raise _Stop()
        elif kind == REDIRECT:
            r.answer = (b"HTTP/1.1 308 Permanent Redirect\r\nLocation: " + value
                        + b"\r\nContent-Length: 0\r\nCache-Control: no-store\r\n")
        elif kind == ANSWER:
            r.answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\nCache-Control: no-store\r\n" % len(value)
                        + b"\r\n" + value)
        super().on_headers_complete()

    def _start(self, r: Request) -> None:
        answer = getattr(r, "answer", None)
        if answer is not None and r.refusal is None:
            self.cur = r
            now = self.loop.time()
            keep = r.keep_alive and r.body_done and not self.lb.stopping
            r.keep_alive = keep
            if answer.startswith(b"HTTP/1.1 308"):
                answer += (b"\r\n" if keep else b"Connection: close\r\n\r\n")
                status = 308
            else:
                head, _, body = answer.partition(b"\r\n\r\n")
                answer = head + (b"\r\n\r\n" if keep else b"\r\nConnection: close\r\n\r\n") + body
                status = 200
            self.lb.metrics.answered(status, now - r.t0, now)
            self.transport.write(answer)
            self._finish(r, now)
            return
        if r.svc is not None:
            self.resp_extra = r.hsts      # type: ignore[attr-defined]
        super()._start(r)


class EdgeTLSDownstream(EdgeDownstream, asyncio.BufferedProtocol):
    """``EdgeDownstream`` behind TLS. As a buffered protocol, the TLS layer (uvloop's or
    asyncio's ``sslproto``) decrypts each read into the listener's one buffer; as a plain
    protocol it would ask ``SSLObject.read`` for 256 KiB per read, a fresh allocation each
    time, which cost more than the rest of a small request (27 us against 3 us per read,
    measured with memory BIOs). The buffer is shared: it is filled and copied out within
    one call, on one loop."""

    join_writes = True

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.lb.read_buffer              # type: ignore[attr-defined, no-any-return]

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.lb.read_buffer[:nbytes]))   # type: ignore[attr-defined]


class EdgeListener:
    """One edge port; the face ``Downstream`` expects of its listener."""

    def __init__(self, table: EdgeTable, host: str, port: int, config: LBConfig, *,
                 certs: Optional[CertStore] = None, reuse_port: bool = False,
                 handshake: Optional[Dict[str, float]] = None) -> None:
        self.table = table
        self.listen_host = host
        self.listen_port = port
        self.config = config
        self.certs = certs
        self.reuse_port = reuse_port
        self.handshake = dict(handshake or {})
        self.proto = "https" if certs is not None else "http"
        self.name = f"edge:{port}"
        self.router = Router(config)        # empty: requests are bound to their sites
        self.pool: Any = None
        self.metrics = LBMetrics()
        self.sticky_name: Optional[bytes] = None
        self.clients: Set[Downstream] = set()
        self.loop: Any = None
        self.stopping = False
        self.tls_server: Optional[TLSServer] = None
        self.read_buffer = memoryview(bytearray(READ_BUFFER))   # EdgeTLSDownstream's
        self._server: Optional[asyncio.AbstractServer] = None
        self._sweeper: Optional["asyncio.Task[None]"] = None

    @property
    def port(self) -> int:
        if self.tls_server is not None:
            return self.tls_server.bound_port
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self.listen_port

    def backend_idle(self, st: Any) -> None:   # never bound to a backend itself
        pass

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            if self.certs is not None:
                self.tls_server = TLSServer(self.listen_host, self.listen_port,
                                            lambda: EdgeTLSDownstream(self), self.certs.main,
                                            reuse_port=self.reuse_port, **self.handshake)  # type: ignore[arg-type]
                self.tls_server.start()
            else:
                self._server = await self.loop.create_server(
                    lambda: EdgeDownstream(self), self.listen_host, self.listen_port,
                    reuse_address=True, reuse_port=self.reuse_port or None, backlog=1024)
        except OSError as exc:
            raise LoadBalancerError(
                f"cannot listen on {self.listen_host}:{self.listen_port}: {exc.strerror or exc}",
                hint="is another process using this port?") from exc
        self.name = f"edge:{self.port}"
        self._sweeper = self.loop.create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        tick = max(0.02, min(0.5, self.config.client_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for c in [c for c in self.clients if c.deadline <= now]:
                c.on_deadline(now)

    async def stop(self, grace: float = 5.0) -> None:
        self.stopping = True
        if self.tls_server is not None:
            self.tls_server.close()
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace if self.loop else 0.0
        for c in list(self.clients):
            if c.cur is None and not c.queue:
                c.transport.close()
        while self.clients and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.clients):
            c.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def snapshot(self) -> Dict[str, Any]:
        m = self.metrics
        out: Dict[str, Any] = {
            "listener": self.name, "port": self.port, "tls": self.certs is not None,
            "connections_open": m.open_connections, "connections": m.connections,
            "connections_refused": m.refused_connections,
            "refusals": {str(k): v for k, v in sorted(m.refusals.items())},
            "answered": {str(k): v for k, v in sorted(m.requests.items())}}
        if self.tls_server is not None:
            out.update(self.tls_server.stats())
        return out


__all__ = ["EdgeDownstream", "EdgeListener", "EdgeRequest", "EdgeTLSDownstream"]
