"""Connections to backends: one asyncio Protocol each, and their keep-alive pool.

An ``UpstreamConn`` carries one exchange at a time for its ``owner`` (the
client-side protocol in ``downstream.py``): it parses the response with
httptools (llhttp, in C) and hands head, body pieces and end to the owner by
plain method calls, with no futures or tasks on the way. A fresh parser per
exchange keeps a half-parsed answer (a HEAD response, an aborted one) from
leaking into the next.

The pool keeps idle connections per backend in a LIFO stack: the hottest
connection is reused first and the cold ones age out after
``upstream_idle_timeout`` (shorter than the usual 5 s backend keep-alive, so we
rarely pick a connection the backend is closing). Only a pool miss costs a
connect, the slow path, driven by a task.

A backend is held to the same rules as a client: its head is fed in cuts
within ``max_response_head_size`` (over it: the attempt fails, 502), and so
are chunk-size lines and trailers; bytes after the end of an answer mean the
connection cannot be trusted for another exchange, so it is closed, never
pooled.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from . import express
from .config import LBConfig
from .framing import next_cut
from .outbox import HeldTransport
from .routing import BackendState, Key

if TYPE_CHECKING:  # pragma: no cover
    from .downstream import Downstream


class UpstreamConn(asyncio.Protocol):
    __slots__ = ("pool", "st", "transport", "owner", "parser", "reason", "headers",
                 "reused", "idle_since", "tunnel", "closed", "read_paused", "aborted",
                 "in_head", "budget", "tail", "ended", "chunked")

    def __init__(self, pool: "Pool", st: BackendState) -> None:
        self.pool = pool
        self.st = st
        self.transport: Any = None
        self.owner: Optional["Downstream"] = None
        self.parser: Any = None
        self.reason = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.reused = False
        self.idle_since = 0.0
        self.tunnel = False
        self.closed = False
        self.read_paused = False
        self.aborted = False        # cut by us: a close is then never a body's end
        self.in_head = True         # feeding a head (or chunk lines): cut within budget
        self.budget = 0
        self.tail = b""
        self.ended = False          # the answer ended: any byte more is garbage
        self.chunked = False

    # --- driven by the owner ----------------------------------------------------

    def begin(self, owner: "Downstream") -> None:
        self.owner = owner
        if self.parser is None or not self.ended:
            self.parser = HttpResponseParser(self)
        # else: the last answer was parsed to its end (llhttp is then at the start of the next
        # message, as after a keep-alive answer): the parser is reused, a fresh one is not
        # needed to keep a half-parsed answer out (one cost about 1 us a request)
        self.in_head = True
        self.budget = 0
        self.tail = b""
        self.ended = False
        self.chunked = False

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    # --- asyncio ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        # writes go out at the end of the loop turn, with the turn's others (outbox.py)
        self.transport = HeldTransport(transport, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:           # idle: nothing may arrive unasked (a 408, a close)
            self.transport.close()
            return
        if self.tunnel:
            owner.tunnel_data(data)
            return
        limit = self.pool.config.max_response_head_size
        if self.in_head and not self.budget and not self.chunked:
            ans = express.answer(data, limit)   # one whole plain answer: no llhttp
            if ans is not None and owner.express_answer(self, ans):
                return
        piece = b""
        try:
            while data:
                if self.in_head or self.chunked:
                    n = next_cut(data, self.tail, limit - self.budget)
                    self.budget += n
                    self.tail = (self.tail + data[:n])[-3:] if n < 3 else data[n - 3:n]
                else:
                    n = len(data)
                if n >= len(data):
                    piece, data = data, b""
                else:
                    piece, data = data[:n], data[n:]
                self.parser.feed_data(piece)
                if self.budget >= limit and self.owner is not None and not self.ended:
                    self.owner.upstream_failed(self, "invalid", f"backend sent a head (or "
                                               f"chunk line) over {limit} bytes")
                    break
                if self.owner is None or self.closed:
                    break
        except HttpParserUpgrade as exc:
            rest = piece[exc.args[0]:] + data
            if rest and self.tunnel and self.owner is not None:
                self.owner.tunnel_data(rest)
        except HttpParserError as exc:
            if self.owner is not None:
                self.owner.upstream_failed(self, "invalid", f"invalid answer from backend ({exc})")
            elif not self.closed:
                self.transport.close()      # garbage after an answer: never reuse
        owner.flush()                   # the owner may have let go of us meanwhile

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self.pool.lost(self)
        owner = self.owner
        if owner is not None:
            owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.pause_reading(2)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.resume_reading(2)

    # --- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.ended:              # bytes after the answer's end: not to be trusted
            self.transport.close()
        self.reason = b""
        self.headers = []
        self.chunked = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:            # trailers are dropped
            self.headers.append((name, value))
            if len(name) == 17 and name.lower() == b"transfer-encoding":
                self.chunked = True     # its chunk lines are fed in cuts, as a head is

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.budget = 0
        self.tail = b""
        if self.owner is not None:
            self.owner.response_head(self, self.parser.get_status_code(), self.reason,
                                     self.headers, self.parser.should_keep_alive())

    def on_chunk_header(self) -> None:
        self.budget = 0

    def on_body(self, body: bytes) -> None:
        self.budget = 0
        if self.owner is not None:
            self.owner.response_body(body)

    def on_message_complete(self) -> None:
        owner = self.owner
        self.in_head = True         # an interim answer (100) is followed by the real one
        self.budget = 0
        self.tail = b""
        self.chunked = False
        if owner is not None:
            owner.response_done(self)
        if self.owner is None:
            self.ended = True       # released: the exchange is over


class Pool:
    """Idle keep-alive connections per backend, plus every open one (to close)."""

    def __init__(self, config: LBConfig) -> None:
        self.config = config
        self.idle: Dict[Key, List[UpstreamConn]] = {}
        self.open: Set[UpstreamConn] = set()
        self.connects = 0

    def get(self, st: BackendState) -> Optional[UpstreamConn]:
        stack = self.idle.get(st.key)
        while stack:
            up = stack.pop()
            if not up.closed and not up.transport.is_closing():
                up.reused = True
                return up
        return None

    async def connect(self, st: BackendState) -> UpstreamConn:
        """A fresh connection; raises OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        self.connects += 1
        _, up = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConn(self, st), st.backend.host, st.backend.port),
            self.config.connect_timeout)
        self.open.add(up)
        return up

    def put(self, up: UpstreamConn, now: float) -> None:
        up.owner = None
        if up.closed or up.tunnel or up.st.draining:
            up.transport.close()
            return
        stack = self.idle.setdefault(up.st.key, [])
        if len(stack) >= self.config.max_idle_per_backend:
            up.transport.close()
            return
        up.resume_reading()
        up.idle_since = now
        stack.append(up)

    def lost(self, up: UpstreamConn) -> None:
        self.open.discard(up)
        stack = self.idle.get(up.st.key)
        if stack and up in stack:
            stack.remove(up)

    def close_idle(self, key: Key) -> None:
        for up in self.idle.pop(key, []):
            up.transport.close()

    def abort_backend(self, key: Key) -> None:
        """Drain deadline passed: cut every connection to it, busy or not."""
        self.close_idle(key)
        for up in [u for u in self.open if u.st.key == key]:
            up.aborted = True
            up.transport.abort()

    def sweep(self, now: float) -> None:
        limit = now - self.config.upstream_idle_timeout
        for stack in self.idle.values():
            # the stack is oldest-first: close from the bottom until a fresh one
            n = 0
            while n < len(stack) and stack[n].idle_since < limit:
                stack[n].transport.close()
                n += 1
            if n:
                del stack[:n]

    def close_all(self) -> None:
        self.idle.clear()
        for up in list(self.open):
            up.aborted = True
            up.transport.abort()
