"""What the proxy decides about a message before any of it moves on. Pure.

RFC 9112's rules, applied once per message to what llhttp parsed, so that the
framing written upstream (or to the client) is exactly the framing decided
here, and nothing ambiguous is ever passed on:

- ``transfer_chunked(values)``: every ``Transfer-Encoding`` list element is
  parsed as an exact token (no substring test). Only ``chunked`` is
  implemented: any other coding is refused with 501, as nginx does
  (``gzip, chunked``, ``identity``, ``xchunked``); ``chunked`` twice, or not
  last, is 400. The caller refuses Transfer-Encoding together with
  Content-Length, and in HTTP/1.0 (§6.1: the length cannot be known).
- ``content_length(values)``: one value, digits only.
- ``valid_host(value)``: RFC 9110 ``uri-host [":" port]``; an absolute-form
  target (``http://a.example/x``) is split by ``split_absolute`` and its
  authority becomes the Host.
- ``next_cut(data, tail, room)``: how many bytes to feed the parser next, so a
  head is cut at its end (``CRLF CRLF``) and never fed past its limit: the
  limits are enforced as bytes arrive, not once the head is complete.

``Refusal`` carries the status and detail of the proxy's own error answer.
Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from ..exceptions import Refusal  # noqa: F401  (in the error tree; raised here, caught by headers)


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# uri-host [ ":" port ]: reg-name (unreserved, pct-encoded, sub-delims) or an IP literal
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?\Z")
_ABSOLUTE = re.compile(rb"(https?)://([^/?#]*)(.*)\Z", re.IGNORECASE)
_OWS = b" \t"
_HOST_OK: Dict[bytes, bool] = {}     # a few hosts in practice; dropped wholesale when large


def transfer_chunked(values: List[bytes]) -> None:
    """Check the Transfer-Encoding values of a request; return only if they say
    exactly ``chunked`` (raise ``Refusal`` otherwise)."""
    codings: List[bytes] = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(_OWS)
            if element:                 # the list rule allows empty elements
                codings.append(element)
    if not codings:
        raise Refusal(400, "empty Transfer-Encoding")
    for coding in codings:
        if not _TOKEN.match(coding):
            if b";" in coding and _TOKEN.match(coding.split(b";", 1)[0].strip(_OWS)):
                raise Refusal(501, "transfer coding parameters are not implemented")
            raise Refusal(400, "invalid Transfer-Encoding")
        if coding.lower() != b"chunked":
            raise Refusal(501, f"transfer coding {coding.decode('latin-1')!r} is not implemented")
    if len(codings) > 1:
        raise Refusal(400, "chunked applied more than once")


def content_length(values: List[bytes]) -> int:
    """The one Content-Length of a message (raise ``Refusal`` otherwise)."""
    if len(values) != 1:
        raise Refusal(400, "more than one Content-Length")
    value = values[0].strip(_OWS)
    if not value.isdigit() or len(value) > 18:
        raise Refusal(400, "invalid Content-Length")
    return int(value)


def valid_host(value: bytes) -> bool:
    ok = _HOST_OK.get(value)
    if ok is None:
        if len(_HOST_OK) > 4096:
            _HOST_OK.clear()
        ok = _HOST_OK[value] = bool(_HOST.match(value))
    return ok


def split_absolute(url: bytes) -> Optional[Tuple[bytes, bytes]]:
    """``http://a.example:8080/x?y`` → (b"a.example:8080", b"/x?y"); None if the
    target is not in absolute form. Raises ``Refusal`` for a bad authority."""
    m = _ABSOLUTE.match(url)
    if m is None:
        return None
    authority, rest = m.group(2), m.group(3)
    if b"@" in authority:
        raise Refusal(400, "userinfo in the request target")
    if not authority or not valid_host(authority):
        raise Refusal(400, "invalid authority in the request target")
    if rest[:1] == b"#":
        rest = b""
    if not rest.startswith(b"/"):
        rest = b"/" + rest              # "http://a?x" → "/?x"
    return authority, rest


def next_cut(data: bytes, tail: bytes, room: int) -> int:
    """How many bytes of ``data`` to feed next: up to and including the first
    ``CRLF CRLF`` (which may have begun in ``tail``, the last bytes fed), and at
    most ``room`` (always at least 1)."""
    end = room if room < len(data) else len(data)
    if tail:
        j = (tail + data[:3]).find(b"\r\n\r\n")
        if j >= 0:
            n = j + 4 - len(tail)
            if 0 < n <= end:
                return n
    i = data.find(b"\r\n\r\n", 0, end)
    if i >= 0:
        return i + 4
    return max(1, end)
