"""The express lane (``lb/express.py``) against the general path it stands in for.

The general path is llhttp (httptools) feeding ``headers.build_request`` /
``build_response``. For every head the lane takes, the general path must take it
too, as one whole message without a body, and write exactly the same bytes; heads
near the edges (other cases, ``_`` spellings, whitespace, duplicates, framing) are
generated so that the lane must decline them or agree.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st
from httptools import HttpParserError, HttpRequestParser, HttpResponseParser

from swarmlet.shipped.lb import express
from swarmlet.shipped.lb.framing import Refusal
from swarmlet.shipped.lb.headers import BODY_LENGTH, BODY_NONE, build_request, build_response

pytestmark = pytest.mark.unit

IP, PROTO = "203.0.113.9", "https"
MAX_URI, MAX_HEADERS, MAX_HEAD = 8192, 100, 16384


class _Collect:
    """What the proxy's protocols read from llhttp, read when they read it (the head's
    end: after the message, llhttp's flags are already the next message's)."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.at_head: Tuple[Any, ...] = ()
        self.url = b""
        self.reason = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.complete = 0
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        if isinstance(p, HttpRequestParser):
            self.at_head = (p.get_method(), p.get_http_version(), p.should_keep_alive(),
                            p.should_upgrade())
        else:
            self.at_head = (p.get_status_code(), p.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def general_request(data: bytes) -> Optional[Tuple[bytes, bytes, bool]]:
    """(method, head upstream, keep-alive) by llhttp + build_request, or None if refused."""
    c = _Collect()
    p = c.parser = HttpRequestParser(c)
    try:
        p.feed_data(data)
    except HttpParserError:
        return None
    if c.complete != 1:
        return None
    method, version, keep, upgrade = c.at_head
    try:
        info = build_request(method, c.url, c.headers, IP, PROTO, upgrade, None, b"", version)
    except Refusal:
        return None
    assert info.body == BODY_NONE
    return method, info.head, keep


def general_answer(data: bytes, keep: bool, cookie: Optional[bytes],
                   extra: bytes) -> Optional[Tuple[bytes, bool]]:
    """(what goes to the client, the backend's keep-alive) by llhttp + build_response."""
    c = _Collect()
    p = c.parser = HttpResponseParser(c)
    try:
        p.feed_data(data)
    except HttpParserError:
        return None
    if c.complete != 1:
        return None
    status, up_keep = c.at_head
    try:
        head, up, down, keep_alive = build_response(
            status, c.reason, c.headers, http11=True, keep_alive=keep,
            head_request=False, set_cookie=cookie, extra=extra)
    except Refusal:
        return None
    assert up == BODY_LENGTH and down == BODY_LENGTH and keep_alive == keep
    return head + c.body, up_keep


def check_request(data: bytes) -> bool:
    """The lane agrees with the general path or declines; True when it took the head."""
    got = express.request(data, MAX_URI, MAX_HEADERS, IP, PROTO)
    if got is None:
        return False
    want = general_request(data)
    assert want is not None, f"the lane took what the general path refuses: {data!r}"
    method, head, _host, _target, keep = got
    assert (method, head, keep) == want, data
    return True


def check_answer(data: bytes, keep: bool = True, cookie: Optional[bytes] = None,
                 extra: bytes = b"") -> bool:
    got = express.answer(data, MAX_HEAD)
    if got is None:
        return False
    want = general_answer(data, keep, cookie, extra)
    assert want is not None, f"the lane took what the general path refuses: {data!r}"
    assert (express.answer_head(got, keep, cookie, extra), got[3]) == want, data
    return True


# --- the common heads are taken -------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    b"GET /a?b=1 HTTP/1.1\r\nHost: shop.example:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nAccept: */*\r\nhost: 10.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: a\r\nCookie: x=1\r\n\r\n",
    b"DELETE /item/7 HTTP/1.1\r\nHost: a\r\nCONNECTION: Close\r\n\r\n",
])
def test_common_requests_take_the_lane_with_the_same_bytes(data: bytes) -> None:
    assert check_request(data)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Connection: keep-alive\r\n\r\nhello, world\n",
    b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nX-Forwarded-For: a\r\n\r\nno",
])
def test_common_answers_take_the_lane_with_the_same_bytes(data: bytes) -> None:
    assert check_answer(data)
    assert check_answer(data, keep=False, cookie=b"swl=abc; Path=/", extra=b"Strict: 1\r\n")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",                # two Hosts: 400
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",                        # no Host: 400
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",                          # bad Host: 400
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",       # framing: llhttp's
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",   # a `_` alias
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n",  # named hops
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",  # appended to
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:a\r\n\r\n",                             # not "name: value"
    b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\r\n\r\n",                 # obs-text
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",                    # absolute form
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",   # pipelined
    b"GET / HTTP/1.1\nHost: a\n\n",
])
def test_the_rest_goes_down_the_general_path(data: bytes) -> None:
    assert express.request(data, MAX_URI, MAX_HEADERS, IP, PROTO) is None


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",              # body not all here
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200",   # bytes after it
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent_Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: x\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
def test_answers_the_lane_declines(data: bytes) -> None:
    assert express.answer(data, MAX_HEAD) is None


_REQ_SPECIAL = [b"Content-Length", b"Transfer-Encoding", b"Keep-Alive", b"Proxy-Connection",
                b"Proxy-Authenticate", b"Proxy-Authorization", b"TE", b"Trailer", b"Upgrade",
                b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded"]


@pytest.mark.parametrize("name", _REQ_SPECIAL + [n.replace(b"-", b"_") for n in _REQ_SPECIAL
                                                 if b"-" in n] + [b"forwarded", b"tE"])
def test_every_line_the_proxy_rewrites_sends_a_request_down_the_general_path(name: bytes) -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": 1\r\n\r\n"
    assert express.request(data, MAX_URI, MAX_HEADERS, IP, PROTO) is None


_RESP_SPECIAL = [b"Transfer-Encoding", b"Keep-Alive", b"Proxy-Connection", b"Proxy-Authenticate",
                 b"Proxy-Authorization", b"TE", b"Trailer", b"Upgrade"]


@pytest.mark.parametrize("name", _RESP_SPECIAL + [n.replace(b"-", b"_") for n in _RESP_SPECIAL
                                                  if b"-" in n] + [b"Content_Length", b"te"])
def test_every_line_the_proxy_rewrites_sends_an_answer_down_the_general_path(name: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + name + b": 1\r\nContent-Length: 2\r\n\r\nok"
    assert express.answer(data, MAX_HEAD) is None


def test_limits_are_the_general_paths() -> None:
    long_target = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert express.request(long_target, 50, MAX_HEADERS, IP, PROTO) is None
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: 1\r\n" * 5 + b"\r\n"
    assert express.request(many, MAX_URI, 5, IP, PROTO) is None
    assert express.request(many, MAX_URI, 6, IP, PROTO) is not None
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100 + b"\r\nContent-Length: 0\r\n\r\n"
    assert express.answer(big, 64) is None
    assert express.answer(big, len(big)) is None          # a head of the limit's size: 502
    assert express.answer(big, len(big) + 1) is not None


# --- generated heads near the edges -----------------------------------------------------

_NAMES = st.sampled_from([
    b"Host", b"host", b"HOST", b"Connection", b"connection", b"Content-Length", b"content_length",
    b"Transfer-Encoding", b"TE", b"Te", b"Trailer", b"Upgrade", b"Keep-Alive", b"keep_alive",
    b"Proxy-Connection", b"Cookie", b"X-Forwarded-For", b"x_forwarded_for", b"Forwarded",
    b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Accept", b"User-Agent", b"X-Hop", b"Date",
    b"Server", b"Content-Type", b"Hostx", b"X-Host", b"Connectionx", b"A_B",
])
_VALUES = st.one_of(
    st.sampled_from([b"a", b"keep-alive", b"close", b"Close", b"KEEP-ALIVE", b"x-hop", b"0",
                     b"12", b"chunked", b"shop.example", b"a b", b"", b" a", b"a ", b"\ta",
                     b"1.2.3.4", b"upgrade", b"01", b"-1"]),
    st.binary(min_size=0, max_size=8).map(lambda b: bytes(c % 96 + 32 for c in b)),
)
_SEP = st.sampled_from([b": ", b": ", b": ", b":", b":  ", b" : "])
_EDGE = st.tuples(_NAMES, _SEP, _VALUES).map(lambda t: t[0] + t[1] + t[2] + b"\r\n")
_PLAIN = st.tuples(st.sampled_from([b"Accept", b"User-Agent", b"Date", b"X-Request-Id", b"ETag"]),
                   st.binary(min_size=1, max_size=12).map(
                       lambda b: bytes(c % 94 + 33 for c in b[:1]) + bytes(c % 95 + 32 for c in b[1:]))
                   ).map(lambda t: t[0] + b": " + t[1] + b"\r\n")
# mostly plain lines, so that both outcomes are common: an edge line in a few of them
_LINE = st.one_of(_PLAIN, _PLAIN, _PLAIN, _EDGE)


@settings(max_examples=1500, deadline=None)
@given(method=st.sampled_from([b"GET", b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"POST", b"GeT"]),
       target=st.sampled_from([b"/", b"/a?b=c", b"/%20", b"/a#f", b"/x/y.css", b"*",
                               b"http://a/x", b"/\x7f"]),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]),
       lines=st.lists(_LINE, max_size=5), host_first=st.booleans())
def test_generated_requests_agree_or_decline(method: bytes, target: bytes, version: bytes,
                                             lines: List[bytes], host_first: bool) -> None:
    if host_first:
        lines = [b"Host: shop.example\r\n"] + lines
    check_request(method + b" " + target + b" " + version + b"\r\n" + b"".join(lines) + b"\r\n")


@settings(max_examples=1500, deadline=None)
@given(status=st.sampled_from([b"200 OK", b"200 OK", b"404 Not Found", b"204 No Content",
                               b"500 x y", b"200 ", b"200", b"099 Odd", b"304 Not Modified"]),
       lines=st.lists(_LINE, max_size=5), body=st.sampled_from([b"", b"ok", b"hello, world\n"]),
       length=st.sampled_from([None, "right", "right", "right", "short", "long"]),
       keep=st.booleans())
def test_generated_answers_agree_or_decline(status: bytes, lines: List[bytes], body: bytes,
                                            length: Optional[str], keep: bool) -> None:
    if length is not None:
        n = len(body) + {"right": 0, "short": -1, "long": 1}[length]
        lines = lines + [b"Content-Length: %d\r\n" % max(n, 0)]
    check_answer(b"HTTP/1.1 " + status + b"\r\n" + b"".join(lines) + b"\r\n" + body, keep=keep)


def test_the_tls_protocol_is_read_as_a_buffered_one_by_uvloop() -> None:
    """uvloop's TLS transport (sslproto.pyx, ``_set_app_protocol``) hands decrypted bytes to
    ``get_buffer``/``buffer_updated`` only for a protocol with ``get_buffer`` that is no
    ``asyncio.Protocol``; otherwise each TLS record is read into a fresh 256 KiB object
    (an mmap, mremap and munmap each, seen with strace)."""
    import asyncio

    from swarmlet.shipped.lb.edge import EdgeTLSDownstream
    assert hasattr(EdgeTLSDownstream, "get_buffer")
    assert not issubclass(EdgeTLSDownstream, asyncio.Protocol)
    assert issubclass(EdgeTLSDownstream, asyncio.BufferedProtocol)


def test_the_factored_name_pattern_matches_exactly_the_names_and_their_underscore_spellings() -> None:
    """``_names`` factors the special names by prefix; it must match each of them (``-`` or
    ``_``), and no prefix, extension or neighbour of one."""
    import re
    from swarmlet.shipped.lb.headers import _REQ_SPECIAL as REQ, _RESP_SPECIAL as RESP
    for names in (REQ, RESP, [b"te", b"tea", b"t-e"], [b"a"]):
        pat = re.compile(express._names(names))
        near = set()
        for n in names:
            assert pat.fullmatch(n), n
            assert pat.fullmatch(n.replace(b"-", b"_")), n
            near |= {n[:-1], n + b"s", n + b"-", b"x" + n, n[:-1] + b"_", n.replace(b"-", b"")}
        for n in near - set(names) - {x.replace(b"-", b"_") for x in names}:
            if n.replace(b"_", b"-") not in names:
                assert not pat.fullmatch(n), n


def test_an_answer_with_a_large_body_takes_the_lane_and_only_its_head_is_read() -> None:
    body = bytes(range(256)) * 800                      # 200 KiB, as one uvloop read brings
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(body) + body
    ans = express.answer(data, MAX_HEAD)
    assert ans is not None and ans[2] == len(body) and ans[4] == body
    assert ans[1] == b"HTTP/1.1 200 OK\r\nX-A: b\r\n"
    # the blank line beyond the limit: the general path (which fails it)
    assert express.answer(data, 40) is None
    # a body holding a blank line and header-like bytes changes nothing
    tricky = b"\r\n\r\nConnection: close\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(tricky) + tricky
    ans = express.answer(data, MAX_HEAD)
    assert ans is not None and ans[3] is True and ans[4] == tricky
