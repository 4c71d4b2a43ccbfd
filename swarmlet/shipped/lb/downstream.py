"""The client side of the proxy: one asyncio Protocol per client connection.

Why a Protocol and not an aiohttp handler: the issue measured aiohttp's web
handler plus a ClientSession at 0.10× nginx. Here a request costs one parse in
C (httptools/llhttp), one head rewrite (``headers.py``), one write to a pooled
keep-alive upstream (``upstream.py``), and the same on the way back, all
through plain callbacks: no task, future, StreamReader or header multidict per
request. Tasks appear only on slow paths (a pool miss needs a connect).

One exchange runs at a time per client connection; pipelined requests queue
(reading pauses) and are answered in order. Life of an exchange:

    head parsed ─▶ pick backend (routing.Router) ─▶ pooled conn? ─▶ write head+body
                                   │ no                     ▲
                                   └─▶ connect task ────────┘
    response head ─▶ rewrite, write ─▶ body pieces ─▶ end ─▶ conn back to pool

Failures before the answer is committed (connect error, reset, timeout,
garbage) retry on another backend when allowed: always if nothing reached the
backend, else only idempotent requests whose body is still held
(``retry_buffer``). An answer is *committed* once a byte of it went to the
client. For a retryable request the answer is held back until it is complete
(``hold_bytes``/``hold_time`` bound this, then it streams): a backend killed
between its head and its body, as a replica is when its container dies, costs
a retry rather than a truncated answer. After the commit nothing can be
retried: the client connection is closed so the truncation shows. Upgrades
(websockets) become a byte tunnel after the backend's 101.

Timeouts are deadlines on the connection object, checked by the load
balancer's sweeper tick, rather than a timer handle per request.

Nothing moves upstream before the head is fully checked: ``build_request``
decides the framing and Host once (``headers.py``/``framing.py``) and refuses
what it must (400, 501, 505...). A request starts only once the parser has
been fed the whole read it came in, so an error later in the same bytes (a
bad chunk size) stops it before anything is written. An error in a body that
already streamed aborts the upstream connection mid-body (the backend never
sees a complete request) and answers 400 if nothing of the answer went out. A
refused second request on a kept-alive connection is answered in its turn,
after the ones before it.

Limits are enforced as bytes arrive: the parser is fed at most the rest of
the head budget at a time, cut at the end of each head (``framing.next_cut``),
so an endless header is refused (431) after ``max_head_size`` bytes, a long
target (414) after ``max_uri_size``; a Content-Length body is fed exactly
(the next head starts on a cut), and chunk-size lines and trailers have the
same budget. Connections past ``max_connections`` get a 503 and are closed;
more than ``max_pipeline`` parsed requests stop the parsing until they drain.

Backpressure: a client that reads slowly pauses reading from its backend, and
a backend that reads slowly pauses reading from its client (``pause_reading``
reasons are a bit mask so they can overlap). An upgrade waiting for its 101
stops reading the client after one read, so a client that sends before the
backend answers holds the proxy to one buffer.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Tuple

from httptools import (HttpParserCallbackError, HttpParserError, HttpParserUpgrade,
                       HttpRequestParser)

from . import express
from .framing import Refusal, next_cut
from .headers import (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, IDEMPOTENT,
                      LAST_CHUNK, RequestInfo, build_request, build_response, chunk,
                      error_response)
from .outbox import HeldTransport
from .routing import BackendState, Key
from .upstream import UpstreamConn

if TYPE_CHECKING:  # pragma: no cover
    from .proxy import LoadBalancer

PAUSE_PIPELINE = 1   # a request is queued behind the current one
PAUSE_UPSTREAM = 2   # the backend is not reading our writes fast enough
PAUSE_BUFFER = 4     # request body piling up while no backend is attached
PAUSE_UPGRADE = 8    # an upgrade waits for the backend's 101
PAUSE_STOP = 16      # refused: nothing more is read from this client

# What the parser is in the middle of, for feeding it (see ``_cut``).
IN_HEAD = 0          # a request head (or the gap before one)
IN_LENGTH = 1        # a Content-Length body: fed exactly
IN_CHUNKED = 2       # a chunked body: chunk lines and trailers have the head budget
STOPPED = 3          # refused, upgraded or broken: never fed again


class _Stop(Exception):
    """Raised from a parser callback to stop the parser (the reason is recorded)."""


class Request:
    """One parsed client request and its progress through attempts."""

    __slots__ = ("method", "url", "url_size", "headers", "info", "keep_alive", "http11",
                 "t0", "body_done", "pending", "pending_size", "log", "log_size", "sent",
                 "attempts", "tried", "fresh_only", "last_error", "last_status", "refusal", "svc")

    def __init__(self) -> None:
        self.method = b""
        self.url: List[bytes] = []
        self.url_size = 0
        self.headers: List[Tuple[bytes, bytes]] = []
        self.info: Optional[RequestInfo] = None
        self.keep_alive = True
        self.http11 = True
        self.t0 = 0.0
        self.body_done = False
        self.pending: List[bytes] = []      # body bytes not yet written to the current backend
        self.pending_size = 0
        self.log: Optional[List[bytes]] = []  # every body byte so far, to replay (None: too big)
        self.log_size = 0
        self.sent = False                   # something reached a backend
        self.attempts = 0
        self.tried: List[Key] = []          # backends that failed this request
        self.fresh_only = False             # last failure was on a reused connection
        self.last_error = ""
        self.last_status = 502
        self.refusal: Optional[Refusal] = None   # answered with this in its turn
        self.svc: Any = None                # the service it goes to (edge routing; None: the LB's)


def _after(r: Request) -> str:
    return r.last_error + (f" (after {r.attempts} attempts)" if r.attempts > 1 else "")


class Downstream(asyncio.BaseProtocol):
    # BaseProtocol, not Protocol: uvloop hands decrypted bytes to a buffered protocol
    # (``edge.EdgeTLSDownstream``) only if it is no ``asyncio.Protocol``; as one, it got
    # a fresh 256 KiB read (an mmap, mremap and munmap) for every TLS record.
    # TLS (the edge's 443): a transport's writelines makes one TLS record per piece, so
    # the pieces a loop turn holds (outbox.py) are joined: one record, one AEAD seal
    join_writes = False

    def __init__(self, lb: "LoadBalancer") -> None:
        self.lb = lb                        # the listener: connection caps, clients, proto
        self.loop = lb.loop
        # The service the exchange in flight goes to: its backends (router, pool), config and
        # metrics. A port's own LoadBalancer is both; the edge (``edge.py``) binds a site per
        # request by Host and path (``_bind``), while caps and refusals stay the listener's.
        self.svc = lb
        self.cfg = lb.config
        self.router = lb.router
        self.pool = lb.pool
        self.metrics = lb.metrics
        self.proto = lb.proto
        self.sticky_name = lb.sticky_name   # the cookie build_request reads (per service)
        self.resp_extra = b""               # header lines added to answers (edge: HSTS)
        self.transport: Any = None
        self.client_ip = ""
        self.local_host = b""
        self.parser = HttpRequestParser(self)
        self.parsing: Optional[Request] = None
        self.queue: Deque[Request] = deque()
        self.cur: Optional[Request] = None
        self.up: Optional[UpstreamConn] = None
        self.st: Optional[BackendState] = None
        self.connect_task: Optional[asyncio.Task] = None
        self.resp_started = False
        self.resp_status = 0
        self.resp_down = BODY_NONE
        self.resp_up = BODY_NONE
        self.up_keep = False
        self.interim = False
        self.tunnel = False
        self.tunnel_buf: Optional[List[bytes]] = None
        self.wbuf: List[bytes] = []         # response bytes from one upstream read, sent as one
        self.holding = False                # wbuf holds an uncommitted answer (retryable)
        self.held = 0
        self.hold_timer: Any = None
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.counted = False                # took a slot under max_connections
        self.deadline = math.inf
        self.phase = IN_HEAD
        self.budget = 0                     # head (or chunk-line) bytes fed so far
        self.tail = b""                     # the last bytes fed, for a CRLFCRLF across reads
        self.remaining = 0                  # Content-Length bytes still to feed
        self.stash = b""                    # read but not yet fed (pipeline full)

    # --- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        m = self.lb.metrics
        if m.open_connections >= self.cfg.max_connections:
            m.refused_connections += 1
            self.closed = True
            transport.write(error_response(503, "too many connections", False))
            transport.close()
            return
        self.counted = True
        # writes go out at the end of the loop turn, with the turn's others (outbox.py)
        self.transport = HeldTransport(transport, self.loop, self.join_writes)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            h = f"[{local[0]}]" if ":" in local[0] else local[0]
            self.local_host = f"{h}:{local[1]}".encode()
        self.deadline = self.loop.time() + self.cfg.client_timeout
        self.lb.clients.add(self)
        m.connections += 1
        m.open_connections += 1

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            if self.up is not None:
                self.up.transport.write(data)
            self.deadline = self.loop.time() + self.cfg.tunnel_timeout
            return
        if self.tunnel_buf is not None:     # upgrade asked, backend has not said 101 yet
            self.tunnel_buf.append(data)    # one read at most: reading is paused
            self.pause_reading(PAUSE_UPGRADE)
            return
        if self.phase == STOPPED or self.closed:
            return
        if self.stash:                      # a read that was already on its way
            self.stash += data
            return
        if self.cur is None and self.phase == IN_HEAD and not self.budget and not self.queue \
                and self.parsing is None and len(data) < self.cfg.max_head_size \
                and self._express(data):
            return
        self._feed(data)
        self._kick()

    def _express(self, data: bytes) -> bool:
        """The express lane (``express.py``): a read that is one plain bodiless head,
        with nothing in flight, goes up without llhttp. False: not taken, nothing done."""
        cfg = self.cfg
        req = express.request(data, cfg.max_uri_size, cfg.max_headers, self.client_ip,
                              self.proto)
        if req is None:
            return False
        r = self._new_request()
        if not self._route(r, req[2], req[3]) or (self.sticky_name is not None
                                                   and express.has_cookie(data)):
            return False                    # a sticky cookie to read: build_request does it
        r.t0 = self.loop.time()
        r.method = req[0]
        r.keep_alive = req[4]
        r.info = RequestInfo(req[1], BODY_NONE, 0, None, False)
        r.body_done = True
        self.queue.append(r)
        self._start(r)
        return True

    def _new_request(self) -> Request:
        return Request()

    def _route(self, r: Request, host: bytes, target: bytes) -> bool:
        """Where an express request goes (the edge picks a site by Host and path);
        False sends it down the general path."""
        return True

    def _feed(self, data: bytes) -> None:
        """Feed the parser in cuts (``_cut``) and enforce the limits after each."""
        parser = self.parser
        piece = b""
        try:
            while data:
                if len(self.queue) >= self.cfg.max_pipeline:
                    self.stash = data       # parsed enough ahead: the rest waits
                    self.pause_reading(PAUSE_PIPELINE)
                    return
                if self.phase == IN_HEAD and not self.tail \
                        and len(data) < self.cfg.max_head_size \
                        and data.find(b"\r\n\r\n") == len(data) - 4:
                    # the common read: one whole head, nothing after it. What _cut would
                    # decide (all of it), without its arithmetic.
                    n = self.budget = len(data)
                    self.tail = data[-3:]
                else:
                    n = self._cut(data)
                if n >= len(data):
                    piece, data = data, b""
                else:
                    piece, data = data[:n], data[n:]
                parser.feed_data(piece)
                if self.budget >= self.cfg.max_head_size and self.phase != STOPPED:
                    if self.phase == IN_HEAD:
                        self._refuse(431, f"request head over {self.cfg.max_head_size} bytes")
                    else:
                        self._refuse(400, "chunk size line or trailers too large")
                    return
        except HttpParserUpgrade as exc:
            last = self.queue[-1] if self.queue else None
            if last is None or last.info is None or not last.info.upgrade:
                self._refuse(400, "invalid upgrade request")
                return
            self.phase = STOPPED            # the rest is the tunnel's, not HTTP
            rest = piece[exc.args[0]:] + data
            self.tunnel_buf = [rest] if rest else []
            self.pause_reading(PAUSE_UPGRADE)
        except HttpParserCallbackError:
            pass                            # _Stop: the callback recorded why
        except HttpParserError as exc:
            self._refuse(400, f"malformed request ({exc})")

    def _cut(self, data: bytes) -> int:
        """How much to feed next. A Content-Length body exactly, so the next head
        starts on a cut; else up to the next CRLFCRLF, within the head budget."""
        if self.phase == IN_LENGTH:
            n = self.remaining
            self.remaining -= min(n, len(data))
            return n
        n = next_cut(data, self.tail, self.cfg.max_head_size - self.budget)
        self.budget += n
        self.tail = (self.tail + data[:n])[-3:] if n < 3 else data[n - 3:n]
        return n

    def _kick(self) -> None:
        """Start the next request, once everything read so far has been parsed."""
        if self.cur is None and self.queue and not self.closed:
            self._start(self.queue[0])

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        if not self.counted:
            return
        self.lb.clients.discard(self)
        self.lb.metrics.open_connections -= 1
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        self._stop_holding()
        if self.up is not None:
            if not self.tunnel:
                self.metrics.client_aborts += 1
            self._detach(reuse=False)

    def eof_received(self) -> None:
        """The client half-closed: the transport closes (what ``asyncio.Protocol`` does)."""
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None:
            self.up.resume_reading()

    def pause_reading(self, why: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= why

    def resume_reading(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    # --- request parsing (httptools callbacks) ------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = self._new_request()

    def on_url(self, url: bytes) -> None:
        r = self.parsing
        assert r is not None
        r.url.append(url)                   # pieces as they arrive: no quadratic join
        r.url_size += len(url)
        if r.url_size > self.cfg.max_uri_size:
            self._refuse(414, f"request target over {self.cfg.max_uri_size} bytes")
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.parsing
        assert r is not None
        if r.info is not None:
            return                          # a trailer: dropped (chunks are re-framed)
        r.headers.append((name, value))
        if len(r.headers) > self.cfg.max_headers:
            self._refuse(431, f"more than {self.cfg.max_headers} header lines")
            raise _Stop()

    def on_headers_complete(self) -> None:
        r = self.parsing
        assert r is not None
        p = self.parser
        r.t0 = self.loop.time()
        r.method = p.get_method()
        version = p.get_http_version()
        r.http11 = version == "1.1"
        r.keep_alive = p.should_keep_alive()
        try:
            r.info = info = build_request(r.method, b"".join(r.url), r.headers, self.client_ip,
                                          self.proto, p.should_upgrade(), self.sticky_name,
                                          self.local_host, version)
        except Refusal as exc:
            self._refuse(exc.status, exc.detail)
            raise _Stop() from None
        r.headers = []                      # built: the head is all we keep
        r.body_done = info.body == BODY_NONE
        if info.upgrade:
            r.keep_alive = False            # after a tunnel (or a refusal) the connection ends
        self.budget = 0
        self.tail = b""
        if info.body == BODY_LENGTH:
            self.phase = IN_LENGTH
            self.remaining = info.length
        elif info.body == BODY_CHUNKED:
            self.phase = IN_CHUNKED
        self.queue.append(r)
        if self.cur is not None:
            self.pause_reading(PAUSE_PIPELINE)

    def on_chunk_header(self) -> None:
        self.budget = 0                     # a chunk line ended: its budget starts over

    def on_body(self, body: bytes) -> None:
        r = self.parsing
        assert r is not None and r.info is not None
        self.budget = 0
        self._body(r, chunk(body) if r.info.body == BODY_CHUNKED else body)

    def on_message_complete(self) -> None:
        r = self.parsing
        self.parsing = None
        if self.phase != STOPPED:
            self.phase = IN_HEAD
            self.budget = 0
            self.tail = b""
        if r is None or r.body_done:
            return
        r.body_done = True
        if r.info is not None and r.info.body == BODY_CHUNKED:
            self._body(r, LAST_CHUNK)

    def _refuse(self, status: int, detail: str) -> None:
        """Stop parsing this client for good, and answer ``status`` in turn: after
        the requests before it, or now if it is the request in flight."""
        self.phase = STOPPED
        self.stash = b""
        self.pause_reading(PAUSE_STOP)
        r = self.parsing
        if r is None:
            r = self.parsing = Request()
        self.lb.metrics.refused(status)
        r.refusal = Refusal(status, detail)
        r.keep_alive = False
        if r.info is None or r not in self.queue:
            r.t0 = self.loop.time()
            self.queue.append(r)            # its head was refused: answered in its turn
        elif r is self.cur:
            self._abort_current(r)          # its body was bad: the backend must not finish it

    def _body(self, r: Request, data: bytes) -> None:
        if r.log is not None:
            r.log.append(data)
            r.log_size += len(data)
            if r.log_size > self.cfg.retry_buffer:
                r.log = None                # too big to replay: no retry once sent
        if r is self.cur and self.up is not None:
            self.up.transport.write(data)
            if not self.resp_started:
                self.deadline = self.loop.time() + self.cfg.response_timeout
        else:
            r.pending.append(data)
            r.pending_size += len(data)
            if r.pending_size > self.cfg.retry_buffer:
                self.pause_reading(PAUSE_BUFFER)

    # --- attempts -------------------------------------------------------------------------

    def _bind(self, svc: Any) -> None:
        """Send this connection's next exchanges to ``svc`` (a site of the edge)."""
        self.svc = svc
        self.router = svc.router
        self.pool = svc.pool
        self.cfg = svc.config
        self.metrics = svc.metrics

    def _start(self, r: Request) -> None:
        if r.svc is not None and r.svc is not self.svc:
            self._bind(r.svc)
        self.cur = r
        self.resp_started = False
        self.interim = False
        self.deadline = math.inf
        if r.refusal is not None:
            self._error(r, r.refusal.status, r.refusal.detail)
            return
        self._attempt(r)

    def _next(self) -> None:
        if self.closed:
            return
        if self.stash and len(self.queue) < self.cfg.max_pipeline:
            data, self.stash = self.stash, b""
            self._feed(data)
        self._kick()
        if not self.stash:
            self.resume_reading(PAUSE_PIPELINE)

    def _abort_current(self, r: Request) -> None:
        """The request in flight had a bad body: cut its backend connection (it
        never sees the request end), answer the refusal if nothing went out yet."""
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        committed = self.resp_started and not self.holding
        up = self.up
        if up is not None:
            up.aborted = True
            self._detach(reuse=False)
            up.transport.abort()
        if committed:
            self._close()                   # the client sees the answer end early
            return
        self._unsend()
        refusal = r.refusal
        assert refusal is not None
        self._error(r, refusal.status, refusal.detail)

    def _attempt(self, r: Request) -> None:
        now = self.loop.time()
        st = self.router.pick(now, r.tried, r.info.sticky)   # type: ignore[union-attr]
        if st is None:
            if r.attempts:
                self._error(r, r.last_status, _after(r))
            else:
                self._error(r, 503, "no backend available for this service")
            return
        r.attempts += 1
        self.st = st
        self.deadline = math.inf            # a connect has its own timeout
        up = None if r.fresh_only else self.pool.get(st)
        if up is not None:
            self._attach(r, st, up, now)
        else:
            self.connect_task = self.loop.create_task(self._connect(r, st))

    async def _connect(self, r: Request, st: BackendState) -> None:
        try:
            up = await self.pool.connect(st)
        except asyncio.TimeoutError:
            self.connect_task = None
            if self.cur is r and not self.closed:
                self._failed(r, st, "connect", f"backend did not accept a connection within "
                             f"{self.cfg.connect_timeout:g}s", eject=True)
            return
        except OSError as exc:
            self.connect_task = None
            if self.cur is r and not self.closed:
                reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
                self._failed(r, st, "connect", f"could not connect to backend ({reason})",
                             eject=True)
            return
        self.connect_task = None
        up.reused = False
        if self.closed or self.cur is not r or r.refusal is not None:
            self.pool.put(up, self.loop.time())   # fresh and unused: keep it
            return
        if up.closed or up.transport.is_closing():
            # Accepted, then closed before we could write: Docker's userland proxy
            # does this when its container is gone (it accepts, fails to dial the
            # container, closes). The close came while we had no owner, so nobody
            # was told: attaching now would write into a dead transport and wait
            # for an answer that never comes. Nothing was sent: fail over.
            self._failed(r, st, "reset", "backend closed the connection before the "
                         "request was sent", eject=True)
            return
        self._attach(r, st, up, self.loop.time())

    def _attach(self, r: Request, st: BackendState, up: UpstreamConn, now: float) -> None:
        self.up = up
        st.active += 1
        up.begin(self)
        body = r.log if r.sent and r.log is not None else r.pending
        if body:
            up.transport.writelines([r.info.head, *body])   # type: ignore[union-attr]
        else:
            up.transport.write(r.info.head)                # type: ignore[union-attr]
        r.sent = True
        if r.pending:
            r.pending = []
            r.pending_size = 0
            self.resume_reading(PAUSE_BUFFER)
        if self.write_paused:
            up.pause_reading()
        self.deadline = now + self.cfg.response_timeout

    def _detach(self, reuse: bool) -> None:
        up, st = self.up, self.st
        if up is None:
            return
        self.up = None
        up.owner = None
        if st is not None:
            st.active -= 1
            if st.draining and st.active <= 0:
                self.svc.backend_idle(st)
        if reuse:
            self.pool.put(up, self.loop.time())
        elif not up.closed:
            up.transport.close()
        self.resume_reading(PAUSE_UPSTREAM)

    def _failed(self, r: Request, st: BackendState, kind: str, error: str, eject: bool) -> None:
        """An attempt failed before the response head: retry or answer an error."""
        now = self.loop.time()
        self._detach(reuse=False)
        self.metrics.upstream_error(kind)
        if self.router.record_failure(st, now, error, eject):
            self.pool.close_idle(st.key)
        if eject:
            r.tried.append(st.key)
        elif not r.fresh_only:
            # A kept-alive connection closed under us says nothing about the backend (the
            # benign close race): the retry, on a fresh connection, does not use up one of
            # the request's attempts. Once per attempt: the fresh one counts.
            r.attempts -= 1
        r.fresh_only = not eject
        r.last_error = error
        r.last_status = 504 if kind == "timeout" else 502
        retry = r.attempts < self.cfg.max_attempts and (
            not r.sent or (r.method in IDEMPOTENT and r.log is not None))
        if retry:
            self.metrics.retries += 1
            self._attempt(r)
        else:
            self._error(r, r.last_status, _after(r))

    # --- response (called by UpstreamConn) ---------------------------------------------

    def response_head(self, up: UpstreamConn, status: int, reason: bytes,
                      headers: List[Tuple[bytes, bytes]], up_keep: bool) -> None:
        r = self.cur
        if up is not self.up or r is None:
            return
        if status < 200 and status != 101:
            self.interim = True             # e.g. 100 Continue: pass on, wait for the real one
            if r.http11:
                try:
                    self.wbuf.append(build_response(status, reason, headers, http11=True,
                                                    keep_alive=True, head_request=False)[0])
                except Refusal as exc:
                    self.upstream_failed(up, "invalid", exc.detail)
            return
        info = r.info
        assert info is not None
        if status == 101 and not info.upgrade:
            self.upstream_failed(up, "invalid", "backend switched protocols unasked")
            return
        st = self.st
        set_cookie = None
        sticky = self.svc.sticky_name
        if sticky is not None and st is not None and info.sticky != st.sticky_id:
            set_cookie = (sticky + b"=" + st.sticky_id.encode()
                          + b"; Path=/; HttpOnly; SameSite=Lax")
        try:
            head, self.resp_up, self.resp_down, r.keep_alive = build_response(
                status, reason, headers, http11=r.http11,
                keep_alive=r.keep_alive and r.body_done and not self.lb.stopping,
                head_request=r.method == b"HEAD", set_cookie=set_cookie, extra=self.resp_extra)
        except Refusal as exc:
            self.upstream_failed(up, "invalid", exc.detail)
            return
        self.resp_started = True
        self.resp_status = status
        self.up_keep = up_keep
        self.wbuf.append(head)
        # Hold the answer back only where a cut could still be retried.
        self.holding = (status != 101 and r.method in IDEMPOTENT and r.log is not None
                        and r.attempts < self.cfg.max_attempts and self.cfg.hold_bytes > 0)
        self.held = len(head)
        if status == 101:
            self._become_tunnel(r, up)
        elif r.method == b"HEAD":
            self.response_done(up)          # llhttp would wait for a body that never comes
        else:
            self.deadline = self.loop.time() + self.cfg.response_timeout

    def express_answer(self, up: UpstreamConn, ans: "express.Answer") -> bool:
        """A whole plain answer in one read (``express.py``): committed and sent at once,
        as ``response_head``, ``response_body`` and ``response_done`` would. False: not
        taken (a HEAD, an HTTP/1.0 client, an interim answer before), nothing done."""
        r = self.cur
        if up is not self.up or r is None or not r.http11 or r.method == b"HEAD" \
                or self.interim or self.wbuf:
            return False
        st = self.st
        assert st is not None and r.info is not None
        set_cookie = None
        sticky = self.svc.sticky_name
        if sticky is not None and r.info.sticky != st.sticky_id:
            set_cookie = (sticky + b"=" + st.sticky_id.encode()
                          + b"; Path=/; HttpOnly; SameSite=Lax")
        r.keep_alive = keep = r.keep_alive and r.body_done and not self.lb.stopping
        self.transport.write(express.answer_head(ans, keep, set_cookie, self.resp_extra))
        self.resp_started = True
        self._detach(reuse=ans[3] and r.body_done)
        up.ended = True                     # released: any byte more is garbage
        now = self.loop.time()
        if self.router.record_response(st, ans[0], now):
            self.pool.close_idle(st.key)
        m = self.metrics
        m.answered(ans[0], now - r.t0, now)
        m.express += 1
        self._finish(r, now)
        return True

    def response_body(self, body: bytes) -> None:
        self.wbuf.append(chunk(body) if self.resp_down == BODY_CHUNKED else body)
        self.deadline = self.loop.time() + self.cfg.response_timeout
        if self.holding:
            self.held += len(body)
            if self.held > self.cfg.hold_bytes:
                self._stop_holding()        # too big to hold: commit, stream the rest

    def response_done(self, up: UpstreamConn) -> None:
        if up is not self.up or self.tunnel:
            return
        if self.interim:
            self.interim = False
            return
        r, st = self.cur, self.st
        assert r is not None and st is not None
        now = self.loop.time()
        if self.resp_down == BODY_CHUNKED:
            self.wbuf.append(LAST_CHUNK)
        # complete: commit (here too when the end came as a close, not a read)
        self.holding = False
        if self.hold_timer is not None:
            self._stop_holding()
        self.flush()
        # reusable only if the backend said so, saw the whole request body, and no
        # bytes of this answer can still be on their way (HEAD declaring a body)
        self._detach(reuse=self.up_keep and r.body_done and self.resp_up != BODY_CLOSE
                     and not (r.method == b"HEAD" and self.resp_up != BODY_NONE))
        if self.router.record_response(st, self.resp_status, now):
            self.pool.close_idle(st.key)
        self.metrics.answered(self.resp_status, now - r.t0, now)
        self._finish(r, now)

    def upstream_lost(self, up: UpstreamConn, exc: Optional[BaseException]) -> None:
        if up is not self.up:
            return
        if self.tunnel:
            self._detach(reuse=False)
            self._close()
            return
        r, st = self.cur, self.st
        assert r is not None and st is not None
        if self.resp_started:
            if self.resp_up == BODY_CLOSE and exc is None and not up.aborted:
                self.response_done(up)      # the close was the end of the body
            elif self.holding:              # nothing of it reached the client: retry
                self._unsend()
                self._failed(r, st, "reset", "backend closed the connection mid-answer",
                             eject=True)
            else:
                self._truncated("backend closed the connection mid-answer")
            return
        # A reused keep-alive connection may just have been closed by the backend
        # at the wrong moment: retry on a fresh one, eject only a fresh failure.
        reason = f"backend reset the connection ({exc})" if exc else "backend closed the connection"
        self._failed(r, st, "reset", reason, eject=not up.reused)

    def upstream_failed(self, up: UpstreamConn, kind: str, error: str) -> None:
        if up is not self.up:
            return
        if (self.resp_started and not self.holding) or self.tunnel:
            self._truncated(error)
            return
        r, st = self.cur, self.st
        assert r is not None and st is not None
        self._unsend()
        self._failed(r, st, kind, error, eject=True)

    def _unsend(self) -> None:
        """Forget an uncommitted answer (a retry or an error answer replaces it)."""
        self._stop_holding()
        self.wbuf = []
        self.resp_started = False
        self.interim = False

    def _stop_holding(self) -> None:
        self.holding = False
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None

    def _hold_expired(self) -> None:
        """A held answer took longer than ``hold_time``: commit it, stream the rest."""
        self.hold_timer = None
        if self.holding and not self.closed:
            self.holding = False
            self.flush()

    def _truncated(self, error: str) -> None:
        st = self.st
        self.metrics.upstream_error("reset")
        if st is not None:
            self.router.record_failure(st, self.loop.time(), error, eject=True)
        self._detach(reuse=False)
        self._close()              # the client sees the answer end early

    # --- websockets and other upgrades ---------------------------------------------------

    def _become_tunnel(self, r: Request, up: UpstreamConn) -> None:
        now = self.loop.time()
        self.tunnel = True
        up.tunnel = True
        self.metrics.tunnels += 1
        self.metrics.answered(101, now - r.t0, now)
        if self.st is not None:
            self.st.requests += 1
        for data in self.tunnel_buf or ():
            if data:
                up.transport.write(data)
        self.tunnel_buf = None
        self.deadline = now + self.cfg.tunnel_timeout
        self.resume_reading(PAUSE_UPGRADE | PAUSE_PIPELINE)

    def tunnel_data(self, data: bytes) -> None:
        self.flush()
        self.transport.write(data)
        self.deadline = self.loop.time() + self.cfg.tunnel_timeout

    # --- endings -------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand over what one upstream read produced (head + body + end): it goes out
        with the rest of the turn's writes, in one syscall (``outbox.py``)."""
        buf = self.wbuf
        if buf:
            if self.holding:                # uncommitted: keep it, but not for long
                if self.hold_timer is None:
                    self.hold_timer = self.loop.call_later(self.cfg.hold_time, self._hold_expired)
                return
            if len(buf) == 1:
                self.transport.write(buf[0])
            else:
                self.transport.writelines(buf)
            self.wbuf = []

    def _close(self) -> None:
        self.flush()
        self.transport.close()

    def _finish(self, r: Request, now: float) -> None:
        if self.queue and self.queue[0] is r:
            self.queue.popleft()
        self.cur = None
        if not r.keep_alive or not r.body_done or self.lb.stopping:
            self._close()
            return
        self.deadline = now + self.cfg.client_timeout
        if self.queue or self.stash:
            self.loop.call_soon(self._next)   # not from inside a parser callback
        else:
            self.resume_reading(PAUSE_PIPELINE)

    def _error(self, r: Request, status: int, detail: str) -> None:
        now = self.loop.time()
        self.metrics.answered(status, now - r.t0, now)
        r.keep_alive = r.keep_alive and r.body_done
        self.flush()
        self.transport.write(error_response(status, detail, r.keep_alive))
        self._finish(r, now)

    def on_deadline(self, now: float) -> None:
        """The sweeper found this connection past its deadline."""
        self.deadline = math.inf
        r = self.cur
        if self.tunnel or r is None:
            self._close()          # idle keep-alive, slow head, or quiet tunnel
        elif self.up is not None and (not self.resp_started or self.holding) \
                and self.st is not None:
            self._unsend()
            self._failed(r, self.st, "timeout", f"backend did not answer within "
                         f"{self.cfg.response_timeout:g}s", eject=True)
        elif self.up is not None:
            self._truncated("backend stalled mid-answer")
        else:
            self._close()
