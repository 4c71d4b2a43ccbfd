"""Fuzz the load balancer: mutated requests and mutated answers through a real
swarmlet LB process to a recording backend, with invariants checked on both
sides, and the LB's RSS sampled as it goes.

Every request carries an id in its target (``/f/<client>.<client>/<k>``, the
client twice so a mutated digit makes no id); smuggling attempts hide
``/SMUG/<client>.<client>/<k>`` in a body; a target under ``/fr/`` makes
the backend answer with a mutated answer (conflicting framing, unknown
codings, extra bytes, ``Connection: Content-Length``...) whose body names the
id. The invariants:

- **framing**: the backend's strict parser never fails on what the LB sends,
  and never sees a ``/SMUG/`` request whose answer did not reach the client
  that sent those bytes (so it was smuggled, not pipelined);
- **refused means not forwarded**: a request the LB refused (its own error
  answer) was never seen complete by the backend;
- **no crossed answers**: every answer a client gets names one of its own ids;
- **clean answers**: what a client receives always parses as answers (a cut
  stream may end early, never in garbage);
- **flat memory**: the LB's RSS after the warm-up stays within a bound.

``run(n, seed)`` returns a report; bench/lb/fuzz runs 100,000, the test suite
a few thousand.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from .client import parse_responses
from .peers import Proxy, rss_bytes
from .recorder import Conn, Recorder, Seen

# an id is written twice (``/f/7.7/2``): a mutation that changes a digit makes it no id
_ID = re.compile(rb"/(?:f|fr|SMUG)/(\d+)\.(\d+)/(\d+)")


def _ids(text: bytes):
    """(client, k) of each intact id in ``text``."""
    for m in _ID.finditer(text):
        if m.group(1) == m.group(2):
            yield int(m.group(1)), int(m.group(3))
LB_ERROR = re.compile(rb"\d{3} [A-Za-z -]+: ")          # the proxy's own error bodies
REFUSALS = frozenset({400, 405, 414, 431, 501, 505})   # what it refuses itself

NASTY_HEADERS = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: xchunked", b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding : chunked",
    b"Transfer-Encoding: chunked, identity", b"Transfer_Encoding: chunked",
    b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 99", b"Content-Length: -1",
    b"Content-Length: 5, 5", b"Connection: Content-Length", b"Connection: Transfer-Encoding",
    b"Connection: Host", b"Connection: close", b"Connection: keep-alive, Content-Length",
    b"Host: b", b"Host:", b"Host: a b", b"Expect: 100-continue", b"Upgrade: websocket",
    b"Connection: Upgrade", b"X-Forwarded-For: 6.6.6.6", b"X_Forwarded_For: 6.6.6.6",
]

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{hex}\r\n{body}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: {n}\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Length: 1\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{body}HTTP/1.1 200 OK\r\n"
    b"Content-Length: 4\r\n\r\nEVIL",
    b"HTTP/1.1 204 No Content\r\nContent-Length: {n}\r\n\r\n{body}",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x{hex}\r\n{body}\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{body}",
    b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"{hex}\r\n{body}\r\n0\r\n\r\n",
]


def make_request(rng: random.Random, cid: int, k: int, last: bool) -> bytes:
    """A valid request for id (cid, k), then mutated or not."""
    kind = rng.random()
    target = (b"/fr/%d.%d/%d" if rng.random() < 0.25 else b"/f/%d.%d/%d") % (cid, cid, k)
    smug = b"GET /SMUG/%d.%d/%d HTTP/1.1\r\nHost: a\r\n\r\n" % (cid, cid, k)
    close = b"Connection: close\r\n" if last else b""
    if kind < 0.3:
        req = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n" + close + b"\r\n"
    elif kind < 0.6:
        body = smug if rng.random() < 0.5 else b"x" * rng.randint(0, 40)
        req = (b"POST " + target + b" HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n" % len(body)
               + close + b"\r\n" + body)
    else:
        data = smug if rng.random() < 0.5 else b"y" * rng.randint(1, 40)
        req = (b"POST " + target + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
               + close + b"\r\n%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
    if rng.random() < 0.7:
        req = mutate(rng, req)
    return req


def mutate(rng: random.Random, req: bytes) -> bytes:
    head_end = req.find(b"\r\n\r\n")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        if op == 0 and req:                               # flip a byte
            i = rng.randrange(len(req))
            req = req[:i] + bytes([rng.randrange(256)]) + req[i + 1:]
        elif op == 1 and req:                             # delete a range
            i = rng.randrange(len(req))
            req = req[:i] + req[i + rng.randint(1, 4):]
        elif op in (2, 3, 4) and head_end > 0:            # insert a nasty header
            line = rng.choice(NASTY_HEADERS) + b"\r\n"
            i = req.find(b"\r\n") + 2
            req = req[:i] + line + req[i:]
        elif op == 5:                                     # CRLF -> LF somewhere
            req = req.replace(b"\r\n", b"\n", 1)
        elif op == 6:                                     # duplicate a header line
            lines = req.split(b"\r\n")
            if len(lines) > 3:
                j = rng.randrange(1, len(lines) - 2)
                lines.insert(j, lines[j])
                req = b"\r\n".join(lines)
        elif op == 7:                                     # truncate
            req = req[:rng.randrange(max(1, len(req)))]
        elif op == 8:                                     # grow a header value
            req = req.replace(b"Host: a", b"Host: a" + b"a" * rng.choice((10, 9000, 20000)), 1)
        head_end = req.find(b"\r\n\r\n")
    return req


class FuzzBackend(Recorder):
    """Checks what it receives as it goes (memory stays small over 100k requests)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.keep_conns = False
        self.max_record = 0
        self.rng = random.Random(seed ^ 0x5EED)
        self.by_client: Dict[int, Set[int]] = {}
        self.smuggled_by: Dict[int, Set[int]] = {}
        self.parse_errors: List[str] = []
        self.requests = 0                  # type: ignore[assignment]

    def record(self, kind: str, what: object) -> None:
        if kind == "request":
            self.requests += 1
            seen: Seen = what  # type: ignore[assignment]
            for cid, k in _ids(seen.target.encode("latin-1")):
                book = self.smuggled_by if "/SMUG/" in seen.target else self.by_client
                book.setdefault(cid, set()).add(k)
        elif kind == "error":
            self.parse_errors.append(str(what))

    async def _answer(self, seen: Seen, writer: asyncio.StreamWriter, conn: Conn) -> None:
        tag = seen.target.encode("latin-1")
        body = b"seen %d %s %s %d" % (len(conn.requests), seen.method.encode(), tag,
                                      len(seen.body))
        if seen.target.startswith("/fr/"):
            tmpl = self.rng.choice(ANSWERS)
            answer = (tmpl.replace(b"{n}", b"%d" % len(body)).replace(b"{hex}", b"%x" % len(body))
                      .replace(b"{body}", body))
        else:
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        writer.write(answer)
        await writer.drain()


@dataclass
class Report:
    requests_sent: int = 0
    connections: int = 0
    answers: int = 0
    refused: int = 0
    backend_requests: int = 0
    violations: List[str] = field(default_factory=list)
    rss: List[Tuple[int, int]] = field(default_factory=list)   # (requests sent, bytes)
    seconds: float = 0.0

    def rss_growth(self) -> int:
        """RSS growth after the warm-up (the first fifth of the run)."""
        if len(self.rss) < 3:
            return 0
        later = self.rss[len(self.rss) // 5:]
        return max(b for _, b in later) - later[0][1]


async def _client(port: int, cid: int, rng: random.Random, backend: FuzzBackend,
                  report: Report) -> Tuple[int, Optional[int], Set[int]]:
    n = rng.randint(1, 3)
    reqs = [make_request(rng, cid, k, k == n - 1) for k in range(n)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        report.violations.append(f"client {cid}: cannot connect ({exc})")
        return cid, None, set()
    got = bytearray()
    try:
        for i, r in enumerate(reqs):
            if rng.random() < 0.3 and len(r) > 8:          # split across writes
                cut = rng.randrange(1, len(r))
                writer.write(r[:cut])
                await asyncio.sleep(0)
                writer.write(r[cut:])
            else:
                writer.write(r)
        while True:
            try:
                piece = await asyncio.wait_for(reader.read(65536), 0.25)
            except asyncio.TimeoutError:
                break
            if not piece:
                break
            got += piece
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
    report.requests_sent += n
    report.connections += 1
    answers, left = parse_responses(bytes(got))
    if left and not left.startswith(b"HTTP/1.1 "):
        report.violations.append(f"client {cid}: garbage in its answers: {left[:60]!r}")
    for a in answers:
        report.answers += 1
        for other, _ in _ids(a.body):
            if other != cid:
                report.violations.append(f"client {cid} got client {other}'s answer")
    refused_at = None
    if answers and answers[-1].status in REFUSALS and LB_ERROR.match(answers[-1].body):
        report.refused += 1
        refused_at = len(answers) - 1
    answered_smug = {k for a in answers for c, k in _ids(a.body)
                     if c == cid and b"/SMUG/" in a.body}
    return cid, refused_at, answered_smug


def _check(backend: FuzzBackend, cid: int, refused_at: Optional[int], answered_smug: Set[int],
           report: Report) -> None:
    ids = backend.by_client.pop(cid, set())
    for k in backend.smuggled_by.pop(cid, set()):
        if k not in answered_smug:      # parsed as a request, answered to nobody: smuggled
            report.violations.append(f"client {cid}: backend parsed smuggled /SMUG/{cid}/{k}")
    if refused_at is not None and len(ids) > refused_at:
        report.violations.append(f"client {cid}: refused after {refused_at} answers, but the "
                                 f"backend saw {len(ids)} of its requests")


async def run(n: int = 2000, seed: int = 1, concurrency: int = 48,
              sample_every: int = 2000, progress: Optional[Callable[[Report], None]] = None
              ) -> Report:
    """Send about ``n`` requests (in connections of 1-3) through a swarmlet LB process,
    from ``concurrency`` clients at a time."""
    rng = random.Random(seed)
    backend = await FuzzBackend(seed).start()
    proxy = await asyncio.to_thread(Proxy, "swarmlet", backend.port)
    report = Report()
    t0 = time.monotonic()
    state = {"cid": 0, "next_sample": 0}

    async def worker() -> None:
        while report.requests_sent < n and proxy.proc.poll() is None:
            state["cid"] += 1
            cid = state["cid"]
            got = await _client(proxy.port, cid, random.Random(rng.random()), backend, report)
            await asyncio.sleep(0.02)       # the backend's last reads
            _check(backend, *got, report)
            if report.requests_sent >= state["next_sample"]:
                state["next_sample"] += sample_every
                report.rss.append((report.requests_sent, rss_bytes(proxy.pid)))
                if progress is not None:
                    progress(report)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if proxy.proc.poll() is not None:
            report.violations.append(f"the LB process exited ({proxy.proc.returncode})")
        await asyncio.sleep(0.3)
        report.rss.append((report.requests_sent, rss_bytes(proxy.pid)))
    finally:
        await asyncio.to_thread(proxy.stop)
        await backend.stop()
    report.seconds = time.monotonic() - t0
    report.backend_requests = backend.requests
    report.violations += [f"backend could not parse what the LB sent: {e}"
                          for e in backend.parse_errors[:20]]
    return report
