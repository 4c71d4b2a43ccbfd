"""Host names and path prefixes on the edge: their rules, and the table that routes by them. Pure.

One set of rules for everyone who reads a host or a path: the validator
(``validate.py``: what a service may declare), the load balancer (``lb/edge.py``:
which service answers a request) and the certificate store (which certificate
a TLS client's SNI name gets).

- A host is a DNS name in lower case: labels of ``a-z 0-9 -`` (1 to 63 bytes,
  not starting or ending with ``-``), at most 253 bytes in all. ``*.example.com``
  (one leading wildcard label) matches exactly one label more, as in
  certificates (RFC 6125 §6.4.3); it is allowed where no ACME order is made for
  it (http-01 cannot prove a wildcard).
- A request's Host is read as a client sends it (``Shop.Example.COM.:443``):
  lower-cased, port and a trailing dot removed.
- A path prefix starts with ``/``, has no query, fragment, ``.``/``..``
  segment, empty segment or control byte, and no trailing ``/`` but ``/``
  itself. It matches a request path on segment boundaries: ``/api`` takes
  ``/api``, ``/api/``, ``/api/v1`` and ``/api?q=1``, never ``/apix``. The
  longest matching prefix wins (as kamal-proxy and Traefik do); the path goes
  to the backend unchanged.
- ``SiteTable``: exact host first, then the wildcard one label up; within a
  host the longest prefix.

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import re
from typing import Dict, Generic, Iterable, List, Optional, Tuple, TypeVar

V = TypeVar("V")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]+")
MAX_HOSTS = 100          # per service: a certificate order of more is refused by CAs anyway


def host_problem(name: str, wildcard: bool = True) -> Optional[str]:
    """Why ``name`` is not a host name a service can claim, or None."""
    if not isinstance(name, str) or not name:
        return "expected a host name like shop.example.com, got none"
    if len(name) > 253:
        return f"expected a host name of at most 253 characters, got {len(name)}"
    labels = name.split(".")
    if labels[0] == "*":
        if not wildcard:
            return (f"a wildcard host ({name!r}) cannot get an ACME certificate over http-01; "
                    "use tls: {cert, key} or list the names")
        if len(labels) < 3:
            return f"expected a wildcard below a domain like *.example.com, got {name!r}"
        labels = labels[1:]
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (f"expected a lower-case DNS name (letters, digits, '-', dots between "
                    f"labels), got {name!r}")
    if labels[-1].isdigit():
        return f"expected a host name, not an IP address, got {name!r}"
    return None


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a path prefix, or None."""
    if not isinstance(path, str) or not path.startswith("/"):
        return f"expected a path starting with /, got {path!r}"
    if path == "/":
        return None
    if len(path) > 1024:
        return "expected a path of at most 1024 characters"
    if path.endswith("/"):
        return f"expected a path without a trailing / (it matches on segments), got {path!r}"
    for seg in path[1:].split("/"):
        if seg in ("", ".", "..") or not _SEGMENT.fullmatch(seg):
            return f"expected a path of plain segments (no //, ., .., ?, # or spaces), got {path!r}"
    return None


def request_host(raw: bytes) -> str:
    """The host a request names (its Host header or absolute target's authority)."""
    text = raw.decode("latin-1").strip().lower()
    if text.startswith("["):                       # [v6]:port
        end = text.find("]")
        return text[:end + 1] if end > 0 else text
    host, _, _ = text.partition(":")
    return host[:-1] if host.endswith(".") else host


def request_path(target: bytes) -> str:
    """The path of a request target (origin form; an absolute form's path), no query."""
    if target[:1] != b"/":
        scheme = target.find(b"://")
        if scheme < 0:
            return "/"
        slash = target.find(b"/", scheme + 3)
        target = target[slash:] if slash >= 0 else b"/"
    end = len(target)
    for sep in (b"?", b"#"):
        i = target.find(sep)
        if 0 <= i < end:
            end = i
    return target[:end].decode("latin-1") or "/"


def prefix_matches(prefix: str, path: str) -> bool:
    """``prefix`` takes ``path`` on a segment boundary (see the module docstring)."""
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def wildcard_of(host: str) -> Optional[str]:
    """``*.example.com`` for ``shop.example.com``; None for a single label."""
    dot = host.find(".")
    return "*" + host[dot:] if dot > 0 else None


class SiteTable(Generic[V]):
    """(host, path prefix) -> value; ``lookup`` by a request's host and path."""

    def __init__(self, entries: Iterable[Tuple[str, str, V]] = ()) -> None:
        self._hosts: Dict[str, List[Tuple[str, V]]] = {}
        for host, path, value in entries:
            self.add(host, path, value)

    def add(self, host: str, path: str, value: V) -> None:
        rows = self._hosts.setdefault(host, [])
        rows[:] = [r for r in rows if r[0] != path] + [(path, value)]
        rows.sort(key=lambda r: -len(r[0]))        # longest prefix first

    def __len__(self) -> int:
        return sum(len(r) for r in self._hosts.values())

    def hosts(self) -> List[str]:
        return sorted(self._hosts)

    def path_free(self, host: str) -> bool:
        """Whether ``lookup(host, path)`` is the same for every path: the rows that
        answer for ``host`` (its own, else its wildcard's) are ``/`` alone, or none."""
        rows = self._hosts.get(host)
        if not rows:
            wild = wildcard_of(host)
            rows = self._hosts.get(wild) if wild is not None else None
        return not rows or (len(rows) == 1 and rows[0][0] == "/")

    def lookup(self, host: str, path: str) -> Optional[V]:
        for name in (host, wildcard_of(host)):
            rows = self._hosts.get(name) if name is not None else None
            if rows:
                for prefix, value in rows:
                    if prefix_matches(prefix, path):
                        return value
        return None
