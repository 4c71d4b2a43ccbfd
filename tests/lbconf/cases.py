"""The conformance cases: crafted bytes a client sends (and, for answers, crafted
bytes the backend sends back), by group. Every smuggling attempt carries a
request for ``/SMUGGLED``: a backend that ever parses it, or a client that
ever gets its answer, is a desync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

SMUG = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    send: bytes
    then: Optional[bytes] = None         # sent on the same connection after the first answer
    response: Optional[bytes] = None     # the backend's crafted answer to /r/<name>
    methods: Tuple[str, ...] = ()        # methods in order (a HEAD answer has no body)


def _req(head: bytes, body: bytes = b"", method: bytes = b"POST", target: bytes = b"/c",
         version: bytes = b"HTTP/1.1", host: bytes = b"Host: a\r\n") -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + host + head + b"\r\n" + body


def _chunked_smuggle() -> bytes:
    """A chunked body with a smuggled request after its end (a CL reader sees it
    as body, a TE reader as the next request)."""
    return b"5\r\nhello\r\n0\r\n\r\n" + SMUG


def cases() -> List[Case]:
    out: List[Case] = []

    def add(name: str, group: str, send: bytes, **kw) -> None:
        out.append(Case(name, group, send, **kw))

    body = _chunked_smuggle()
    cl = b"Content-Length: %d\r\n" % len(body)
    # --- CL/TE conflicts
    g = "cl-te"
    add("cl+te", g, _req(cl + b"Transfer-Encoding: chunked\r\n", body))
    add("te+cl", g, _req(b"Transfer-Encoding: chunked\r\n" + cl, body))
    add("te+cl-short", g, _req(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", body))
    add("cl+cl-differ", g, _req(b"Content-Length: 5\r\nContent-Length: %d\r\n" % (5 + len(SMUG)),
                                b"hello" + SMUG))
    add("cl+cl-same", g, _req(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"))
    add("cl-list", g, _req(b"Content-Length: 5, 5\r\n", b"hello"))
    add("cl-plus", g, _req(b"Content-Length: +5\r\n", b"hello"))
    add("cl-junk", g, _req(b"Content-Length: 5x\r\n", b"hello"))
    add("cl-negative", g, _req(b"Content-Length: -1\r\n", b"hello"))
    add("cl-overflow", g, _req(b"Content-Length: 99999999999999999999999\r\n", b"hello"))
    add("cl+te-identity", g, _req(cl + b"Transfer-Encoding: identity\r\n", body))
    # --- obfuscated Transfer-Encoding
    g = "te-obfuscated"
    for name, line in (
            ("xchunked", b"Transfer-Encoding: xchunked"),
            ("chunkedx", b"Transfer-Encoding: chunkedx"),
            ("chunked-comma-identity", b"Transfer-Encoding: chunked, identity"),
            ("identity-comma-chunked", b"Transfer-Encoding: identity, chunked"),
            ("gzip-comma-chunked", b"Transfer-Encoding: gzip, chunked"),
            ("gzip", b"Transfer-Encoding: gzip"),
            ("space-before-colon", b"Transfer-Encoding : chunked"),
            ("vtab", b"Transfer-Encoding: \x0bchunked"),
            ("quoted", b'Transfer-Encoding: "chunked"'),
            ("two-headers", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
            ("chunked-twice", b"Transfer-Encoding: chunked, chunked"),
            ("underscore", b"Transfer_Encoding: chunked"),
            ("obs-fold", b"Transfer-Encoding:\r\n chunked"),
            ("param", b"Transfer-Encoding: chunked;q=1")):
        add("te-" + name, g, _req(line + b"\r\n" + cl, body))
    add("te-upper", g, _req(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    add("te-tab", g, _req(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
    add("te-http10", g, _req(b"Transfer-Encoding: chunked\r\n", body, version=b"HTTP/1.0"))
    # --- chunk-size errors
    g = "chunk-size"
    for name, chunked in (
            ("hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
            ("space-after-size", b"5 \r\nhello\r\n0\r\n\r\n"),
            ("negative", b"-5\r\nhello\r\n0\r\n\r\n"),
            ("overflow", b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            ("lf-only", b"5\nhello\n0\n\n"),
            ("data-overrun", b"3\r\nhelloXX\r\n0\r\n\r\n"),
            ("empty-size", b"\r\nhello\r\n0\r\n\r\n"),
            ("extension", b"5;ext=1\r\nhello\r\n0\r\n\r\n"),
            ("trailer", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")):
        add("chunk-" + name, g, _req(b"Transfer-Encoding: chunked\r\n", chunked + SMUG))
    # --- Host
    g = "host"
    add("host-missing-11", g, _req(b"", method=b"GET", host=b""))
    add("host-missing-10", g, _req(b"", method=b"GET", host=b"", version=b"HTTP/1.0"))
    add("host-duplicate", g, _req(b"Host: b\r\n", method=b"GET"))
    add("host-empty", g, _req(b"", method=b"GET", host=b"Host:\r\n"))
    add("host-space", g, _req(b"", method=b"GET", host=b"Host: a b\r\n"))
    add("host-slash", g, _req(b"", method=b"GET", host=b"Host: a/b\r\n"))
    add("host-at", g, _req(b"", method=b"GET", host=b"Host: u@a\r\n"))
    add("http09", g, b"GET /c\r\n\r\n")
    add("absolute-form", g, _req(b"", method=b"GET", target=b"http://shop.example/c",
                                 host=b"Host: other\r\n"))
    add("absolute-userinfo", g, _req(b"", method=b"GET", target=b"http://u@shop.example/c"))
    add("http20-line", g, _req(b"", method=b"GET", version=b"HTTP/2.0"))
    # --- pipelining
    g = "pipelining"
    get = _req(b"", method=b"GET", target=b"/p1")
    add("pipe-2-get", g, get + _req(b"", method=b"GET", target=b"/p2"))
    add("pipe-get-post-get", g, get + _req(b"Content-Length: 5\r\n", b"hello", target=b"/p2")
        + _req(b"", method=b"GET", target=b"/p3"))
    add("pipe-head-get", g, _req(b"", method=b"HEAD", target=b"/p1")
        + _req(b"", method=b"GET", target=b"/p2"), methods=("HEAD", "GET"))
    add("pipe-chunked-get", g, _req(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                                    target=b"/p1") + _req(b"", method=b"GET", target=b"/p2"))
    # --- a bad second request on a kept-alive connection
    g = "bad-second"
    for name, second in (
            ("header-no-colon", b"GET /b HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"),
            ("bad-method", b"G@T /b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("cl+te", b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("no-host", b"GET /b HTTP/1.1\r\n\r\n"),
            ("http09", b"GET /b\r\n\r\n")):
        add("second-" + name, g, get + second)
    # --- hop-by-hop tokens naming framing headers (requests, then answers)
    g = "hop-by-hop"
    add("conn-content-length", g, _req(b"Content-Length: %d\r\nConnection: Content-Length\r\n"
                                       % len(SMUG), SMUG))
    add("conn-transfer-encoding", g, _req(b"Transfer-Encoding: chunked\r\n"
                                          b"Connection: Transfer-Encoding\r\n", body))
    add("conn-host", g, _req(b"Connection: Host\r\n", method=b"GET"))
    add("conn-close-cl", g, _req(b"Content-Length: %d\r\nConnection: close, Content-Length\r\n"
                                 % len(SMUG), SMUG))
    for name, answer in (
            ("resp-conn-cl", b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                             b"Content-Length: 5\r\n\r\nhello"),
            ("resp-conn-te", b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("resp-conn-cl-ka", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\n"
                                b"Content-Length: 5\r\n\r\nhello"),
            ("resp-conn-date", b"HTTP/1.1 200 OK\r\nConnection: Date\r\nDate: x\r\n"
                               b"Content-Length: 5\r\n\r\nhello")):
        add(name, g, _req(b"", method=b"GET", target=b"/r/" + name.encode()), then=NEXT,
            response=answer)
    # --- upgrades
    g = "upgrade"
    ws = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" \
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    add("ws", g, _req(ws, method=b"GET", target=b"/ws"))
    add("ws-early-data", g, _req(ws, method=b"GET", target=b"/ws") + b"\x81\x05hello" + SMUG)
    add("upgrade-no-connection", g, _req(b"Upgrade: websocket\r\n", method=b"GET", target=b"/u")
        + NEXT)
    add("h2c-upgrade", g, _req(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", method=b"GET",
                               target=b"/h2c") + NEXT)
    add("connect", g, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" + SMUG)
    add("resp-101-unasked", g, _req(b"", method=b"GET", target=b"/r/resp-101-unasked"),
        then=NEXT, response=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n"
                            b"\r\nSMUGGLED")
    # --- HEAD, 204, 304, interim
    g = "head-204-304"
    for name, method, answer in (
            ("head-cl", b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            ("head-with-body", b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ("204-with-body", b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
            ("304-with-body", b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
            ("100-then-200", b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                     b"Content-Length: 5\r\n\r\nhello")):
        add(name, g, _req(b"", method=method, target=b"/r/" + name.encode()), then=NEXT,
            response=answer, methods=(method.decode(), "GET"))
    # --- answers with conflicting or unknown framing
    g = "response-framing"
    for name, answer in (
            ("resp-cl+te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("resp-cl+cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"
                           b"hello!!"),
            ("resp-te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
            ("resp-te-chunked-identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, "
                                         b"identity\r\n\r\nhello"),
            ("resp-cl-junk", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"),
            ("resp-bad-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n"
                               b"hello\r\n0\r\n\r\n"),
            ("resp-extra-bytes", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"),
            ("resp-close-delimited", b"HTTP/1.1 200 OK\r\n\r\nhello")):
        add(name, g, _req(b"", method=b"GET", target=b"/r/" + name.encode()), then=NEXT,
            response=answer)
    return out
