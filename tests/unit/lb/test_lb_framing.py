"""The framing rules (RFC 9112) and where input is cut, bytes in, decisions out."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.lb.framing import (Refusal, content_length, next_cut, split_absolute,
                                 transfer_chunked, valid_host)
from swarmlet.shipped.lb.headers import BODY_CHUNKED, BODY_LENGTH, build_request, build_response

pytestmark = pytest.mark.unit

H = (b"Host", b"a")


@pytest.mark.parametrize("values,status", [
    ([b"gzip"], 501), ([b"xchunked"], 501), ([b"chunkedx"], 501), ([b"identity, chunked"], 501),
    ([b"gzip, chunked"], 501), ([b"chunked", b"gzip"], 501), ([b"chunked;q=1"], 501),
    ([b"chunked, chunked"], 400), ([b"chunked", b"chunked"], 400), ([b""], 400), ([b","], 400),
    ([b'"chunked"'], 400), ([b"chun ked"], 400),
])
def test_transfer_codings_other_than_chunked_are_refused(values, status):
    with pytest.raises(Refusal) as exc:
        transfer_chunked(values)
    assert exc.value.status == status


@pytest.mark.parametrize("values", [[b"chunked"], [b"CHUNKED"], [b" chunked\t"], [b", chunked"]])
def test_chunked_is_chunked(values):
    transfer_chunked(values)


def test_content_length_is_one_number():
    assert content_length([b"12"]) == 12 and content_length([b" 0 "]) == 0
    for bad in ([b"1", b"1"], [b"+1"], [b"1,1"], [b"-1"], [b"0x5"], [b"9" * 19]):
        with pytest.raises(Refusal):
            content_length(bad)


@pytest.mark.parametrize("host,ok", [
    (b"a.example", True), (b"a.example:8080", True), (b"[::1]:80", True), (b"10.0.0.1", True),
    (b"", False), (b"a b", False), (b"a/b", False), (b"a@b", False), (b"a:80:80", False),
    (b"a\xff", False), (b"a:123456", False),
])
def test_host_validity(host, ok):
    assert valid_host(host) is ok


def test_absolute_form_split():
    assert split_absolute(b"http://a.example:8080/p?q") == (b"a.example:8080", b"/p?q")
    assert split_absolute(b"HTTPS://a") == (b"a", b"/")
    assert split_absolute(b"http://a?x=1") == (b"a", b"/?x=1")
    assert split_absolute(b"/p") is None and split_absolute(b"ftp://a/") is None
    for bad in (b"http://u@a/", b"http:///x", b"http://a b/"):
        with pytest.raises(Refusal):
            split_absolute(bad)


@pytest.mark.parametrize("method,url,headers,version,status", [
    (b"GET", b"/", [], "1.1", 400),
    (b"GET", b"/", [H, H], "1.1", 400),
    (b"GET", b"/", [H], "0.9", 400),
    (b"GET", b"/", [H], "2.0", 505),
    (b"CONNECT", b"a:443", [H], "1.1", 405),
    (b"GET", b"x", [H], "1.1", 400),
    (b"GET", b"*", [H], "1.1", 400),
    (b"POST", b"/", [H, (b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")], "1.1", 400),
    (b"POST", b"/", [H, (b"Transfer-Encoding", b"chunked")], "1.0", 400),
    (b"POST", b"/", [H, (b"Transfer-Encoding", b"gzip, chunked")], "1.1", 501),
])
def test_requests_refused(method, url, headers, version, status):
    with pytest.raises(Refusal) as exc:
        build_request(method, url, headers, "1.1.1.1", version=version)
    assert exc.value.status == status


def test_connection_tokens_never_drop_framing_or_host():
    info = build_request(b"POST", b"/", [
        (b"Host", b"shop"), (b"Content-Length", b"7"), (b"X-Hop", b"1"),
        (b"Connection", b"Content-Length, Host, Transfer-Encoding, X-Hop")], "1.1.1.1")
    lines = info.head.split(b"\r\n")
    assert b"Host: shop" in lines and b"Content-Length: 7" in lines
    assert not any(line.startswith(b"X-Hop") for line in lines)
    assert info.body == BODY_LENGTH and info.length == 7


def test_framing_upstream_is_the_parsed_one():
    info = build_request(b"POST", b"/", [H, (b"transfer-encoding", b"Chunked"),
                                         (b"Transfer_Encoding", b"gzip"),
                                         (b"X_Forwarded_For", b"6.6.6.6")], "1.1.1.1")
    assert info.body == BODY_CHUNKED
    assert info.head.count(b"ransfer") == 1 and b"Transfer-Encoding: chunked\r\n" in info.head
    assert b"6.6.6.6" not in info.head          # underscore aliases of our headers are dropped


def test_absolute_form_target_becomes_host_and_origin_form():
    info = build_request(b"GET", b"http://shop:81/x?y", [(b"Host", b"other")], "1.1.1.1")
    assert info.head.startswith(b"GET /x?y HTTP/1.1\r\nHost: shop:81\r\n")
    assert b"other" not in info.head


@pytest.mark.parametrize("headers", [
    [(b"Content-Length", b"2"), (b"Transfer-Encoding", b"chunked")],
    [(b"Transfer-Encoding", b"gzip")],
    [(b"Transfer-Encoding", b"chunked, identity")],
    [(b"Content-Length", b"x")],
])
def test_ambiguous_answers_are_refused(headers):
    with pytest.raises(Refusal) as exc:
        build_response(200, b"OK", headers, http11=True, keep_alive=True, head_request=False)
    assert exc.value.status == 502


def test_connection_content_length_in_an_answer_keeps_it():
    head, up, down, keep = build_response(
        200, b"OK", [(b"Connection", b"Content-Length"), (b"Content-Length", b"5")],
        http11=True, keep_alive=True, head_request=False)
    assert b"Content-Length: 5\r\n" in head and up == down == BODY_LENGTH and keep


def test_next_cut_stops_at_each_head_end_and_the_budget():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
    first = next_cut(data, b"", 1000)
    assert data[:first].endswith(b"\r\n\r\n") and data[first:].startswith(b"GET /2")
    assert next_cut(b"aaaa", b"", 2) == 2
    assert next_cut(b"\n\r\nX", b"\r\n\r", 100) == 1      # the end began in the last read
    assert next_cut(b"", b"", 0) == 1


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=64))
def test_cutting_never_loses_or_overruns(pieces, room):
    """Fed cut by cut, every byte is fed once, no cut is over the room, and each
    cut ends at the first CRLFCRLF it contains."""
    tail = b""
    fed = b""
    for data in pieces:
        while data:
            n = next_cut(data, tail, room)
            assert 1 <= n <= max(1, min(room, len(data)))
            cut = data[:n]
            window = (tail + cut)
            i = window.find(b"\r\n\r\n")
            assert i < 0 or i + 4 == len(window)
            fed += cut
            tail = (tail + cut)[-3:]
            data = data[n:]
    assert fed == b"".join(pieces)


def test_control_messages_are_versioned():
    from swarmlet.shipped.exceptions import ProtocolError
    from swarmlet.shipped.lb import control
    line = control.encode("routes", version=3, routes=[], graceful=["t1"])
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert control.decode(line) == {"v": control.PROTOCOL, "op": "routes", "version": 3,
                                    "routes": [], "graceful": ["t1"]}
    for bad in (b"not json", b"[]", b'{"v": 1}', b'{"v": 99, "op": "routes"}'):
        with pytest.raises(ProtocolError):
            control.decode(bad)
