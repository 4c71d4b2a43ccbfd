"""Head rewriting and the proxy's own answers, bytes in, bytes out."""

from __future__ import annotations

import pytest

from swarmlet.shipped.lb.headers import (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE,
                                 build_request, build_response, chunk, error_response)
from swarmlet.shipped.lb.health import parse_status_line, status_ok

pytestmark = pytest.mark.unit


def lines(head: bytes) -> list:
    return head.split(b"\r\n")


def test_request_rewrite_strips_hops_and_adds_forwarding():
    info = build_request(b"GET", b"/a?b=1", [
        (b"Host", b"api.example"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"), (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-For", b"1.2.3.4"), (b"Forwarded", b"for=1.2.3.4"), (b"Accept", b"*/*"),
    ], "2001:db8::7")
    got = lines(info.head)
    assert got[0] == b"GET /a?b=1 HTTP/1.1"
    assert b"Host: api.example" in got and b"Accept: */*" in got
    assert b"X-Forwarded-For: 1.2.3.4, 2001:db8::7" in got
    assert b"X-Forwarded-Proto: http" in got and b"X-Forwarded-Host: api.example" in got
    assert b'Forwarded: for=1.2.3.4, for="[2001:db8::7]";proto=http;host=api.example' in got
    for hop in (b"Connection", b"X-Hop", b"Keep-Alive", b"TE", b"X-Forwarded-Proto: https"):
        assert not any(line.startswith(hop) for line in got), hop
    assert info.head.endswith(b"\r\n\r\n") and info.body == BODY_NONE


H = (b"Host", b"a")


def test_request_body_framing_and_upgrade():
    chunked = build_request(b"POST", b"/", [H, (b"Transfer-Encoding", b"chunked")], "1.1.1.1")
    assert chunked.body == BODY_CHUNKED and b"Transfer-Encoding: chunked\r\n" in chunked.head
    sized = build_request(b"POST", b"/", [H, (b"Content-Length", b"5")], "1.1.1.1")
    assert sized.body == BODY_LENGTH and b"Content-Length: 5\r\n" in sized.head
    ws = build_request(b"GET", b"/ws", [H, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
                       "1.1.1.1", upgrade=True)
    assert ws.upgrade and b"Connection: upgrade\r\nUpgrade: websocket\r\n" in ws.head
    no_host = build_request(b"GET", b"/", [], "1.1.1.1", default_host=b"10.0.0.1:80",
                            version="1.0")
    assert b"Host: 10.0.0.1:80\r\n" in no_host.head


def test_sticky_cookie_is_read():
    info = build_request(b"GET", b"/", [H, (b"Cookie", b"a=1; SWL=abc123; b=2")], "1.1.1.1",
                         sticky_cookie=b"SWL")
    assert info.sticky == "abc123"


@pytest.mark.parametrize("status,hdrs,http11,head_req,up,down,keep", [
    (200, [(b"Content-Length", b"3")], True, False, BODY_LENGTH, BODY_LENGTH, True),
    (200, [(b"Transfer-Encoding", b"chunked")], True, False, BODY_CHUNKED, BODY_CHUNKED, True),
    (200, [(b"Transfer-Encoding", b"chunked")], False, False, BODY_CHUNKED, BODY_CLOSE, False),
    (200, [], True, False, BODY_CLOSE, BODY_CHUNKED, True),       # close-delimited → chunked
    (204, [], True, False, BODY_NONE, BODY_NONE, True),
    (304, [(b"Content-Length", b"9")], True, False, BODY_NONE, BODY_NONE, True),
    # HEAD: the declared length is passed on, and says the backend may still send one
    (200, [(b"Content-Length", b"9")], True, True, BODY_LENGTH, BODY_NONE, True),
    (200, [(b"Content-Length", b"0")], True, True, BODY_NONE, BODY_NONE, True),
])
def test_response_framing(status, hdrs, http11, head_req, up, down, keep):
    head, got_up, got_down, got_keep = build_response(
        status, b"", hdrs + [(b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")],
        http11=http11, keep_alive=True, head_request=head_req)
    assert (got_up, got_down, got_keep) == (up, down, keep)
    assert b"Keep-Alive" not in head
    assert head.startswith(b"HTTP/1.1 %d " % status) and head.endswith(b"\r\n\r\n")
    assert (b"Connection: close" in head) == (not keep)
    assert (b"Transfer-Encoding: chunked" in head) == (down == BODY_CHUNKED)


def test_response_sets_sticky_cookie_and_keeps_upgrade():
    head, *_ = build_response(101, b"Switching Protocols", [(b"Upgrade", b"websocket")],
                              http11=True, keep_alive=True, head_request=False,
                              set_cookie=b"SWL=x; Path=/")
    assert b"Set-Cookie: SWL=x; Path=/\r\n" in head
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in head


def test_error_answers_are_clear_and_complete():
    raw = error_response(502, "could not connect to backend (Connection refused)", False)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert body == b"502 Bad Gateway: could not connect to backend (Connection refused)\n"
    assert b"Content-Length: %d" % len(body) in head and b"Connection: close" in head
    assert b"Connection" not in error_response(503, "x", True)


def test_chunk_framing():
    assert chunk(b"hello world!!!!!") == b"10\r\nhello world!!!!!\r\n"


def test_health_status_line():
    assert parse_status_line(b"HTTP/1.1 204 No Content\r\n") == 204
    assert parse_status_line(b"garbage\r\n") == 0
    assert parse_status_line(b"") == 0
    assert status_ok(200) and status_ok(302) and not status_ok(404) and not status_ok(0)
