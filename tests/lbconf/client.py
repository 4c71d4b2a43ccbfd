"""The client side of the LB tests: send raw bytes, read what comes back, and split
it into responses with a strict parser (so a desync shows as leftover bytes or
an answer that names another request).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\Z")


@dataclass
class Resp:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def exchange(port: int, data: bytes, *, timeout: float = 3.0, idle: float = 0.5,
                   then: Optional[bytes] = None, host: str = "127.0.0.1",
                   answers: int = 0) -> Tuple[bytes, bool]:
    """Send ``data`` (and ``then`` after the first answer arrived, on the same
    connection); return (everything received, closed by the peer). It reads until the
    peer closes or is ``idle`` that long, or, with ``answers``, until that many whole
    answers came (a GET's: what the victim request of each case waits for)."""
    reader, writer = await asyncio.open_connection(host, port)
    got = bytearray()
    closed = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        writer.write(data)
        sent_then = then is None
        while loop.time() < deadline:
            try:
                piece = await asyncio.wait_for(reader.read(65536),
                                               min(idle, max(0.01, deadline - loop.time())))
            except asyncio.TimeoutError:
                if not sent_then and got:
                    writer.write(then)  # type: ignore[arg-type]
                    sent_then = True
                    continue
                break
            except ConnectionError:
                closed = True
                break
            if not piece:
                closed = True
                break
            got += piece
            if answers and len(parse_responses(bytes(got))[0]) >= answers:
                break
    finally:
        writer.transport.abort()
    return bytes(got), closed


def parse_responses(raw: bytes, methods: Sequence[str] = ()) -> Tuple[List[Resp], bytes]:
    """(responses, bytes left that are not a complete response). ``methods`` are
    the requests' methods in order (a HEAD answer has no body)."""
    out: List[Resp] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = raw[pos:end].split(b"\r\n")
        m = _STATUS.match(lines[0])
        if m is None:
            break
        status = int(m.group(1))
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        resp = Resp(status, headers, b"")
        body_at = end + 4
        method = methods[len(out)] if len(out) < len(methods) else "GET"
        lengths, te = resp.header("content-length"), resp.header("transfer-encoding")
        if len(lengths) > 1 or (lengths and te):
            break                           # ambiguous framing: stop here, count as leftover
        if method == "HEAD" or status < 200 or status in (204, 304):
            pos = body_at
            if status < 200 and status != 101:
                continue                    # interim: not an answer of its own
        elif te:
            if [t.strip().lower() for t in te[0].split(",")] != ["chunked"]:
                break
            body = bytearray()
            p = body_at
            ok = False
            while True:
                eol = raw.find(b"\r\n", p)
                if eol < 0:
                    break
                try:
                    size = int(raw[p:eol].split(b";")[0], 16)
                except ValueError:
                    break
                p = eol + 2
                if size == 0:
                    tend = raw.find(b"\r\n\r\n", p - 2)
                    if tend >= 0:
                        p, ok = tend + 4, True
                    break
                body += raw[p:p + size]
                p += size + 2
            if not ok:
                break
            resp.body, pos = bytes(body), p
        elif lengths:
            n = int(lengths[0])
            if len(raw) < body_at + n:
                break
            resp.body, pos = raw[body_at:body_at + n], body_at + n
        else:
            resp.body, pos = raw[body_at:], len(raw)      # close-delimited
        out.append(resp)
        if status == 101:
            pos = len(raw)
            break
    return out, raw[pos:]
