"""A recording backend: a real loopback HTTP/1.1 server that keeps every byte it
receives, and a strict RFC 9112 parser that says which requests those bytes are.

The strict parser is the reference for "what the backend saw": request line,
headers (CRLF only, token names), and exactly one framing (Content-Length
digits or ``Transfer-Encoding: chunked``); anything else is a parse error.
It is deliberately not llhttp, the parser the proxy under test uses.

Each request the recorder parses is answered ``200`` with a body naming it
(``seen <n> <method> <target> <body bytes>``), so a client can tell which
request an answer belongs to. A target ``/r/<name>`` is answered with the
crafted bytes registered under ``responses[name]`` instead (responses with
conflicting framing); ``/ws`` upgrades (after ``upgrade_delay`` s) and then
discards what it gets.

Used by the LB tests, the conformance harness and the fuzz (``tests/lbconf``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/(1\.[01])\Z")
MAX_RECORD = 8 * 1024 * 1024          # bytes kept per connection


class StrictError(Exception):
    pass


@dataclass
class Seen:
    """One request as the strict parser read it."""

    method: str
    target: str
    version: str
    headers: List[Tuple[str, str]]
    body: bytes
    framing: str                       # "none" | "length" | "chunked"

    def header(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def describe(self) -> str:
        extra = f" {self.framing}={len(self.body)}" if self.framing != "none" else ""
        return f"{self.method} {self.target}{extra}"


def parse_request(buf: bytes) -> Optional[Tuple[Seen, int]]:
    """(request, bytes used) from the start of ``buf``; None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise StrictError("head over 64 KiB")
        return None
    lines = buf[:end].split(b"\r\n")
    m = _LINE.match(lines[0])
    if m is None:
        raise StrictError(f"bad request line {lines[0][:80]!r}")
    headers: List[Tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name) or b"\n" in line or b"\r" in line:
            raise StrictError(f"bad header line {line[:80]!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    seen = Seen(m.group(1).decode(), m.group(2).decode("latin-1"), m.group(3).decode(),
                headers, b"", "none")
    lengths, codings = seen.header("content-length"), seen.header("transfer-encoding")
    pos = end + 4
    if lengths and codings:
        raise StrictError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise StrictError("framing header repeated")
    if codings:
        if codings[0].lower() != "chunked":
            raise StrictError(f"Transfer-Encoding {codings[0]!r}")
        body = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = buf[pos:eol].split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise StrictError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            pos = eol + 2
            if size == 0:
                tend = buf.find(b"\r\n\r\n", pos - 2)
                if tend < 0:
                    return None
                pos = tend + 4
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise StrictError("chunk data not followed by CRLF")
            pos += size + 2
        seen.body, seen.framing = bytes(body), "chunked"
    elif lengths:
        if not lengths[0].isdigit():
            raise StrictError(f"Content-Length {lengths[0]!r}")
        n = int(lengths[0])
        if len(buf) < pos + n:
            return None
        seen.body, seen.framing = buf[pos:pos + n], "length"
        pos += n
    return seen, pos


@dataclass
class Conn:
    """One connection the backend accepted."""

    raw: bytearray = field(default_factory=bytearray)
    requests: List[Seen] = field(default_factory=list)
    error: str = ""
    upgraded: bool = False

    @property
    def leftover(self) -> int:
        """Bytes after the last complete request (a partial one, cut)."""
        return len(self.raw) - self._used

    _used: int = 0


class Recorder:
    """The recording backend. ``await Recorder().start()``; ``.port``; ``.conns``."""

    def __init__(self) -> None:
        self.conns: List[Conn] = []
        self.events: List[Tuple[str, object]] = []
        self.responses: Dict[str, bytes] = {}
        self.upgrade_delay = 0.0
        self.server: Optional[asyncio.AbstractServer] = None
        self.port = 0
        self.count = 0
        self.max_record = MAX_RECORD
        self._writers: Set[asyncio.StreamWriter] = set()
        self.keep_conns = True

    async def start(self, host: str = "127.0.0.1") -> "Recorder":
        self.server = await asyncio.start_server(self._handle, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in self._writers:
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    def mark(self) -> int:
        """A point in the event log: what happens after it is ``since(mark)``."""
        return len(self.events)

    def since(self, mark: int = 0) -> List[Tuple[str, object]]:
        """Events after ``mark``: ("request", Seen), ("error", str), ("partial", bytes)."""
        return self.events[mark:]

    def requests(self, mark: int = 0) -> List[Seen]:
        return [v for k, v in self.events[mark:] if k == "request"]  # type: ignore[misc]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn()
        if self.keep_conns:
            self.conns.append(conn)
        self._writers.add(writer)
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if len(conn.raw) < self.max_record:
                    conn.raw += data[:self.max_record - len(conn.raw)]
                if conn.upgraded:
                    continue
                buf += data
                while True:
                    try:
                        got = parse_request(buf)
                    except StrictError as exc:
                        conn.error = str(exc)
                        self.record("error", conn.error)
                        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                        return
                    if got is None:
                        break
                    seen, used = got
                    buf = buf[used:]
                    conn._used = len(conn.raw) - len(buf)
                    conn.requests.append(seen)
                    self.record("request", seen)
                    self.count += 1
                    await self._answer(seen, writer, conn)
                    if conn.upgraded:
                        break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if buf and not conn.upgraded and not conn.error:
                self.record("partial", buf[:200])
            self._writers.discard(writer)
            writer.close()

    def record(self, kind: str, what: object) -> None:
        """Keep an event (a subclass may check it instead, the fuzz does)."""
        self.events.append((kind, what))

    async def _answer(self, seen: Seen, writer: asyncio.StreamWriter, conn: Conn) -> None:
        if seen.target.startswith("/r/") and seen.target[3:] in self.responses:
            answer = self.responses[seen.target[3:]]
            writer.write(answer)
            head = answer.split(b"\r\n\r\n", 1)[0].lower()
            if b"content-length" not in head and b"transfer-encoding" not in head \
                    and b" 101 " not in head:
                await writer.drain()
                writer.close()              # close-delimited: the close ends it
                conn.upgraded = True        # nothing more is read as HTTP
        elif seen.target.startswith("/ws") and seen.header("upgrade"):
            if self.upgrade_delay:
                await asyncio.sleep(self.upgrade_delay)
            conn.upgraded = True
            key = (seen.header("sec-websocket-key") or [""])[0]
            accept = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
        else:
            n = len(conn.requests)
            body = f"seen {n} {seen.method} {seen.target} {len(seen.body)}".encode()
            if seen.method == "HEAD":
                body = b""
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
