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
- **At most ``accept_batch`` (16) accepts per turn of the loop**, for the same reason.
- **Garbage before a ClientHello** (plain HTTP to 443, random bytes) is told by
  its first bytes (not a TLS handshake record) before any TLS transport is made
  for it, or fails the first TLS record, and is closed at once, counted as
  ``garbage``.
- A finished handshake becomes a normal connection of the proxy, under its
  ``max_connections``.

Counters (``stats``): ``handshakes`` (completed), ``handshake_failures`` by kind
(``garbage``, ``timeout``, ``shed``, ``error``, ``reset``), ``in_progress``,
``paused`` (times accepting stopped at the cap).

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Any, Callable, Dict, Optional

log = logging.getLogger("swarmlet.ingress.tls")

GARBAGE_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER",
                   "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD", "HTTPS_PROXY_REQUEST",
                   "NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW")


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
    def __init__(self, host: str, port: int, factory: Callable[[], asyncio.Protocol],
                 context: ssl.SSLContext, *, handshake_timeout: float = 10.0,
                 max_handshakes: int = 256, shed_after: float = 1.0, accept_batch: int = 16,
                 backlog: int = 1024, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.shed_after = shed_after
        self.accept_batch = accept_batch
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.loop: Any = None
        self.sock: Optional[socket.socket] = None
        self.pending: Dict["asyncio.Task[None]", float] = {}    # handshakes: task -> started
        self.reading = False
        self.closed = False
        self.handshakes = 0
        self.failures: Dict[str, int] = {}
        self.paused = 0
        self._retry: Any = None

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
        if self._retry is not None:
            self._retry.cancel()
        if self.sock is not None:
            self.sock.close()
        for task in list(self.pending):
            task.cancel()

    def stats(self) -> Dict[str, Any]:
        return {"handshakes": self.handshakes, "handshake_failures": dict(self.failures),
                "in_progress": len(self.pending), "paused": self.paused}

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
        now = self.loop.time()
        for _ in range(self.accept_batch):
            if len(self.pending) >= self.max_handshakes and not self._shed(now):
                self.paused += 1
                self._pause()           # resumed when a handshake ends, or to shed one
                self._arm_shed(now)
                return
            try:
                conn, _ = self.sock.accept()          # type: ignore[union-attr]
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
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            task = self.loop.create_task(self._handshake(conn))
            self.pending[task] = now

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
        task = oldest[0]
        del self.pending[task]
        self._count("shed")
        task.cancel()
        return True

    async def _first_bytes(self, conn: socket.socket) -> bytes:
        """Wait until ``conn`` is readable and peek at what came (b"" at EOF)."""
        fut = self.loop.create_future()
        fd = conn.fileno()
        self.loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await asyncio.wait_for(fut, self.handshake_timeout)
        finally:
            self.loop.remove_reader(fd)
        return conn.recv(3, socket.MSG_PEEK)

    async def _handshake(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        try:
            # Garbage is told from a TLS record by its first bytes (a handshake record:
            # 0x16 0x03), before any TLS machinery is built for it: a flood of plain HTTP or
            # random bytes then costs an accept and a peek, not a TLS transport each.
            head = await self._first_bytes(conn)
            if not head or head[0] != 0x16 or (len(head) > 1 and head[1] != 0x03):
                try:
                    conn.recv(65536)    # read what came: a close then ends with FIN, not RST
                except OSError:
                    pass
                conn.close()
                self._count("garbage" if head else "reset")
                return
            await self.loop.connect_accepted_socket(
                self.factory, conn, ssl=self.context,
                ssl_handshake_timeout=self.handshake_timeout)
            self.handshakes += 1
        except asyncio.CancelledError:
            conn.close()                # shed (counted there) or closing
        except Exception as exc:  # every failure of a stranger's handshake is counted, not raised
            conn.close()
            self._count(failure_kind(exc))
        finally:
            self.pending.pop(task, None)   # type: ignore[arg-type]
            if not self.reading and len(self.pending) < self.max_handshakes:
                self._resume()

    def _count(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
