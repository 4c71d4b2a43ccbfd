"""The express lane: the common request and answer read with one regex each. Pure.

Most keep-alive traffic is the same shape: a ``GET`` whose head came in one read,
``Name: value`` lines, one ``Host``; an answer with a ``Content-Length`` whose head
and body came in one read. llhttp parses those through a Python callback per line
(and ``headers.py`` then walks the lines again): that was most of the proxy's own
cost a request. Here one compiled regex checks a whole head in C and finds the
lines the proxy must look at, in one call.

The lane takes only a strict subset of what llhttp accepts, and for it builds
exactly the head ``headers.build_request`` / ``build_response`` would: a line is
``token ": " value CRLF`` with printable ASCII values (llhttp hands those over as
written, so they are copied as written). Of the lines the proxy reads or rewrites
(``headers._REQ_SPECIAL`` and ``_RESP_SPECIAL``, and their ``_`` spellings, which
some backends fold into the same name), the lane takes exactly one ``Host`` in a
request, exactly one ``Content-Length`` in an answer, at most one
``Connection: keep-alive|close``, and Cookie lines as they are; any other sends
the message down the general path. ``None`` means "not here", never "refuse":
what the lane does not take goes to llhttp untouched.
``tests/unit/lb/test_lb_express.py`` holds the two paths to the same bytes.

Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Optional, Tuple

from .framing import _HOST_OK, valid_host
from .headers import _FWD_CACHE, _REQ_SPECIAL as _REQ_NAMES, _RESP_SPECIAL, _cached, _forward_lines

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\x21-\x7e][\x20-\x7e]*"


def _names(names: Iterable[bytes]) -> bytes:
    """A pattern for exactly ``names`` (lower case; a ``-`` in one also matches ``_``),
    factored by prefix: sre tries the alternatives of a group one by one, so a flat
    ``connection|keep-alive|...`` tested up to 16 names at the start of every header
    line; factored, each character is tested once (a 2-line request head: 0.57 -> 0.39 us)."""
    trie: Dict[int, Any] = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[-1] = {}                       # a name ends here

    def emit(node: Dict[int, Any]) -> bytes:
        alts = [(rb"[-_]" if ch == 45 else re.escape(bytes([ch]))) + emit(node[ch])
                for ch in sorted(k for k in node if k >= 0)]
        if not alts:
            return b""
        if -1 in node:                      # a name that is a prefix of another
            return b"(?:" + b"|".join(alts) + b")?"
        return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
    return emit(trie)


# The lines the proxy reads or rewrites (headers.py's), and their ``_`` spellings.
_HOP = _names(_RESP_SPECIAL)
_REQ_SPECIAL = _names(_REQ_NAMES)


def _plain(special: bytes) -> bytes:
    """A line whose name is none of ``special`` (in any case)."""
    return rb"(?!(?i:" + special + rb"):)" + _TOKEN + rb": " + _VALUE + rb"\r\n"


_CONNECTION = rb"(?i:connection): ((?i:keep-alive|close))\r\n"
# A request: the plain lines (Cookie among them, copied as they are), one Host, at most
# one Connection, in any order. Groups: method, target, Host line, its value,
# Connection line, its value (each pair twice: Host first or Connection first).
_Q = rb"(?:" + _plain(_REQ_SPECIAL) + rb"|(?i:cookie): " + _VALUE + rb"\r\n)*"
_H = rb"((?i:host): (" + _VALUE + rb")\r\n)"
_C = rb"(" + _CONNECTION + rb")"
_REQUEST = re.compile(rb"(GET|HEAD|DELETE|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.1\r\n" + _Q
                      + rb"(?:" + _H + _Q + rb"(?:" + _C + _Q + rb")?|" + _C + _Q + _H + _Q
                      + rb")\r\n")
_COOKIE = re.compile(rb"\n(?i:cookie):")
# An answer's head at the start of a read: one Content-Length, at most one Connection.
# Matched on the head lowered (case-blind without the regex's slower case-folding), so
# the status line is checked on the original too; the lines are copied from the original.
_P = rb"(?:" + _plain(_HOP).replace(b"(?i:", b"(?:") + rb")*"
_L = rb"(content-length: ([0-9]{1,18})\r\n)"
_LC = rb"(connection: (keep-alive|close)\r\n)"
_ANSWER = re.compile(rb"http/1\.1 ([2-5][0-9][0-9]) " + _VALUE + rb"\r\n" + _P
                     + rb"(?:" + _L + _P + rb"(?:" + _LC + _P + rb")?|" + _LC + _P + _L + _P
                     + rb")\r\n")

# The status codes the answer pattern takes, by their digits: a lookup, not an int() parse.
_STATUS = {b"%d" % n: n for n in range(200, 600)}

# (method, the head to send upstream, Host, target, keep-alive)
Request = Tuple[bytes, bytes, bytes, bytes, bool]
# (status, the answer's head up to its framing, Content-Length, keep-alive, body)
Answer = Tuple[int, bytes, int, bool, bytes]


def _without(data: bytes, start: int, end: int, a: Tuple[int, int],
             b: Tuple[int, int]) -> bytes:
    """``data[start:end]`` without the lines at spans ``a`` and ``b`` (b may be (-1, -1))."""
    if b[0] < 0:
        return data[start:a[0]] + data[a[1]:end]
    if b[0] < a[0]:
        a, b = b, a
    return b"".join((data[start:a[0]], data[a[1]:b[0]], data[b[1]:end]))


def request(data: bytes, max_uri: int, max_headers: int, client_ip: str,
            proto: str) -> Optional[Request]:
    """``data`` as an express request (one whole bodiless head), or None; its head
    upstream is what ``headers.build_request`` writes."""
    m = _REQUEST.fullmatch(data)
    if m is None:
        return None
    g = m.groups()
    regs = m.regs                       # spans, all at once (regs[n] is group n's)
    target = g[1]
    if len(target) > max_uri or data.count(b"\n") > max_headers + 2:
        return None                     # the general path refuses it (414, 431)
    if g[2] is not None:                # the Host line first (groups 3-6), or Connection (7-10)
        host, hs, c, cs = g[3], regs[3], g[5], regs[5]
    else:
        host, hs, c, cs = g[9], regs[9], g[7], regs[7]
    ok = _HOST_OK.get(host)
    if not (valid_host(host) if ok is None else ok):
        return None
    start = regs[2][1] + 11             # after the request line (origin form, as it goes up)
    end = len(data) - 2
    fwd = _FWD_CACHE.get((client_ip, proto, host))
    if fwd is None:
        fwd = _cached(_FWD_CACHE, (client_ip, proto, host), _forward_lines)
    if hs[0] == start and cs[0] < 0 and data.startswith(b"Host: ", start):
        head = b"".join((data[:end], fwd, b"\r\n"))   # Host first, as we write it
    else:
        head = b"".join((data[:start], b"Host: ", host, b"\r\n",
                         _without(data, start, end, hs, cs), fwd, b"\r\n"))
    return g[0], head, host, target, c is None or c.lower() == b"keep-alive"


def has_cookie(data: bytes) -> bool:
    return _COOKIE.search(data) is not None


def answer(data: bytes, max_head: int) -> Optional[Answer]:
    """``data`` as one whole express answer (its head and all of its body), or None."""
    if not data.startswith(b"HTTP/1.1 "):
        return None
    # Only the head is lowered: the body may be most of a 256 KiB read. A head's lines hold
    # no CR, so the match can only end at the first blank line.
    cut = data.find(b"\r\n\r\n", 0, max_head)
    if cut < 0:
        return None                     # not all here, or over the limit: the general path
    m = _ANSWER.match(data[:cut + 4].lower())
    if m is None:
        return None
    end = m.end()
    if end >= max_head:
        return None                     # the general path fails it (502)
    g = m.groups()
    regs = m.regs
    if g[1] is not None:                # the Content-Length line first (2-5), or Connection (6-9)
        length, ls, c, cs = g[2], regs[2], g[4], regs[4]
    else:
        length, ls, c, cs = g[8], regs[8], g[6], regs[6]
    length = int(length)
    if end + length != len(data):
        return None                     # the body is not all here, or more came after it
    status = _STATUS[g[0]]
    if status == 204 or status == 304:
        return None
    return (status, _without(data, 0, end - 2, ls, cs), length,
            c is None or c == b"keep-alive", data[end:])


def answer_head(ans: Answer, keep_alive: bool, set_cookie: Optional[bytes],
                extra: bytes) -> bytes:
    """What ``headers.build_response`` writes to an HTTP/1.1 client for ``ans``
    (a GET's, not a HEAD's), and the body after it."""
    head, length = ans[1], ans[2]
    if set_cookie is not None:
        head += b"Set-Cookie: " + set_cookie + b"\r\n"
    return b"".join((head, extra, b"Content-Length: %d\r\n" % length,
                     b"\r\n" if keep_alive else b"Connection: close\r\n\r\n", ans[4]))
