"""The TLS listener: its own accept loop, so that handshakes are counted, bounded and cut.

``loop.create_server(ssl=...)`` would hand us a connection only after its
handshake: until then nothing could count it, cap it or tell a slow one from a
fast one, and a flood of handshakes would take the loop with no say of ours.
So the listening socket is ours: it is read with ``add_reader``, and each
accepted socket is handed to ``loop.connect_accepted_socket(ssl=...)`` (asyncio's
or uvloop's TLS, in C for the crypto) with a handshake timeout.

- **A handshake has ``handshake_timeout`` (10 s) to finish**, from the accept:
  a client that sends its ClientHello a byte at a time, or nothing, is cut.
- **At most ``max_handshakes`` (256) are in progress.** Past that the listener
  stops accepting (the kernel's backlog holds the rest, then SYNs wait), so
  handshake work per loop turn is bounded and clients already connected keep
  their share of the loop. While at the cap, a new connection waiting makes the
  oldest handshake that has lasted ``shed_after`` (1 s: a real client needs a
  few round trips) give way, so slow handshakes cannot hold every slot for
  ten seconds.
- **At most ``max_handshakes_per_source`` (64, a quarter of the slots) from one
  source**: an IPv4 address, or an IPv6 /64 (what one host or one customer can
  choose its addresses from). A connection over it is cut at the accept, with no
  peek, task or transport, and counted as ``source``. One flooder then holds at
  most a quarter of the slots and every other client finds the rest free, where
  without it a slow flood from one machine held them all and newcomers waited
  for a shed; a NAT's many users share one address, and a quarter of the slots
  at a time is still hundreds of new connections a second from it.
- **A bounded slice of each loop turn for new connections**: at most
  ``accept_batch`` (4) accepts and ``accept_slice`` (0.2 ms) per turn, and at most
  ``handshakes_per_turn`` (4) TLS handshakes started per turn (a handshake's
  crypto, about 0.25 ms of a core, runs in the turn its transport reads the
  ClientHello). The rest waits in the kernel's backlog or in the queue of
  hellos, its timeout running. A flood then shares each turn with the requests
  of the connections already served instead of taking turns of its own (16
  accepts a turn, each with a task, held up other clients' p99 7.8x in
  bench/lb/tlsflood's garbage flood). One handshake a turn cost a turn of the
  loop per handshake: 1,800 against 2,370 new connections a second with 4
  (bench/lb/run's handshake row), and other clients' p99 in tlsflood's
  handshake flood the same (1.95-2.06 ms against 1.99-2.01 ms).
- **Garbage before a ClientHello** (plain HTTP to 443, random bytes, an SSH
  banner) is told by its first six bytes (``may_begin_client_hello``: not a TLS
  handshake record, or a record no ClientHello begins: a length over 2^14, another
  handshake type), peeked at the accept: most clients, floods included, have sent
  them by the time the kernel's backlog hands them over, so it is cut there, with
  no task, future or transport made for it; a connection with nothing to read yet
  gets a reader (and one timer for all of them, the oldest's). Bytes that look like a handshake
  but are not fail the first TLS record. Both are counted as ``garbage``.
- A finished handshake becomes a normal connection of the proxy, under its
  ``max_connections``.

Counters (``stats``): ``handshakes`` (completed), ``handshake_failures`` by kind
(``garbage``, ``timeout``, ``shed``, ``source``, ``error``, ``reset``), ``in_progress``,
``paused`` (times accepting stopped at the cap), ``sources`` (sources with a handshake
in progress: at most ``max_handshakes``, so the table is bounded).

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Set

log = logging.getLogger("swarmlet.ingress.tls")

GARBAGE_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER",
                   "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD", "HTTPS_PROXY_REQUEST",
                   "NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW")


# RFC 8446 5.1: a record's length is at most 2^14 (TLS 1.2's ciphertext allowance, 2^14 +
# 2048, is for protected records; a ClientHello is plaintext)
MAX_PLAIN_RECORD = 1 << 14


def may_begin_client_hello(head: bytes) -> bool:
    """Whether ``head``, the first 1-6 bytes a client sent, can begin a TLS ClientHello: a
    handshake record (22) of version 3.x, a length in 1..2^14, and a ClientHello (1) in it.
    Fewer bytes are judged as far as they go. Pure."""
    n = len(head)
    if n == 0 or head[0] != 0x16 or (n > 1 and head[1] != 0x03):
        return False
    if n > 4 and not 0 < (head[3] << 8 | head[4]) <= MAX_PLAIN_RECORD:
        return False
    return n < 6 or head[5] == 0x01


def source_of(peer: Any) -> str:
    """The source a connection's handshakes are counted under: its IPv4 address (an
    IPv4-mapped IPv6 one too), or its IPv6 /64. Pure."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    if ":" not in host:
        return host
    try:
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


def failure_kind(exc: BaseException) -> str:
    """How a handshake failed, for the counters."""
    if isinstance(exc, ssl.SSLError):
        reason = (getattr(exc, "reason", None) or str(exc)).upper()
        return "garbage" if any(r in reason for r in GARBAGE_REASONS) else "error"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionAbortedError) and any(
            w in str(exc).lower() for w in ("timeout", "timed out", "longer than")):
        return "timeout"                # asyncio's sslproto reports its handshake timeout so
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return "reset"
    return "error"


class TLSServer:
    def __init__(self, host: str, port: int, factory: Callable[[], asyncio.BaseProtocol],
                 context: ssl.SSLContext, *, handshake_timeout: float = 10.0,
                 max_handshakes: int = 256, max_handshakes_per_source: int = 64,
                 shed_after: float = 1.0, accept_batch: int = 4,
                 accept_slice: float = 0.0002, handshakes_per_turn: int = 4,
                 backlog: int = 1024, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.max_per_source = max_handshakes_per_source
        self.shed_after = shed_after
        self.accept_batch = accept_batch
        self.accept_slice = accept_slice
        self.handshakes_per_turn = handshakes_per_turn
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.loop: Any = None
        self.sock: Optional[socket.socket] = None
        # every connection accepted and not yet a finished TLS connection, oldest first:
        # socket -> accepted at (loop time); it is in one of three stages below
        self.pending: Dict[socket.socket, float] = {}
        self.waiting: Dict[socket.socket, float] = {}         # 1. no byte yet: a reader each
        self.hellos: Deque[socket.socket] = deque()           # 2. a ClientHello begun: queued
        self.tasks: Dict[socket.socket, "asyncio.Task[None]"] = {}   # 3. in the TLS handshake
        self.running: Set[socket.socket] = set()   # tasks that began (they close their socket)
        # the source of every connection in progress, and how many each source has: only
        # sources with one in progress are kept, so both are bounded by max_handshakes
        self.source: Dict[socket.socket, str] = {}
        self.per_source: Dict[str, int] = {}
        self.reading = False
        self.closed = False
        self.handshakes = 0
        self.failures: Dict[str, int] = {}
        self.paused = 0
        self._retry: Any = None
        self._expiry: Any = None            # the timer of the oldest connection waiting
        self._starting = False              # _start_hellos is scheduled

    @property
    def bound_port(self) -> int:
        return self.sock.getsockname()[1] if self.sock is not None else self.port

    def start(self) -> None:
        """Bind and listen now (``OSError`` if the port is taken), then accept as the loop runs."""
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._resume()

    def close(self) -> None:
        """Stop accepting and cut the handshakes in progress (finished connections are the
        proxy's to close)."""
        self.closed = True
        self._pause()
        for timer in (self._retry, self._expiry):
            if timer is not None:
                timer.cancel()
        if self.sock is not None:
            self.sock.close()
        for conn in list(self.pending):
            self._drop(conn, None)

    def stats(self) -> Dict[str, Any]:
        return {"handshakes": self.handshakes, "handshake_failures": dict(self.failures),
                "in_progress": len(self.pending), "paused": self.paused,
                "sources": len(self.per_source)}

    # --- accepting --------------------------------------------------------------------

    def _pause(self) -> None:
        if self.reading and self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def _resume(self) -> None:
        if not self.reading and not self.closed and self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self.reading = True

    def _on_readable(self) -> None:
        # A bounded slice of the loop per turn for new connections: at most accept_batch
        # accepts and accept_slice seconds; the rest stays in the kernel's backlog (the
        # socket stays readable: the next turn goes on), so a flood of connections is
        # interleaved with the work of connections already served instead of delaying it.
        now = self.loop.time()
        stop = time.perf_counter() + self.accept_slice
        for _ in range(self.accept_batch):
            if len(self.pending) >= self.max_handshakes and not self._shed(now):
                self.paused += 1
                self._pause()           # resumed when a handshake ends, or to shed one
                self._arm_shed(now)
                return
            try:
                conn, peer = self.sock.accept()       # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop for a moment rather than spin on the readable fd
                    log.warning("TLS port %d: cannot accept (%s); pausing 0.1s", self.port,
                                exc.strerror)
                    self._pause()
                    self._retry = self.loop.call_later(0.1, self._resume)
                return
            src = source_of(peer)
            held = self.per_source.get(src, 0)
            if held >= self.max_per_source:
                conn.close()            # this source holds its share: the rest are others'
                self._count("source")
                continue
            self.per_source[src] = held + 1
            self.source[conn] = src
            conn.setblocking(False)
            self.pending[conn] = now
            self._sort(conn)
            if time.perf_counter() >= stop:
                return

    def _sort(self, conn: socket.socket) -> None:
        """Tell a connection by its first bytes, without a task or a transport: most floods
        have sent them by the time they are accepted (the kernel completed the TCP handshake
        and queued their bytes meanwhile), so garbage is cut right here."""
        try:
            head = conn.recv(6, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if conn not in self.waiting:            # nothing yet: wait for it, unbounded
                self.waiting[conn] = self.pending[conn]   # by nothing but the timeout
                self.loop.add_reader(conn.fileno(), self._sort_waiting, conn)
                if self._expiry is None:
                    self._arm_expiry()
            return
        except OSError:
            head = b""
        if conn in self.waiting:
            del self.waiting[conn]
            self.loop.remove_reader(conn.fileno())
        if not may_begin_client_hello(head):
            # Not the start of a ClientHello: plain HTTP, random bytes, an SSH banner, or a
            # record header with a length no hello has. Without this last check a third of
            # bench/lb/tlsflood's garbage (b"\x16\x03\x01\xff\xff" + noise) took a task, a
            # transport and an SSL object each before OpenSSL refused it. Read what came, so
            # that the close ends with a FIN, not a reset.
            if head:
                try:
                    conn.recv(65536)
                except OSError:
                    pass
            self._drop(conn, "garbage" if head else "reset")
            return
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.hellos.append(conn)
        if not self._starting:
            self._starting = True
            self.loop.call_soon(self._start_hellos)

    def _sort_waiting(self, conn: socket.socket) -> None:
        if conn in self.waiting:
            self._sort(conn)

    def _start_hellos(self) -> None:
        """Start at most ``handshakes_per_turn`` TLS handshakes per turn of the loop: the
        crypto of a handshake (about 0.25 ms of one core) runs when its transport reads the
        ClientHello, so this bounds how much of it one turn can hold up the requests of
        connections already served. A handshake waiting here has its timeout running."""
        self._starting = False
        for _ in range(self.handshakes_per_turn):
            while self.hellos and self.hellos[0] not in self.pending:
                self.hellos.popleft()               # shed or timed out meanwhile
            if not self.hellos:
                return
            conn = self.hellos.popleft()
            self.tasks[conn] = self.loop.create_task(self._handshake(conn))
        if self.hellos:
            self._starting = True
            self.loop.call_soon(self._start_hellos)

    def _arm_expiry(self) -> None:
        """One timer for every connection waiting for its first bytes: the oldest's."""
        self._expiry = None
        now = self.loop.time()
        for conn, t0 in list(self.waiting.items()):   # oldest first
            if now - t0 < self.handshake_timeout:
                self._expiry = self.loop.call_later(t0 + self.handshake_timeout - now,
                                                    self._arm_expiry)
                return
            self._drop(conn, "timeout")

    def _arm_shed(self, now: float) -> None:
        """While paused at the cap: look at the queue again when the oldest handshake can
        be shed (if a connection is waiting then, ``_on_readable`` sheds it)."""
        if self._retry is not None:
            self._retry.cancel()
        oldest = next(iter(self.pending.values()), now)
        self._retry = self.loop.call_later(max(0.01, oldest + self.shed_after - now), self._resume)

    def _shed(self, now: float) -> bool:
        """At the cap: cut the oldest handshake if it has lasted ``shed_after``."""
        oldest = next(iter(self.pending.items()), None)   # dicts keep insertion order
        if oldest is None or now - oldest[1] < self.shed_after:
            return False
        self._drop(oldest[0], "shed")
        return True

    def _drop(self, conn: socket.socket, kind: Optional[str]) -> None:
        """Cut a connection in progress, whatever its stage, and count why."""
        if self.pending.pop(conn, None) is None:
            return
        if kind is not None:
            self._count(kind)
        if self.waiting.pop(conn, None) is not None:
            self.loop.remove_reader(conn.fileno())
        task = self.tasks.pop(conn, None)
        if task is not None:
            task.cancel()
        if conn not in self.running:        # a running handshake closes it as it ends
            conn.close()                    # (queued hellos are skipped when popped)
        self._freed(conn)

    def _freed(self, conn: socket.socket) -> None:
        src = self.source.pop(conn, None)
        if src is not None:
            left = self.per_source[src] - 1
            if left:
                self.per_source[src] = left
            else:
                del self.per_source[src]
        if not self.reading and len(self.pending) < self.max_handshakes:
            self._resume()

    async def _handshake(self, conn: socket.socket) -> None:
        self.running.add(conn)
        try:
            remaining = self.pending.get(conn, 0.0) + self.handshake_timeout - self.loop.time()
            await self.loop.connect_accepted_socket(
                self.factory, conn, ssl=self.context,
                ssl_handshake_timeout=max(0.01, remaining))
            self.handshakes += 1
        except asyncio.CancelledError:
            conn.close()                # shed (counted there) or closing
        except Exception as exc:  # every failure of a stranger's handshake is counted, not raised
            conn.close()
            self._count(failure_kind(exc))
        finally:
            self.running.discard(conn)
            self.tasks.pop(conn, None)
            if self.pending.pop(conn, None) is not None:
                self._freed(conn)

    def _count(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
