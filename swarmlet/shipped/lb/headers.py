"""Pure HTTP/1.1 head rewriting for the proxy, and its own error answers.

The framing of every message is decided here once, from what was parsed
(``framing.py`` holds the rules), and the head that goes on carries exactly
that framing, written by us: ``Content-Length: N`` or
``Transfer-Encoding: chunked`` or nothing. The sender's own framing lines are
never copied, and a ``Connection`` token can drop only headers we copy, never
framing or Host (``Connection: Content-Length`` was a request smuggling).
Anything ambiguous raises ``Refusal`` before a byte moves on.

Requests going up: hop-by-hop headers (RFC 9110 §7.6.1, plus whatever the
``Connection`` header names) are dropped; ``X-Forwarded-For`` is appended to
(as nginx's ``$proxy_add_x_forwarded_for``), ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` are set, and ``Forwarded`` (RFC 7239) is appended to, so
the client IP survives (Swarm's routing mesh loses it, moby/moby#25526).
Exactly one valid ``Host`` is required in HTTP/1.1 (400 otherwise); an
absolute-form target's authority becomes the Host and the target goes up in
origin form. A header whose name, read with ``_`` as ``-``, is one the proxy
owns (``Transfer_Encoding``, ``X_Forwarded_For``) is dropped: some backends
(CGI, WSGI) fold the two spellings together. The upstream hop is always
HTTP/1.1 keep-alive; a chunked body is re-framed chunk by chunk (trailers
dropped).

Responses going down: hop-by-hop headers dropped; a body with a length keeps
it; a chunked or close-delimited body is re-chunked for HTTP/1.1 clients and
close-delimited for HTTP/1.0 ones; an answer with a transfer coding we do not
implement, or with both framings, is refused (502, as nginx does).

Heads are bytes in, bytes out; names keep the sender's case.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable, Dict, List, Optional, Tuple

from .framing import Refusal, content_length, split_absolute, transfer_chunked, valid_host

Headers = List[Tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# How a body is framed.
BODY_NONE = 0      # no body at all
BODY_LENGTH = 1    # Content-Length: pass bytes through
BODY_CHUNKED = 2   # chunked: (re)frame each piece
BODY_CLOSE = 3     # until the connection closes

# Request headers we rewrite or look at; everything else passes untouched.
_REQ_SPECIAL = HOP_BY_HOP | {
    b"content-length", b"host", b"cookie", b"x-forwarded-for",
    b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
}
_RESP_SPECIAL = HOP_BY_HOP | {b"content-length"}
_PLAIN_CONN_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade", b""})
_VERSIONS = frozenset({"1.1", "1.0"})


class RequestInfo:
    """What the proxy needs to know about a request besides its new head."""

    __slots__ = ("head", "body", "length", "sticky", "upgrade")

    def __init__(self, head: bytes, body: int, length: int, sticky: Optional[str],
                 upgrade: bool) -> None:
        self.head = head
        self.body = body
        self.length = length          # Content-Length, for BODY_LENGTH
        self.sticky = sticky
        self.upgrade = upgrade


def _conn_tokens(value: bytes) -> List[bytes]:
    return [t.strip(b" \t").lower() for t in value.split(b",")]


def _forwarded_node(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Forwarded elements (and, for a request that brings none, the four forwarding lines) are
# built once per client IP / Host (a handful in practice);
# the caches are dropped wholesale when they grow, so they stay bounded.
_FOR_CACHE: Dict[Tuple[str, str], bytes] = {}
_HOST_CACHE: Dict[bytes, bytes] = {}
_FWD_CACHE: Dict[Tuple[str, str, bytes], bytes] = {}


def _cached(cache: Dict[Any, bytes], key: Any, make: Callable[[Any], bytes]) -> bytes:
    value = cache.get(key)
    if value is None:
        if len(cache) > 4096:
            cache.clear()
        value = cache[key] = make(key)
    return value


def _for_element(key: Tuple[str, str]) -> bytes:
    ip, proto = key
    return ("for=" + _forwarded_node(ip) + ";proto=" + proto).encode("latin-1")


def _host_element(host: bytes) -> bytes:
    return (";host=" + _quote(host.decode("latin-1"))).encode("latin-1")


def _forward_lines(key: Tuple[str, str, bytes]) -> bytes:
    ip, proto, host = key
    lines = [b"X-Forwarded-For: " + ip.encode() + b"\r\n",
             b"X-Forwarded-Proto: " + proto.encode() + b"\r\n"]
    element = _for_element((ip, proto))
    if host:
        lines.append(b"X-Forwarded-Host: " + host + b"\r\n")
        element += _host_element(host)
    lines.append(b"Forwarded: " + element + b"\r\n")
    return b"".join(lines)


def _cookie_value(header: bytes, name: bytes) -> Optional[str]:
    for part in header.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.strip().decode("latin-1")
    return None


def _owned_alias(lname: bytes, owned: frozenset) -> bool:
    """``transfer_encoding`` and the like: a backend may read it as ours."""
    return b"_" in lname and lname.replace(b"_", b"-") in owned


def _lines(headers: Headers, special: frozenset, drop: List[bytes],
           keep: Tuple[bytes, ...] = ()) -> List[bytes]:
    """The lines the loops above copy, without those ``Connection`` named (the rare path)."""
    out: List[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if (lname in keep or (lname not in special and not _owned_alias(lname, special))) \
                and lname not in drop:
            out += (name, b": ", value, b"\r\n")
    return out


def build_request(method: bytes, url: bytes, headers: Headers, client_ip: str,
                  proto: str = "http", upgrade: bool = False,
                  sticky_cookie: Optional[bytes] = None, default_host: bytes = b"",
                  version: str = "1.1") -> RequestInfo:
    """The head to send upstream and how the request body is framed; raises
    ``Refusal`` for anything that must not go on.

    ``default_host`` (the address the client connected to) fills in ``Host``
    for HTTP/1.0 clients that sent none: the upstream hop is HTTP/1.1, which
    requires it."""
    if version not in _VERSIONS:
        if version in ("0.9", "0.0"):
            raise Refusal(400, "HTTP/0.9 requests are not supported")
        raise Refusal(505, f"HTTP/{version} is not supported here")
    if method == b"CONNECT":
        raise Refusal(405, "CONNECT is not supported by this proxy")
    target = url
    authority = None
    if url[:1] != b"/":
        if url == b"*" and method == b"OPTIONS":
            pass
        else:
            split = split_absolute(url)
            if split is None:
                raise Refusal(400, "invalid request target")
            authority, target = split
    out = [method, b" ", target, b" HTTP/1.1\r\n", b""]   # [4]: the Host line
    hosts: List[bytes] = []
    lengths: List[bytes] = []
    codings: List[bytes] = []
    xff = b""
    fwd = b""
    sticky = None
    upgrade_value = b""
    extra_hop: List[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in _REQ_SPECIAL:
            if b"_" not in lname or not _owned_alias(lname, _REQ_SPECIAL):
                out += (name, b": ", value, b"\r\n")    # pieces: one join at the end
        elif lname == b"host":
            hosts.append(value)
        elif lname == b"content-length":
            lengths.append(value)
        elif lname == b"transfer-encoding":
            codings.append(value)
        elif lname == b"cookie":
            if sticky_cookie is not None and sticky is None:
                sticky = _cookie_value(value, sticky_cookie)
            out += (name, b": ", value, b"\r\n")
        elif lname == b"x-forwarded-for":
            xff = xff + b", " + value if xff else value
        elif lname == b"forwarded":
            fwd = fwd + b", " + value if fwd else value
        elif lname == b"connection":
            if value.lower() not in _PLAIN_CONN_TOKENS:
                extra_hop.extend(t for t in _conn_tokens(value) if t not in _PLAIN_CONN_TOKENS)
        elif lname == b"upgrade":
            upgrade_value = value
        # other hop-by-hop and X-Forwarded-Proto/-Host: dropped (we set our own)
    # Host: exactly one, valid (RFC 9112 §3.2); the authority of an absolute target wins
    if len(hosts) > 1:
        raise Refusal(400, "more than one Host header")
    host = hosts[0].strip(b" \t") if hosts else b""
    if hosts and not valid_host(host):
        raise Refusal(400, "invalid Host header")
    if not hosts and version == "1.1":
        raise Refusal(400, "missing Host header (required in HTTP/1.1)")
    if authority is not None:
        host = authority
    # framing: decided once, from what was parsed
    length = 0
    if codings:
        if version != "1.1":
            raise Refusal(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise Refusal(400, "both Content-Length and Transfer-Encoding")
        transfer_chunked(codings)
        body = BODY_CHUNKED
    elif lengths:
        length = content_length(lengths)
        body = BODY_LENGTH
    else:
        body = BODY_NONE
    if extra_hop:
        # only lines we copied can go: framing and Host are written below, by us
        out = out[:5] + _lines(headers, _REQ_SPECIAL, extra_hop, keep=(b"cookie",))
    if host:
        out[4] = b"Host: " + host + b"\r\n"
    elif default_host:
        out[4] = b"Host: " + default_host + b"\r\n"
    if xff or fwd:
        ip = client_ip.encode()
        out.append(b"X-Forwarded-For: " + (xff + b", " + ip if xff else ip) + b"\r\n")
        out.append(b"X-Forwarded-Proto: " + proto.encode() + b"\r\n")
        if host:
            out.append(b"X-Forwarded-Host: " + host + b"\r\n")
        element = _cached(_FOR_CACHE, (client_ip, proto), _for_element)
        if host:
            element += _cached(_HOST_CACHE, host, _host_element)
        out.append(b"Forwarded: " + (fwd + b", " if fwd else b"") + element + b"\r\n")
    else:       # nothing to append to: the four lines depend on (client, proto, Host) only
        out.append(_cached(_FWD_CACHE, (client_ip, proto, host), _forward_lines))
    if upgrade and upgrade_value:
        out.append(b"Connection: upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
    else:
        upgrade = False
    if body == BODY_CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif body == BODY_LENGTH:
        out.append(b"Content-Length: %d\r\n" % length)
    out.append(b"\r\n")
    return RequestInfo(b"".join(out), body, length, sticky, upgrade)


def build_response(status: int, reason: bytes, headers: Headers, *, http11: bool,
                   keep_alive: bool, head_request: bool,
                   set_cookie: Optional[bytes] = None,
                   extra: bytes = b"") -> Tuple[bytes, int, int, bool]:
    """(head for the client, upstream body framing, client body framing, keep-alive).
    ``extra``: whole header lines the proxy adds to a final answer (the edge's HSTS).

    Raises ``Refusal`` (502) for an answer whose framing is ambiguous."""
    out = [b"HTTP/1.1 %d " % status, reason or _reason(status), b"\r\n"]
    lengths: List[bytes] = []
    codings: List[bytes] = []
    upgrade_value = b""
    extra_hop: List[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in _RESP_SPECIAL:
            if b"_" not in lname or not _owned_alias(lname, _RESP_SPECIAL):
                out += (name, b": ", value, b"\r\n")    # pieces: one join at the end
        elif lname == b"content-length":
            lengths.append(value)
        elif lname == b"transfer-encoding":
            codings.append(value)
        elif lname == b"connection":
            if value.lower() not in _PLAIN_CONN_TOKENS:
                extra_hop.extend(t for t in _conn_tokens(value) if t not in _PLAIN_CONN_TOKENS)
        elif lname == b"upgrade":
            upgrade_value = value
    length = -1
    try:
        if codings:
            if lengths:
                raise Refusal(502, "both Content-Length and Transfer-Encoding")
            transfer_chunked(codings)
            up_body = BODY_CHUNKED
        elif lengths:
            length = content_length(lengths)
            up_body = BODY_LENGTH
        else:
            up_body = BODY_CLOSE
    except Refusal as exc:
        raise Refusal(502, f"invalid answer from backend ({exc.detail})") from None
    if extra_hop:
        # only lines we copied can go: the framing is written below, by us
        out = out[:3] + _lines(headers, _RESP_SPECIAL, extra_hop)
    if set_cookie is not None:
        out.append(b"Set-Cookie: " + set_cookie + b"\r\n")
    if extra and status >= 200:
        out.append(extra)           # whole header lines of the proxy's own (HSTS)
    if status == 101:
        out.append(b"Connection: upgrade\r\nUpgrade: " + upgrade_value + b"\r\n\r\n")
        return b"".join(out), BODY_NONE, BODY_NONE, True
    if head_request or status < 200 or status in (204, 304):
        # no body follows; a length describes what a GET would get (not for 1xx/204)
        if length >= 0 and status >= 200 and status != 204:
            out.append(b"Content-Length: %d\r\n" % length)
        if not head_request or length == 0:
            up_body = BODY_NONE
        # else: a HEAD answer that declares a body. llhttp cannot be told that none
        # follows, so the caller ends the exchange itself and drops the connection.
        down_body = BODY_NONE
    elif up_body == BODY_LENGTH:
        down_body = BODY_LENGTH
        out.append(b"Content-Length: %d\r\n" % length)
    elif http11:
        down_body = BODY_CHUNKED
        out.append(b"Transfer-Encoding: chunked\r\n")
    else:
        down_body = BODY_CLOSE
        keep_alive = False
    if 100 <= status < 200:
        pass                        # interim: no Connection header of its own
    elif not keep_alive:
        out.append(b"Connection: close\r\n")
    elif not http11:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out), up_body, down_body, keep_alive


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def error_response(status: int, detail: str, keep_alive: bool) -> bytes:
    """A complete answer of the proxy's own, with a body saying what went wrong."""
    body = f"{status} {_reason(status).decode()}: {detail}\n".encode()
    return b"".join([
        b"HTTP/1.1 %d " % status, _reason(status), b"\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n",
        b"" if keep_alive else b"Connection: close\r\n",
        b"\r\n", body,
    ])


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
