"""What the edge does with a request, from its host, path and whether it came over TLS. Pure.

The edge ports (80 and 443 by default) are shared by every service routed by
host name. For each request head, in this order:

1. ``GET /.well-known/acme-challenge/<token>`` over plain HTTP, for a token the
   control plane handed out: the key authorization (RFC 8555 §8.3), whatever
   the host (tokens are unguessable, and the CA may reach any node);
2. a host with TLS and ``redirect`` over plain HTTP: ``308`` to
   ``https://<host>[:port]<target>`` (308 keeps the method and body, as Caddy
   does), the host being one of ours, never an echo of the client's;
3. the service whose host and longest path prefix match (``hostnames.SiteTable``);
4. else the configured default service, else ``404`` saying which host had no
   service.

``EdgeTable`` holds the table, the tokens and the settings; ``decide`` is the
only function the listener calls per request. Most hosts are routed on ``/``
alone, so their decision does not depend on the path: it is kept per Host
value as sent (and TLS or not), which saves the decoding and matching of
each request (about 0.8 of 0.95 us). Only a site is kept, never a redirect
or a 404 (those name the target or host), none while challenge tokens are out
over plain HTTP, and at most ``_KEPT_MAX`` values (the Host is the client's).

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ..hostnames import SiteTable, request_host, request_path

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
_KEPT_MAX = 4096     # decisions kept by Host value; dropped wholesale past it

ANSWER = 0       # value: bytes, the key authorization (200 text/plain)
REDIRECT = 1     # value: bytes, the Location
SITE = 2         # value: the Entry to proxy to
UNKNOWN = 3      # value: str, why (404)


class Entry:
    """One service on the edge: its load balancer (a site) and how its hosts are served."""

    __slots__ = ("service", "site", "tls", "redirect", "hsts", "hsts_line")

    def __init__(self, service: str, site: Any, tls: str = "off", redirect: bool = True,
                 hsts: int = 0) -> None:
        self.service = service
        self.site = site
        self.tls = tls
        self.redirect = redirect
        self.hsts = hsts
        self.hsts_line = (b"Strict-Transport-Security: max-age=%d\r\n" % hsts) if hsts else b""


class EdgeTable:
    def __init__(self) -> None:
        self.table: SiteTable[Entry] = SiteTable()
        self.entries: Dict[str, Entry] = {}        # by service
        self.default: Optional[Entry] = None
        self.default_service = ""
        self.tokens: Dict[str, bytes] = {}
        self.https_port = 443
        # (Host value, TLS) -> the site, for hosts whose every path goes to one site
        self._kept: Dict[Tuple[bytes, bool], Entry] = {}

    def set_entries(self, routes: Mapping[str, Tuple[Tuple[str, ...], str, Entry]]) -> None:
        """``routes``: service -> (hosts, path, entry); replaces the whole table."""
        table: SiteTable[Entry] = SiteTable()
        for _, (hosts, path, entry) in sorted(routes.items()):
            for host in hosts:
                table.add(host, path, entry)
        self.table = table
        self.entries = {name: entry for name, (_, _, entry) in routes.items()}
        self.default = self.entries.get(self.default_service)
        self._kept = {}

    def set_default(self, service: str) -> None:
        self.default_service = service
        self.default = self.entries.get(service)
        self._kept = {}

    def set_tokens(self, tokens: Mapping[str, str]) -> None:
        self.tokens = {t: v.encode() for t, v in tokens.items()}

    def decide(self, host_value: bytes, target: bytes, tls: bool) -> Tuple[int, Any]:
        """``host_value``: the Host (an absolute target's authority); ``target``: in origin
        form (``/path?query``), or ``*``."""
        if tls or not self.tokens:
            kept = self._kept.get((host_value, tls))
            if kept is not None:
                return SITE, kept
        path = request_path(target)
        if not tls and self.tokens and path.startswith(CHALLENGE_PREFIX):
            answer = self.tokens.get(path[len(CHALLENGE_PREFIX):])
            if answer is not None:
                return ANSWER, answer
        host = request_host(host_value)
        entry = self.table.lookup(host, path)
        if entry is None:
            if self.default is None:
                shown = host or "(none)"
                return UNKNOWN, f"no service is routed for host {shown} (path {path})"
            entry = self.default
        elif not tls and entry.tls != "off" and entry.redirect:
            port = b"" if self.https_port == 443 else b":%d" % self.https_port
            origin = target if target[:1] == b"/" else b"/"
            return REDIRECT, b"https://" + host.encode("latin-1") + port + origin
        if self.table.path_free(host):
            if len(self._kept) >= _KEPT_MAX:
                self._kept = {}
            self._kept[(host_value, tls)] = entry
        return SITE, entry
