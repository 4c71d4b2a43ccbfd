"""The edge keys of ``x-swarmlet``: routing by host name and path, and TLS.

::

    x-swarmlet:
      hosts: [shop.example.com, www.shop.example.com]   # or one name as a string
      path: /api                 # longest prefix wins; default /
      port: 8080                 # the container port routed to; default the first TCP port
      tls: acme                  # acme | off (default) | {cert: ./shop.crt, key: ./shop.key}
      hsts: true                 # or a max-age: 1y, 86400 (true: one year)
      https_redirect: false      # default true for TLS hosts (308 to https://)

A ``tls: {cert, key}`` pair is read from files beside the stack (relative to
it), judged at once (``webcerts.check_pair``: a key that is not the
certificate's, or a certificate that does not cover every host, is an error
at its ``file:line:col``, nothing applied), and kept on the ``Stack``
(``certificates``) to be sent with the stack; the spec names it (``edge.cert``
= the service's name) and never holds the PEM itself. A ``port`` the service
does not list is added as an unpublished container port.

Pure but for reading the two files through ``ctx.read_text``.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..shipped.exceptions import UsageError
from ..shipped.models import EdgeSpec, PortSpec
from ..webcerts import check_pair
from .loader import Node
from .values import (Context, as_bool, as_int, as_map, as_str, check_keys, fail, fail_at,
                     parse_duration)

EDGE_KEYS = ("hosts", "path", "port", "tls", "hsts", "https_redirect")
YEAR = 365 * 86400


@dataclass(frozen=True)
class CertFiles:
    """A user's certificate and key for ``tls: {cert, key}``, as read from the files."""

    name: str
    cert: str
    key: str = field(repr=False)
    where: str = ""              # file:line:col of the tls entry


def parse_edge(service: str, node: Node, ports: Tuple[PortSpec, ...], ctx: Context,
               certificates: List[CertFiles]) -> Dict[str, object]:
    """ServiceSpec fields (``edge``, maybe ``ports``) from the edge keys of ``x-swarmlet``."""
    keys = {k: v for k, v in as_map(node).items() if k in EDGE_KEYS}
    if not keys:
        return {}
    fields: Dict[str, object] = {}
    edge: Dict[str, object] = {}
    if "hosts" in keys:
        edge["hosts"] = _hosts(keys["hosts"])
    if "path" in keys:
        edge["path"] = as_str(keys["path"], "a path prefix like /api")
    if "port" in keys:
        port = as_int(keys["port"], 1, 65535)
        edge["port"] = port
        if not any(p.target == port and p.protocol == "tcp" for p in ports):
            fields["ports"] = ports + (PortSpec(target=port),)
    if "tls" in keys:
        edge.update(_tls(service, keys["tls"], tuple(edge.get("hosts", ())), ctx, certificates))
    if "hsts" in keys:
        edge["hsts"] = _hsts(keys["hsts"])
    if "https_redirect" in keys:
        edge["redirect"] = as_bool(keys["https_redirect"])
    fields["edge"] = EdgeSpec(**edge)  # type: ignore[arg-type]
    return fields


def _hosts(node: Node) -> Tuple[str, ...]:
    if isinstance(node.value, str):
        items = [node]
    elif node.is_seq and node.value:
        items = node.value
    else:
        fail(node, "a host name or a list of host names")
    return tuple(as_str(item, "a host name like shop.example.com").strip().lower().rstrip(".")
                 for item in items)


def _tls(service: str, node: Node, hosts: Tuple[str, ...], ctx: Context,
         certificates: List[CertFiles]) -> Dict[str, object]:
    if isinstance(node.value, str) or isinstance(node.value, bool):
        if node.value is False or node.value == "off":
            return {"tls": "off"}
        if node.value == "acme":
            return {"tls": "acme"}
        fail(node, "acme, off, or a mapping with 'cert' and 'key' files")
    keys = check_keys(node, ("cert", "key"), ctx)
    for name in ("cert", "key"):
        if name not in keys:
            fail(node, f"a tls mapping with 'cert' and 'key' files ('{name}' is missing)")
    pem = {name: _read(keys[name], ctx) for name in ("cert", "key")}
    try:
        check_pair(pem["cert"].encode(), pem["key"].encode(), hosts,
                   what=f"service {service!r}", now=time.time())
    except UsageError as exc:
        fail_at(node.mark, str(exc))
    certificates.append(CertFiles(service, pem["cert"], pem["key"], str(node.mark)))
    return {"tls": "manual", "cert": service}


def _read(node: Node, ctx: Context) -> str:
    rel = as_str(node, "a file path")
    path = posixpath.normpath(posixpath.join(ctx.base_dir, rel))
    try:
        return ctx.read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        fail_at(node.mark, f"expected a readable PEM file at {path} "
                           f"({getattr(exc, 'strerror', None) or exc})")


def _hsts(node: Node) -> int:
    if isinstance(node.value, bool):
        return YEAR if node.value else 0
    if isinstance(node.value, int):
        if node.value < 0:
            fail(node, "true, false or a max-age of 0 or more seconds")
        return node.value
    seconds = parse_duration(str(node.value)) if isinstance(node.value, str) else None
    if seconds is None and isinstance(node.value, str) and node.value.endswith("y") \
            and node.value[:-1].isdigit():
        seconds = int(node.value[:-1]) * YEAR
    if seconds is None or seconds < 0:
        fail(node, "true, false or a max-age like 1y or 31536000")
    return int(seconds)
